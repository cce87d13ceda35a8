/**
 * Mixture-of-experts routing (Trace.routing) of the mixtral and qwen2_moe fixtures, checked against
 * a float64 re-computation written here from transformers' MixtralSparseMoeBlock /
 * Qwen2MoeSparseMoeBlock: router logits = gate.weight · h, p = softmax(logits), the top-k of p,
 * divided by their sum when the config says so (Mixtral always, Qwen2-MoE with norm_topk_prob).
 * The gate weights are read from the checkpoint's model.safetensors by this file's own parser; `h`
 * is the graph's router-input tap (the post-attention RMSNorm output, which the fixture tests
 * validate indirectly: the hidden states and logits after it match PyTorch). Also: both trace file
 * formats keep the routing exactly, and a dense model refuses the option in one line.
 */
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { expertLoad, type Routing, type Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { tapName } from '../src/models/architecture.js';
import { runCli } from './helpers/cli.js';
import { FIXTURES, readReference } from './helpers/reference.js';

/** The F32 tensors of a safetensors file whose names pass `want` (8-byte header length, JSON header, data). */
function readF32Tensors(path: string, want: (name: string) => boolean): Map<string, { shape: number[]; data: Float64Array }> {
  const bytes = readFileSync(path);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; data: Float64Array }>();
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__' || !want(name)) continue;
    expect(info.dtype, name).toBe('F32');
    const [begin, end] = info.data_offsets;
    const data = new Float64Array((end - begin) / 4);
    for (let i = 0; i < data.length; i++) data[i] = bytes.readFloatLE(8 + headerLength + begin + 4 * i);
    out.set(name, { shape: info.shape, data });
  }
  return out;
}

interface Expected {
  probabilities: Float64Array;
  selected: number[];
  weights: number[];
  /** Smallest gap between the k-th and (k+1)-th probability of any token (how far from a tie the choice is). */
  margin: number;
}

/** Router of one layer in float64: softmax(h · Wᵀ), its top k (by decreasing probability), renormalised or not. */
function route(h: Float32Array, tokens: number, hidden: number, gate: Float64Array, experts: number, k: number, normalize: boolean): Expected {
  const probabilities = new Float64Array(tokens * experts);
  const selected: number[] = [];
  const weights: number[] = [];
  let margin = Infinity;
  for (let t = 0; t < tokens; t++) {
    const logits: number[] = [];
    for (let e = 0; e < experts; e++) {
      let s = 0;
      for (let d = 0; d < hidden; d++) s += h[t * hidden + d]! * gate[e * hidden + d]!;
      logits.push(s);
    }
    const max = Math.max(...logits);
    const exps = logits.map((z) => Math.exp(z - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    const p = exps.map((x) => x / sum);
    p.forEach((x, e) => (probabilities[t * experts + e] = x));
    const order = p.map((_, e) => e).sort((a, b) => p[b]! - p[a]!);
    const top = order.slice(0, k);
    // Gaps that decide the choice and its order: between consecutive chosen experts and to the first one left out.
    for (let i = 0; i + 1 < Math.min(k + 1, experts); i++) margin = Math.min(margin, p[order[i]!]! - p[order[i + 1]!]!);
    const kept = top.reduce((a, e) => a + p[e]!, 0);
    selected.push(...top);
    weights.push(...top.map((e) => (normalize ? p[e]! / kept : p[e]!)));
  }
  return { probabilities, selected, weights, margin };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** The fixture with config.json changed (other files linked), in a temporary directory removed after the tests. */
function variant(fixture: string, change: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), `attnscope-${fixture}-`));
  tempDirs.push(dir);
  const src = join(FIXTURES, fixture);
  for (const file of readdirSync(src)) {
    if (file === 'config.json' || file === 'reference.json') continue;
    symlinkSync(join(src, file), join(dir, file));
  }
  const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, ...change }));
  return dir;
}

const cases = [
  { name: 'mixtral', fixture: 'mixtral', change: null, gate: (l: number) => `model.layers.${l}.block_sparse_moe.gate.weight` },
  { name: 'qwen2_moe', fixture: 'qwen2_moe', change: null, gate: (l: number) => `model.layers.${l}.mlp.gate.weight` },
  // The same checkpoint with norm_topk_prob: the renormalised variant of Qwen2-MoE's routing.
  { name: 'qwen2_moe (norm_topk_prob)', fixture: 'qwen2_moe', change: { norm_topk_prob: true }, gate: (l: number) => `model.layers.${l}.mlp.gate.weight` },
];

for (const c of cases) {
  describe(`routing of ${c.name}`, () => {
    const ref = readReference(c.fixture);
    const dir = c.change ? variant(c.fixture, c.change) : join(FIXTURES, c.fixture);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const experts = (config.num_local_experts ?? config.num_experts) as number;
    const k = config.num_experts_per_tok as number;
    const hidden = config.hidden_size as number;
    const layers = config.num_hidden_layers as number;
    const normalize = config.model_type === 'mixtral' || config.norm_topk_prob === true;
    const gates = readF32Tensors(join(FIXTURES, c.fixture, 'model.safetensors'), (n) => n.endsWith('gate.weight') && !n.includes('shared_expert'));
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(dir);
    });
    afterAll(async () => {
      await model?.dispose();
    });

    for (const input of ref.inputs) {
      it(`input '${input.id}': probabilities, chosen experts and weights equal the float64 router`, async () => {
        const n = input.input_ids.length;
        const trace = await model.trace(null, { ids: input.input_ids, routing: true });
        const r = trace.routing!;
        expect({ experts: r.experts, topK: r.topK, normalized: r.normalized }).toEqual({ experts, topK: k, normalized: normalize });
        expect(r.layers.map((l) => l.layer)).toEqual(Array.from({ length: layers }, (_, l) => l));
        const taps = await model.run({ attention: false, qk: false, lastHiddenState: false, logits: false, routerInput: true }, { inputIds: input.input_ids });
        let margin = Infinity;
        for (const got of r.layers) {
          const h = taps[tapName('router_input', 'self', got.layer)]!;
          expect(h.dims).toEqual([1, n, hidden]);
          const gate = gates.get(c.gate(got.layer))!;
          expect(gate.shape).toEqual([experts, hidden]);
          const want = route(h.data as Float32Array, n, hidden, gate.data, experts, k, normalize);
          margin = Math.min(margin, want.margin);
          expect(got.probabilities.dims).toEqual([n, experts]);
          const dp = maxDiff(got.probabilities.data, want.probabilities);
          const dw = maxDiff(got.weights, want.weights);
          expect(
            { selected: Array.from(got.selected), probabilities: dp <= 1e-5, weights: dw <= 1e-5 },
            `layer ${got.layer}: probabilities differ by ${dp}, weights by ${dw}; closest top-k choice ${want.margin}`,
          ).toEqual({ selected: want.selected, probabilities: true, weights: true });
          // The load summary counts each token once per chosen expert.
          const load = expertLoad(r, got);
          expect(load.reduce((a, b) => a + b, 0)).toBe(n * k);
          for (let e = 0; e < experts; e++) expect(load[e]).toBe(want.selected.filter((x) => x === e).length);
        }
        // A choice decided by less than float32 rounding could legitimately differ from PyTorch's; none is that close.
        expect(margin, `closest top-k choice: probabilities ${margin} apart`).toBeGreaterThan(1e-6);
      });
    }

    it('the routing survives both trace formats exactly', async () => {
      const input = ref.inputs[0]!;
      const trace = await model.trace(null, { ids: input.input_ids, routing: true });
      const out = mkdtempSync(join(tmpdir(), 'attnscope-routing-'));
      tempDirs.push(out);
      for (const file of ['t.json', 't.safetensors']) {
        await writeTraceFile(join(out, file), trace);
        const back: Trace = await readTraceFile(join(out, file));
        expect(roundTrip(back.routing), file).toEqual(roundTrip(trace.routing));
      }
    });
  });
}

/** Routing as plain arrays (typed arrays compared value by value, -0 and NaN included). */
function roundTrip(r: Routing | undefined): unknown {
  if (!r) return r;
  return {
    ...r,
    layers: r.layers.map((l) => ({ layer: l.layer, dims: l.probabilities.dims, p: Array.from(l.probabilities.data), selected: Array.from(l.selected), weights: Array.from(l.weights) })),
  };
}

describe('attnscope trace --routing', () => {
  it('writes the routing and prints each layer\'s expert load (hand-counted from the written file)', () => {
    const scratch = mkdtempSync(join(tmpdir(), 'attnscope-routing-cli-'));
    tempDirs.push(scratch);
    const out = join(scratch, 't.json');
    const r = runCli(scratch, ['trace', join(FIXTURES, 'mixtral'), '--text', 'the cat sat on the mat', '--routing', '--out', out], 180_000);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(readFileSync(out, 'utf8')) as { tokens: unknown[]; routing: { experts: number; topK: number; normalized: boolean; layers: { layer: number; selected: number[][] }[] } };
    expect({ experts: json.routing.experts, topK: json.routing.topK, normalized: json.routing.normalized }).toEqual({ experts: 4, topK: 2, normalized: true });
    expect(r.stderr).toContain('routing (top 2 of 4 experts per token, weights renormalised)');
    for (const l of json.routing.layers) {
      expect(l.selected).toHaveLength(json.tokens.length);
      const counts = [0, 1, 2, 3].map((e) => l.selected.flat().filter((x) => x === e).length);
      expect(r.stderr).toContain(`layer ${l.layer}: ${counts.map((n, e) => `e${e}=${n}`).join(' ')}`);
    }
  });

  it('on a dense model fails with one line', () => {
    const scratch = mkdtempSync(join(tmpdir(), 'attnscope-routing-cli-'));
    tempDirs.push(scratch);
    const r = runCli(scratch, ['trace', join(FIXTURES, 'llama'), '--text', 'hello', '--routing'], 180_000);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--routing: .*no mixture-of-experts layers/);
  });
});

describe('a trace file with bad routing', () => {
  it('is refused naming the field', async () => {
    const model = await loadModel(join(FIXTURES, 'qwen2_moe'));
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-routing-bad-'));
    tempDirs.push(dir);
    try {
      const trace = await model.trace(null, { ids: [1, 2, 3], routing: true });
      const path = join(dir, 't.json');
      await writeTraceFile(path, trace);
      const json = JSON.parse(readFileSync(path, 'utf8')) as { routing: { layers: { selected: number[][] }[] } };
      json.routing.layers[1]!.selected[2]![0] = 4; // only experts 0…3 exist
      writeFileSync(path, JSON.stringify(json));
      await expect(readTraceFile(path)).rejects.toThrow(/routing\.layers\[1\]\.selected: token 2 has an expert index that is not an integer in 0…3/);
      json.routing.layers[1]!.selected[2] = [1, 1]; // top-k names distinct experts
      writeFileSync(path, JSON.stringify(json));
      await expect(readTraceFile(path)).rejects.toThrow(/routing\.layers\[1\]\.selected: token 2 names expert 1 twice/);
    } finally {
      await model.dispose();
    }
  });
});

describe('routing on a dense model', () => {
  it('is refused in one line naming the option', async () => {
    const model = await loadModel(join(FIXTURES, 'llama'));
    try {
      const err = await model.trace(null, { ids: [1, 2, 3], routing: true }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AttnscopeError);
      expect((err as Error).message).toMatch(/^--routing: .*no mixture-of-experts layers/);
      expect((err as Error).message).not.toContain('\n');
    } finally {
      await model.dispose();
    }
  });
});
