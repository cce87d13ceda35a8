/**
 * src/analysis/head-types.ts, probe.ts and word-classes.ts: type scores on hand-computable traces,
 * planted previous-token and induction heads found (and nothing but `broad` on uniform attention),
 * duplicate/induction from token matches against a direct count, the probe's sequences, wink-nlp
 * classes aligned to sub-word tokens by character offsets, and a real probe run on the embedded
 * stories260k.
 */
import { describe, expect, it } from 'vitest';
import { HEAD_COLUMNS, HEAD_TABLE_HEADER, HEAD_TYPE_NAMES, WORD_CONTENT, WORD_ENTITY, WORD_FUNCTION, averageHeadTables, headTable, headTableCsv, headsOfType, topType } from '../src/analysis/head-types.js';
import { mulberry32 } from '../src/core/random.js';
import { probeSequences, probeVocabularyOf, runProbe, type ProbeTracer } from '../src/analysis/probe.js';
import { tagWords, tokenWordClasses } from '../src/analysis/word-classes.js';
import type { Token, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { handTrace } from './helpers/hand-trace.js';

/** A causal trace over ids [BOS, r, r] (r of length L) whose heads follow `weight`. */
function repeatedTrace(L: number, weight: (l: number, h: number, q: number, k: number) => number, heads = 3): Trace {
  const r = Array.from({ length: L }, (_, i) => 10 + ((i * 7) % 50));
  const ids = [1, ...r, ...r];
  const trace = handTrace(ids.map((id) => `t${id}`), { layers: 1, heads, weight, special: [0] });
  trace.tokens.forEach((t, i) => (t.id = ids[i]!));
  trace.scores = { self: { scale: [1], causal: true, window: [null] } };
  return trace;
}

describe('head types', () => {
  it('hand-computable scores: previous, next, local on a bidirectional head', () => {
    // Row i ∝ (1 on every key, 3 more on i − 1): 5 tokens, bidirectional.
    const trace = handTrace(['a', 'b', 'c', 'd', 'e'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => 1 + (k === q - 1 ? 3 : 0) });
    const row = headTable(trace)[0]!;
    // Row 0: uniform 1/5 (no previous); rows 1–4: 4/8 on i − 1, 1/8 elsewhere.
    expect(row.previous_token).toBeCloseTo((0 + 4 * (4 / 8)) / 5, 6);
    expect(row.next_token).toBeCloseTo((1 / 5 + 3 * (1 / 8)) / 5, 6);
    // |i − j| ≤ 2: row 0 keys 0–2 (3/5); row 1 keys 0–3 (4/8 + 3/8); row 2 all (1); row 3 keys 1–4 (1 − 1/8); row 4 keys 2–4 (4/8 + 2/8).
    expect(row.local).toBeCloseTo((3 / 5 + 7 / 8 + 1 + 7 / 8 + 6 / 8) / 5, 6);
    expect(row.duplicate_token).toBeNaN(); // no token repeats
  });

  it('finds a planted previous-token head and a planted induction head; uniform attention is only broad', () => {
    const L = 20;
    const planted = repeatedTrace(L, (_l, h, q, k) => {
      if (k > q) return 0;
      if (h === 0) return k === q - 1 ? 50 : 1; // previous-token
      if (h === 1) return q > L && k === q - L + 1 ? 50 : 1; // induction on the second copy
      return 1; // uniform
    });
    const table = headTable(planted, 'self', { repeat: { prefix: 1, length: L } });
    expect(table.map((r) => r.top_type)).toEqual(['previous_token', 'induction', 'broad']);
    expect(headsOfType(table, 'previous_token').map((h) => h.head)).toEqual([0]);
    expect(headsOfType(table, 'induction').map((h) => h.head)).toEqual([1]);
    // Direct computation for the induction head: row i ≥ L + 1 has 50 on i − L + 1, 1 on the other i keys.
    const expected = Array.from({ length: L }, (_, t) => 50 / (50 + (L + 1 + t))).reduce((a, b) => a + b) / L;
    expect(table[1]!.induction).toBeCloseTo(expected, 6);
    // Uniform head: no previous-token, duplicate, induction, self or sink type.
    for (const t of ['previous_token', 'induction', 'duplicate_token', 'self', 'sink', 'local'] as const) {
      expect(headsOfType(table, t).map((h) => h.head)).not.toContain(2);
    }
    // (Entropy on the kernel: float32 logarithms of the float32 weights, within 1e-6 relative.)
    expect(table[2]!.entropy).toBeCloseTo(1, 6);
    // The same trace measured by token matches (no probe positions): the same targets for the second copy.
    const generic = headTable(planted);
    expect(generic[1]!.induction).toBeGreaterThan(0.4);
    expect(generic[2]!.induction).toBeLessThan(0.1);
  });

  it('duplicate and induction from token ids: earlier occurrences and the tokens after them', () => {
    // ids: a b a c b a ; causal weights ∝ k + 1.
    const texts = ['a', 'b', 'a', 'c', 'b', 'a'];
    const trace = handTrace(texts, { layers: 1, heads: 1 });
    const ids = [5, 6, 5, 7, 6, 5];
    trace.tokens.forEach((t, i) => (t.id = ids[i]!));
    const row = headTable(trace)[0]!;
    // Direct count: rows with an earlier occurrence: 2 (a at 0), 4 (b at 1), 5 (a at 0, 2).
    const w = (q: number, k: number) => (k + 1) / (((q + 1) * (q + 2)) / 2);
    const dup = (w(2, 0) + w(4, 1) + (w(5, 0) + w(5, 2))) / 3;
    const ind = (w(2, 1) + w(4, 2) + (w(5, 1) + w(5, 3))) / 3;
    expect(row.duplicate_token).toBeCloseTo(dup, 6);
    expect(row.induction).toBeCloseTo(ind, 6);
  });

  it('syntax, semantic and entity focus against a float64 re-computation (bidirectional, causal, rows with holes; both exclude settings; kernel and JavaScript)', () => {
    const n = 37;
    const r = mulberry32(5);
    const classes = Uint8Array.from({ length: n }, () => (r() < 0.15 ? 0 : [WORD_FUNCTION, WORD_CONTENT, WORD_CONTENT | WORD_ENTITY, WORD_ENTITY][Math.floor(r() * 4)]!));
    const noise = Float64Array.from({ length: 2 * 3 * n * n }, () => 0.05 + r());
    const cases: [string, (q: number, k: number) => boolean][] = [
      ['bidirectional', () => true],
      ['causal', (q, k) => k <= q],
      ['holes', (q, k) => k <= q + 3 && (q + 2 * k) % 5 !== 1],
    ];
    for (const [name, sees] of cases) {
      const trace = handTrace(Array.from({ length: n }, (_, i) => `w${i}`), { layers: 2, heads: 3, weight: (l, h, q, k) => (sees(q, k) ? noise[((l * 3 + h) * n + q) * n + k]! : 0) });
      for (const [exclude, kernel] of [[false, 'wasm'], [true, 'wasm'], [false, 'js'], [true, 'js']] as const) {
        const table = headTable(trace, 'self', { wordClasses: classes, excludeFirstToken: exclude, kernel });
        for (const row of table) {
          // Straight from the definitions: each counted row renormalised over the keys it sees, its share on each class.
          const W = trace.attention.self!.layers[row.layer]!;
          const sums = [0, 0, 0];
          let rows = 0;
          for (let q = exclude ? 1 : 0; q < n; q++) {
            const keys = Array.from({ length: n }, (_, k) => k).filter((k) => sees(q, k) && !(exclude && k === 0));
            if (keys.length < 2) continue;
            const at = (k: number) => W[(row.head * n + q) * n + k]!;
            const total = keys.reduce((a, k) => a + at(k), 0);
            [WORD_FUNCTION, WORD_CONTENT, WORD_ENTITY].forEach((bit, c) => (sums[c] += keys.filter((k) => classes[k]! & bit).reduce((a, k) => a + at(k), 0) / total));
            rows++;
          }
          const where = `${name}, exclude ${exclude}, ${kernel}, layer ${row.layer} head ${row.head}`;
          expect(row.syntax_focus, where).toBeCloseTo(sums[0]! / rows, 12);
          expect(row.semantic_focus, where).toBeCloseTo(sums[1]! / rows, 12);
          expect(row.entity_focus, where).toBeCloseTo(sums[2]! / rows, 12);
        }
      }
    }
    // Without classes: not measured.
    expect(headTable(handTrace(['a', 'b', 'c']))[0]!.syntax_focus).toBeNaN();
  });

  it('top type: the score furthest above its threshold, none below every threshold', () => {
    const base = Object.fromEntries(HEAD_COLUMNS.map((c) => [c, 0])) as Record<(typeof HEAD_COLUMNS)[number], number>;
    expect(topType(base).type).toBeNull();
    expect(topType({ ...base, previous_token: 0.5, local: 0.72, entropy: 0.2 }).type).toBe('previous_token'); // 1.25 vs 1.03
    expect(topType({ ...base, sink: 0.9, induction: 0.5 }).type).toBe('sink'); // 1.8 vs 1.25
    expect(HEAD_TYPE_NAMES).toContain('duplicate_token');
  });

  it('averages tables over samples and writes CSV with the documented header', () => {
    const t1 = headTable(handTrace(['a', 'b', 'c'], { layers: 1, heads: 2 }));
    const t2 = headTable(handTrace(['a', 'b', 'c'], { layers: 1, heads: 2, weight: () => 1 }));
    const avg = averageHeadTables([t1, t2]);
    expect(avg[1]!.entropy).toBeCloseTo((t1[1]!.entropy + t2[1]!.entropy) / 2, 12);
    const csv = headTableCsv(avg).trim().split('\n');
    expect(csv[0]).toBe(HEAD_TABLE_HEADER.join(','));
    expect(csv).toHaveLength(3);
    expect(csv[1]!.split(',')).toHaveLength(HEAD_TABLE_HEADER.length);
  });
});

describe('probe', () => {
  it('mulberry32 is seeded and uniform enough; sequences are BOS + r + r without specials', () => {
    const a = mulberry32(42);
    const b = mulberry32(42);
    const xs = Array.from({ length: 2000 }, () => a());
    expect(xs.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((s, x) => s + x, 0) / xs.length - 0.5)).toBeLessThan(0.03);
    const seqs = probeSequences({ prefix: [1], size: 20, exclude: new Set([0, 2]) }, { samples: 3, seqLen: 15, seed: 7 });
    expect(seqs).toHaveLength(3);
    for (const s of seqs) {
      expect(s).toHaveLength(31);
      expect(s[0]).toBe(1);
      expect(s.slice(1, 16)).toEqual(s.slice(16));
      for (const id of s.slice(1)) expect([0, 1, 2]).not.toContain(id);
    }
    expect(probeSequences({ prefix: [1], size: 20, exclude: new Set() }, { samples: 3, seqLen: 15, seed: 7 })).toEqual(probeSequences({ prefix: [1], size: 20, exclude: new Set() }, { samples: 3, seqLen: 15, seed: 7 }));
  });

  it('runs through a tracer and averages: a tracer whose head 0 is an induction head', async () => {
    const L = 8;
    const tracer: ProbeTracer = {
      async trace(_text, { ids }) {
        const n = ids.length;
        const trace = handTrace(ids.map(String), { layers: 1, heads: 2, weight: (_l, h, q, k) => (k > q ? 0 : h === 0 && q > L && k === q - L + 1 ? 1000 : 1) });
        trace.tokens.forEach((t, i) => (t.id = ids[i]!));
        expect(n).toBe(1 + 2 * L);
        return trace;
      },
    };
    const result = await runProbe(tracer, { prefix: [1], size: 100, exclude: new Set([0, 1, 2]) }, { samples: 3, seqLen: L, seed: 3 });
    expect(result.sequences).toHaveLength(3);
    expect(result.table[0]!.induction).toBeGreaterThan(0.9);
    expect(result.table[1]!.induction).toBeLessThan(0.2);
    expect(result.table[0]!.top_type).toBe('induction');
  });
});

describe('word classes (wink-nlp)', () => {
  it('tags function words, content words and entities', () => {
    const words = tagWords('The cat saw Paris on Monday.');
    const by = Object.fromEntries(words.map((w) => [w.text, w.classes]));
    expect(by.The).toBe(WORD_FUNCTION);
    expect(by.cat).toBe(WORD_CONTENT);
    expect(by.on).toBe(WORD_FUNCTION);
    expect(by.Paris! & WORD_ENTITY).toBe(WORD_ENTITY);
    expect(by.Monday! & WORD_ENTITY).toBe(WORD_ENTITY);
    expect(by['.']).toBe(0);
  });

  it('aligns sub-word tokens by character offsets, per segment; specials get no class', () => {
    const text = 'The unbelievable Sarah visited Paris.';
    const pair = 'She left.';
    const tok = (t: string, start: number, end: number, segment = 0, special = false): Token => ({ id: 0, text: t, start, end, special, segment, word: null });
    const tokens = [
      tok('[CLS]', 0, 0, 0, true),
      tok('the', 0, 3),
      tok('un', 4, 6),
      tok('##bel', 6, 9),
      tok('##ievable', 9, 16),
      tok('sarah', 17, 22),
      tok('visited', 23, 30),
      tok('paris', 31, 36),
      tok('.', 36, 37),
      tok('[SEP]', 0, 0, 0, true),
      tok('she', 0, 3, 1),
      tok('left', 4, 8, 1),
      tok('.', 8, 9, 1),
      tok('[SEP]', 0, 0, 1, true),
    ];
    const c = Array.from(tokenWordClasses(tokens, [text, pair]));
    expect(c[0]).toBe(0);
    expect(c[1]).toBe(WORD_FUNCTION);
    expect(c.slice(2, 5)).toEqual([WORD_CONTENT, WORD_CONTENT, WORD_CONTENT]); // every piece of "unbelievable"
    expect(c[5]! & WORD_ENTITY).toBe(WORD_ENTITY);
    expect(c[6]).toBe(WORD_CONTENT);
    expect(c[7]! & WORD_ENTITY).toBe(WORD_ENTITY);
    expect(c[8]).toBe(0);
    expect(c[10]).toBe(WORD_FUNCTION); // "She", in the pair's own offsets
    expect(c[11]).toBe(WORD_CONTENT);
    expect(c[13]).toBe(0);
  });
});

describe('stories260k (the embedded model, a real run)', () => {
  it('the probe finds its previous-token heads and no induction or duplicate-token head', async () => {
    const model = await loadModel();
    try {
      const vocab = probeVocabularyOf(model);
      expect(vocab.prefix).toEqual([1]);
      expect([...vocab.exclude].sort()).toEqual([0, 1, 2]);
      const { table } = await runProbe(model, vocab, { samples: 2, seqLen: 50, seed: 0 });
      expect(table).toHaveLength(5 * 8);
      // Layer 1 has strong previous-token heads (0.6–0.8 on this probe); layer 0 has none.
      expect(headsOfType(table, 'previous_token').filter((h) => h.layer === 1).length).toBeGreaterThanOrEqual(3);
      expect(Math.max(...table.filter((r) => r.layer === 1).map((r) => r.previous_token))).toBeGreaterThan(0.7);
      expect(Math.max(...table.filter((r) => r.layer === 0).map((r) => r.previous_token))).toBeLessThan(0.2);
      // No head comes near the induction or duplicate thresholds: ≈ chance (1/position ≈ 0.013 at L = 50).
      expect(Math.max(...table.map((r) => r.induction))).toBeLessThan(0.1);
      expect(Math.max(...table.map((r) => r.duplicate_token))).toBeLessThan(0.1);
      expect(headsOfType(table, 'induction')).toEqual([]);
      // Word classes on its SentencePiece tokens (▁ pieces, offsets into the text).
      const text = 'Once upon a time, Lily saw a big dog.';
      const trace = await model.trace(text);
      const classes = tokenWordClasses(trace.tokens, [text]);
      const byText = trace.tokens.map((t, i) => [t.text, classes[i]] as const);
      expect(byText.find(([t]) => t === '▁a')?.[1]).toBe(WORD_FUNCTION);
      // "dog" is two pieces here (▁do, g): both take the noun's class.
      expect(byText.filter(([t]) => t === '▁do' || t === 'g').map(([, c]) => c)).toEqual([WORD_CONTENT, WORD_CONTENT]);
      expect(byText.find(([t]) => t === '▁Lily')![1]! & WORD_ENTITY).toBe(WORD_ENTITY);
      expect(byText.find(([t]) => t === ',')?.[1]).toBe(0);
      const rows = headTable(trace, 'self', { wordClasses: classes });
      for (const r of rows) expect(r.syntax_focus + r.semantic_focus).toBeLessThanOrEqual(1 + 1e-6);
    } finally {
      await model.dispose();
    }
  }, 120_000);
});
