/**
 * Position biases at long lengths against PyTorch itself (issue 13): Falcon's bfloat16 ALiBi past
 * position 256 (where bfloat16 stops holding every integer), BLOOM's float32 ALiBi, and T5's / mT5's /
 * umT5's relative buckets where the offsets pass relative_attention_max_distance (bidirectional in the
 * encoder, unidirectional in the decoder) and the buckets saturate.
 *
 * The reference, test/fixtures/position-bias-long.json, is written by
 * bench/pytorch/position_bias_reference.py: the fixture checkpoints run in PyTorch 1.13 eager by a
 * mirror of transformers 4.40's forward (checked by that script against the fixtures' reference.json
 * made by transformers itself), at 300, 1,000 and 3,000 tokens (Falcon, BLOOM: 4 heads, whose slopes
 * are powers of two), at 1,000 tokens with the same weights read as 16 heads of 2 dims (slopes 2^(−k/2):
 * Falcon's bfloat16 slopes and products round) and at 300-400 encoder / 200 decoder tokens (T5
 * family: the buckets saturate from offset 91 bidirectionally, 113 unidirectionally). It holds the
 * middle and the last rows (the encoder's first too; the 16-head cases the last) of every layer and
 * head, whole up to 256 keys, else in windows: the first 16 keys, 16 around 256, 16 in the middle,
 * the 32 up to the row, the last 8 and every 64th key, each as the shortest decimal of its float32.
 *
 * attnscope runs the same ids dense (every probability from the graph), on demand (queries, keys and
 * the compact bias from the graph in 4 query bands, the rows computed by the JavaScript and the
 * WebAssembly kernels) and layer by layer on demand (engine/layerwise.ts traceModel, what
 * `attnscope trace` runs for long inputs), and every stored probability p must agree within
 * |Δ| ≤ 2e-6 + p·(2e-5 + 2^-21·S), S the row's largest |score| (stored by the script). That is float32's
 * reach: the scores are summed in another order than PyTorch's (Falcon's (q·k + alibi)·d^-½ here is
 * q·k·d^-½ + alibi·d^-½), each rounding off by up to 2^-24·S, and a softmax turns a score's absolute
 * error into the probability's relative error — ALiBi scores reach 750 at 3,000 tokens (BLOOM).
 * A wrong position bias is far outside (measured with the script's mirror changed): Falcon with float32
 * ALiBi differs by up to 0.0075 at 300 tokens, 0.22 at 3,000 (a fifth to a third of the stored values out);
 * as 16 heads, bfloat16 ALiBi without rounding the positions (bf16(bf16(slope)·j)) or without rounding
 * the products (bf16(slope)·bf16(j)) differs by up to 0.33 / 0.14 (860 / 874 of 3,008 values out) —
 * with 4 heads those two equal PyTorch's exactly (every slope a power of two), hence the 16-head case.
 * npm test runs Falcon (all four cases), BLOOM at 1,000 and the T5 family, layer by layer the 16-head
 * Falcon and T5 (< 20 s on two loaded cores); npm run test:deep adds BLOOM at 300 and 3,000 tokens and
 * as 16 heads, and every case layer by layer.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attentionSource } from '../src/core/attention-on-demand.js';
import type { StackName, Trace } from '../src/core/trace.js';
import { traceModel } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { DEEP } from './helpers/deep.js';
import { FIXTURES } from './helpers/reference.js';

interface Row {
  row: number;
  /** The largest |score| of the row over the keys it sees. */
  max_score: number;
  cols: [number, number][];
  p: number[];
}
interface Case {
  fixture: string;
  /** Overrides of the fixture's config.json (the same weights read with other settings). */
  config?: Record<string, number>;
  input_ids: number[];
  decoder_input_ids?: number[];
  stacks: Partial<Record<StackName, Row[][][]>>;
}
interface Reference {
  script: string;
  torch_version: string;
  date: string;
  check_vs_transformers: Record<string, number>;
  cases: Case[];
}

const reference = JSON.parse(readFileSync(join(FIXTURES, 'position-bias-long.json'), 'utf8')) as Reference;
const ATOL = 2e-6;
const RTOL = 2e-5;
/** Relative error of a probability per unit of its row's largest |score|: float32's 2^-24 per rounding, a few roundings. */
const PER_SCORE = 2 ** -21;

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bias-pytorch-'));
const models = new Map<string, Model>();
/** The fixture's model, or with `config` a copy of it whose config.json has those settings. */
async function model(fixture: string, config?: Record<string, number>): Promise<Model> {
  const key = `${fixture} ${JSON.stringify(config ?? {})}`;
  let m = models.get(key);
  if (!m) {
    let dir = join(FIXTURES, fixture);
    if (config) {
      const copy = join(tmp, `${fixture}-${models.size}`);
      mkdirSync(copy);
      const base = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(copy, 'config.json'), JSON.stringify({ ...base, ...config }));
      copyFileSync(join(dir, 'model.safetensors'), join(copy, 'model.safetensors'));
      dir = copy;
    }
    // A copy is not cached (its graph would stay in the graph cache under a removed directory's key).
    m = await loadModel(dir, config ? { graphCache: false } : {});
    models.set(key, m);
  }
  return m;
}
afterAll(async () => {
  for (const m of models.values()) await m.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

/** Checks stored rows against `rowOf`: the largest |Δ|, the largest |Δ| / allowed, how many values. */
function compare(rows: Row[][][], rowOf: (layer: number, head: number, row: number) => Float32Array, label: string): { maxAbs: number; used: number; checked: number } {
  let maxAbs = 0;
  let used = 0;
  let checked = 0;
  rows.forEach((heads, layer) =>
    heads.forEach((entries, head) => {
      for (const { row, max_score: score, cols, p } of entries) {
        const got = rowOf(layer, head, row);
        const rtol = RTOL + PER_SCORE * score;
        let at = 0;
        for (const [from, to] of cols) {
          for (let j = from; j < to; j++, at++) {
            const want = p[at]!;
            const diff = Math.abs(got[j]! - want);
            const allowed = ATOL + rtol * want;
            maxAbs = Math.max(maxAbs, diff);
            used = Math.max(used, diff / allowed);
            checked++;
            if (diff > allowed) expect.fail(`${label} layer ${layer} head ${head} row ${row} key ${j}: ${got[j]} vs PyTorch ${want} (|Δ| ${diff}, allowed ${allowed})`);
          }
        }
        expect(at, `${label} layer ${layer} head ${head} row ${row}`).toBe(p.length);
      }
    }),
  );
  return { maxAbs, used, checked };
}

describe(`position biases at long lengths = PyTorch ${reference.torch_version} eager (${reference.script}, ${reference.date})`, () => {
  it("the reference's mirror of transformers agreed with the fixtures' transformers outputs", () => {
    for (const fixture of ['falcon-alibi', 'bloom', 't5', 'mt5', 'umt5']) expect(reference.check_vs_transformers[fixture], fixture).toBeLessThanOrEqual(1e-5);
  });

  // npm test: under 20 s on two loaded cores (see the header); npm run test:deep: every case.
  const quick = (c: Case): boolean => c.fixture !== 'bloom' || (c.input_ids.length === 1000 && !c.config);
  for (const c of reference.cases.filter((x) => DEEP || quick(x))) {
    const n = c.input_ids.length;
    const heads = c.config ? ` as ${c.config.num_attention_heads ?? c.config.n_head} heads` : '';
    const label = `${c.fixture}${heads} ${n}${c.decoder_input_ids ? `/${c.decoder_input_ids.length}` : ''} tokens`;
    const layerByLayer = DEEP || c.config !== undefined || c.fixture === 't5';
    const paths = `${n <= 1000 && !c.config ? 'dense, ' : ''}on demand in query bands (JS and WebAssembly kernels)${layerByLayer ? ', layer by layer' : ''}`;
    it(`${label}: every stored probability, ${paths}`, async () => {
      const m = await model(c.fixture, c.config);
      if (c.config) expect(m.info.numHeads).toBe(c.config.num_attention_heads ?? c.config.n_head);
      const options = { ids: c.input_ids, ...(c.decoder_input_ids ? { decoderIds: c.decoder_input_ids } : {}) };
      const stacks = Object.keys(c.stacks) as StackName[];
      const summary: string[] = [];
      const lazy = await m.trace(null, { ...options, attention: 'on-demand', queryBandCount: 4 });
      const runs: [string, Trace, 'js' | 'wasm'][] = [['on demand', lazy, 'js'], ['on demand', lazy, 'wasm']];
      // What `attnscope trace` runs for long inputs: layer by layer, each layer's graph on its own
      // (npm test: the 16-head Falcon and T5; test:deep: every case).
      if (layerByLayer) {
        const { trace, execution } = await traceModel(m, null, { ...options, attention: 'on-demand', execution: 'layers' });
        expect(execution).toBe('layers');
        runs.push(['layer by layer', trace, 'wasm']);
      }
      for (const [run, trace, kernel] of runs) {
        for (const s of stacks) {
          const source = attentionSource(trace, s, { kernel });
          const nk = source.numKeys;
          const { maxAbs, used, checked } = compare(c.stacks[s]!, (l, h, r) => source.block(l, h, r, r + 1, 0, nk), `${label} ${run} (${kernel}) ${s}`);
          summary.push(`${run} ${kernel} ${s}: ${checked} values, max |Δ| ${maxAbs.toExponential(2)} (${(100 * used).toFixed(0)}% of allowed)`);
        }
      }
      // Dense maps up to 1,000 tokens of 4 heads (16 MB a layer); longer and 16-head cases on demand only.
      if (n <= 1000 && !c.config) {
        const dense = await m.trace(null, { ...options, attention: 'dense' });
        for (const s of stacks) {
          const maps = dense.attention[s]!;
          const [, nq, nk] = maps.dims;
          const { maxAbs, used, checked } = compare(c.stacks[s]!, (l, h, r) => maps.layers[l]!.subarray((h * nq + r) * nk, (h * nq + r + 1) * nk), `${label} dense ${s}`);
          summary.push(`dense ${s}: ${checked} values, max |Δ| ${maxAbs.toExponential(2)} (${(100 * used).toFixed(0)}% of allowed)`);
        }
      }
      console.log(`${label}: ${summary.join('; ')}`);
    });
  }
});
