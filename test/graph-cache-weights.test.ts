/**
 * Prepared weights read from the graph cache (io/graph-cache.ts readCachedWeight), as a layer-by-
 * layer run without kept weights feeds its shared segments: the first run prepares each weight
 * (the checkpoint read, transposed for MatMul) and stores it in the checkpoint's cache folder; the
 * next runs read it as stored and transpose nothing. On a Llama checkpoint four layers deep with
 * weights above the external-data size: every run's trace equals the whole graph's run without any
 * cache bit for bit; the cache holds each shared layer's transposed weights after the first run; a
 * stored weight is what the next run reads (a changed file changes the layers after it, and only
 * those); a damaged (short) file is prepared and stored again.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { traceByLayers } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import type { ExternalWeight } from '../src/graph/builder.js';
import { readCachedWeight } from '../src/io/graph-cache.js';
import { openSafetensors, writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';
import { differences } from './helpers/layerwise-compare.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-cache-weights-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const LAYERS = 4;
const HIDDEN = 128;
const INTER = 256;
const VOCAB = 200;

/** A Llama checkpoint of deterministic values, LAYERS deep, whose projections are stored as external data (≥ 64 KiB). */
async function writeLlama(dir: string): Promise<void> {
  let seed = 5;
  const rand = (n: number, scale: number) => Float32Array.from({ length: n }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return (seed / 2 ** 31 - 0.5) * scale;
  });
  const kv = HIDDEN / 2;
  const tensors: SafetensorsTensorInput[] = [{ name: 'model.embed_tokens.weight', dtype: 'F32', shape: [VOCAB, HIDDEN], data: rand(VOCAB * HIDDEN, 2) }];
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, dtype: 'F32', shape: [HIDDEN], data: rand(HIDDEN, 0.5).map((x) => 1 + x) },
      { name: `${p}.self_attn.q_proj.weight`, dtype: 'F32', shape: [HIDDEN, HIDDEN], data: rand(HIDDEN * HIDDEN, 0.3) },
      { name: `${p}.self_attn.k_proj.weight`, dtype: 'F32', shape: [kv, HIDDEN], data: rand(kv * HIDDEN, 0.3) },
      { name: `${p}.self_attn.v_proj.weight`, dtype: 'F32', shape: [kv, HIDDEN], data: rand(kv * HIDDEN, 0.3) },
      { name: `${p}.self_attn.o_proj.weight`, dtype: 'F32', shape: [HIDDEN, HIDDEN], data: rand(HIDDEN * HIDDEN, 0.2) },
      { name: `${p}.post_attention_layernorm.weight`, dtype: 'F32', shape: [HIDDEN], data: rand(HIDDEN, 0.5).map((x) => 1 + x) },
      { name: `${p}.mlp.gate_proj.weight`, dtype: 'F32', shape: [INTER, HIDDEN], data: rand(INTER * HIDDEN, 0.2) },
      { name: `${p}.mlp.up_proj.weight`, dtype: 'F32', shape: [INTER, HIDDEN], data: rand(INTER * HIDDEN, 0.2) },
      { name: `${p}.mlp.down_proj.weight`, dtype: 'F32', shape: [HIDDEN, INTER], data: rand(INTER * HIDDEN, 0.2) },
    );
  }
  tensors.push({ name: 'model.norm.weight', dtype: 'F32', shape: [HIDDEN], data: rand(HIDDEN, 0.5).map((x) => 1 + x) });
  mkdirSync(dir);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: HIDDEN, intermediate_size: INTER, num_hidden_layers: LAYERS,
    num_attention_heads: 4, num_key_value_heads: 2, vocab_size: VOCAB, hidden_act: 'silu', max_position_embeddings: 64,
    rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, torch_dtype: 'float32',
  }));
}

/** The cached file of a weight (by the start of its name), in the one checkpoint folder under `root`. */
function cachedFile(root: string, prefix: string): string {
  for (const sub of readdirSync(root)) for (const f of readdirSync(join(root, sub))) if (f.startsWith(prefix) && f.endsWith('.bin')) return join(root, sub, f);
  // (Not undefined: a test replacing it would write `undefined.new` into the working folder.)
  throw new Error(`no cached file ${prefix}*.bin under ${root}`);
}

/** Replaces a file as the cache writes them (a new file renamed over it), so no open mapping of the old one sees the change. */
function replace(path: string, data: Uint8Array): void {
  writeFileSync(`${path}.new`, data);
  renameSync(`${path}.new`, path);
}

const OPTIONS = { ids: [1, 17, 42, 99, 5, 150, 7, 63], qk: true, logits: true, residuals: true } as const;

describe('prepared weights read from the graph cache', () => {
  const dir = join(tmp, 'llama4');
  const root = join(tmp, 'cache');
  let model: Model;
  let whole: Trace;
  beforeAll(async () => {
    await writeLlama(dir);
    // The reference: the whole graph, no cache (weights read and transposed in memory).
    const plain = await loadModel(dir, { graphCache: false });
    whole = await plain.trace(null, OPTIONS);
    await plain.dispose();
    model = await loadModel(dir, { graphCache: root });
  });
  afterAll(async () => {
    await model?.dispose();
  });
  const layered = (): Promise<Trace> => traceByLayers(model, null, { ...OPTIONS, keepWeights: false });

  it('the first run stores each shared layer\'s transposed weights; it and the next run equal the whole graph bit for bit', async () => {
    const seen: boolean[] = [];
    expect(differences(await traceByLayers(model, null, { ...OPTIONS, keepWeights: false }, (l) => void seen.push(l.shared)), whole)).toEqual([]);
    expect(seen.filter((s) => s).length).toBeGreaterThanOrEqual(2);
    for (let l = 1; l < LAYERS; l++) {
      const file = cachedFile(root, `model.layers.${l}.mlp.down_proj.weight.T`);
      expect(statSync(file).size, `layer ${l}`).toBe(HIDDEN * INTER * 4);
    }
    // Stored as the MatMul reads it: [INTER, HIDDEN], the transpose of the checkpoint's [HIDDEN, INTER] (float32, little-endian).
    const src = await openSafetensors(join(dir, 'model.safetensors'));
    const w = (await src.get('model.layers.1.mlp.down_proj.weight')).data;
    await src.close();
    const file = readFileSync(cachedFile(root, 'model.layers.1.mlp.down_proj.weight.T'));
    const stored = new Float32Array(file.buffer, file.byteOffset, file.byteLength / 4);
    const transposed = Float32Array.from({ length: INTER * HIDDEN }, (_, i) => w[(i % HIDDEN) * INTER + Math.floor(i / HIDDEN)]!);
    expect(differences(stored, transposed)).toEqual([]);
    expect(differences(await layered(), whole)).toEqual([]);
  });

  it('reads what is stored: a changed weight of layer 2 changes the layers after it, and only those', async () => {
    const file = cachedFile(root, 'model.layers.2.mlp.down_proj.weight.T');
    const stored = readFileSync(file);
    try {
      replace(file, new Uint8Array(stored.byteLength));
      const changed = await layered();
      const q = (t: Trace, l: number) => t.queries!.self!.layers[l]!;
      for (let l = 0; l <= 2; l++) expect(differences(q(changed, l), q(whole, l)), `layer ${l}`).toEqual([]);
      expect(differences(q(changed, 3), q(whole, 3))).not.toEqual([]);
    } finally {
      replace(file, stored);
    }
    expect(differences(await layered(), whole)).toEqual([]);
  });

  it('a short file is prepared and stored again', async () => {
    const file = cachedFile(root, 'model.layers.3.self_attn.q_proj.weight.T');
    replace(file, new Uint8Array(100));
    expect(differences(await layered(), whole)).toEqual([]);
    expect(statSync(file).size).toBe(HIDDEN * HIDDEN * 4);
  });

  it('readCachedWeight: prepares a missing weight once, then reads it as stored', async () => {
    const folder = join(tmp, 'direct');
    const bytes = Uint8Array.from({ length: 4096 }, (_, i) => (i * 37) % 251);
    let loads = 0;
    const weight: ExternalWeight = { path: 'w-00000000.bin', byteLength: bytes.byteLength, load: async () => (loads++, bytes.slice()) };
    expect([...(await readCachedWeight(folder, weight))]).toEqual([...bytes]);
    expect(loads).toBe(1);
    expect([...readFileSync(join(folder, weight.path))]).toEqual([...bytes]);
    expect([...(await readCachedWeight(folder, weight))]).toEqual([...bytes]);
    expect(loads).toBe(1);
    expect(readdirSync(folder)).toEqual([weight.path]); // no temporary file left
  });
});
