/**
 * Preparing a checkpoint by streaming its weights into the graph cache (issue 13.5): the first run
 * writes the cache weight by weight and opens the session from it; its traces are bit-identical to
 * a session built in memory (no cache) and to later runs opened from the cache, on several
 * families and storage formats (float32, float16, bfloat16, sharded safetensors, pytorch_model.bin);
 * 16-bit weights stay 16-bit in the cache; a changed checkpoint gets a new cache entry; a damaged
 * checkpoint still gives one clear line.
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { FloatTensor } from '../src/core/tensor.js';
import { loadModel } from '../src/engine/load.js';
import { openSafetensors, writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';
import { packWeightsSetting } from '../src/runtime/onnxruntime-node.js';
import { flat, FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-cache-stream-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function traceOf(dir: string, cache: string | false, ids: readonly number[], typeIds?: readonly number[]) {
  const model = await loadModel(dir, { graphCache: cache });
  try {
    const trace = await model.trace(null, { ids, ...(typeIds ? { typeIds } : {}), logits: true, hidden: true });
    return { attention: stackValues(trace.attention.self), logits: trace.logits!.data, hidden: trace.lastHiddenState!.data };
  } finally {
    await model.dispose();
  }
}

/** A small Llama checkpoint (hidden 256, 2 layers, vocab 300) of deterministic values, in `dtype`. */
async function writeLlama(dir: string, dtype: 'BF16' | 'F16'): Promise<void> {
  const hidden = 256;
  const inter = 512;
  const vocab = 300;
  let seed = dtype === 'BF16' ? 7 : 11;
  const rand = (n: number, scale: number) => Float32Array.from({ length: n }, () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return (seed / 2 ** 31 - 0.5) * scale;
  });
  const tensors: SafetensorsTensorInput[] = [{ name: 'model.embed_tokens.weight', dtype, shape: [vocab, hidden], data: rand(vocab * hidden, 2) }];
  for (let l = 0; l < 2; l++) {
    const p = `model.layers.${l}`;
    tensors.push(
      { name: `${p}.input_layernorm.weight`, dtype, shape: [hidden], data: rand(hidden, 0.5).map((x) => 1 + x) },
      { name: `${p}.self_attn.q_proj.weight`, dtype, shape: [hidden, hidden], data: rand(hidden * hidden, 0.3) },
      { name: `${p}.self_attn.k_proj.weight`, dtype, shape: [hidden / 2, hidden], data: rand((hidden * hidden) / 2, 0.3) },
      { name: `${p}.self_attn.v_proj.weight`, dtype, shape: [hidden / 2, hidden], data: rand((hidden * hidden) / 2, 0.3) },
      { name: `${p}.self_attn.o_proj.weight`, dtype, shape: [hidden, hidden], data: rand(hidden * hidden, 0.2) },
      { name: `${p}.post_attention_layernorm.weight`, dtype, shape: [hidden], data: rand(hidden, 0.5).map((x) => 1 + x) },
      { name: `${p}.mlp.gate_proj.weight`, dtype, shape: [inter, hidden], data: rand(inter * hidden, 0.2) },
      { name: `${p}.mlp.up_proj.weight`, dtype, shape: [inter, hidden], data: rand(inter * hidden, 0.2) },
      { name: `${p}.mlp.down_proj.weight`, dtype, shape: [hidden, inter], data: rand(inter * hidden, 0.2) },
    );
  }
  tensors.push({ name: 'model.norm.weight', dtype, shape: [hidden], data: rand(hidden, 0.5).map((x) => 1 + x) });
  mkdirSync(dir);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: hidden, intermediate_size: inter, num_hidden_layers: 2,
    num_attention_heads: 8, num_key_value_heads: 4, vocab_size: vocab, hidden_act: 'silu', max_position_embeddings: 64,
    rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: true, torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float16',
  }));
}

/** Every file under a cache root (checkpoint folder / file), with its size. */
function cacheFiles(root: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const sub of readdirSync(root)) for (const f of readdirSync(join(root, sub))) out.set(join(sub, f), statSync(join(root, sub, f)).size);
  return out;
}

describe('streaming a checkpoint into the graph cache', () => {
  for (const fixture of ['llama', 'qwen2', 'bert-fp16', 'bert-bf16', 'bert-sharded', 'gpt2-bin']) {
    it(`${fixture}: first run (prepared by streaming) and cached runs equal the in-memory session bit for bit, and PyTorch`, async () => {
      const ref = readReference(fixture);
      const input = ref.inputs[0]!;
      const dir = join(FIXTURES, fixture);
      const root = join(tmp, fixture);
      const memory = await traceOf(dir, false, input.input_ids, input.token_type_ids);
      const first = await traceOf(dir, root, input.input_ids, input.token_type_ids);
      const files = cacheFiles(root);
      expect([...files.keys()].some((f) => f.endsWith('.onnx'))).toBe(true);
      expect([...files.keys()].some((f) => f.endsWith('.tmp'))).toBe(false);
      const second = await traceOf(dir, root, input.input_ids, input.token_type_ids);
      for (const run of [first, second]) {
        expect(run.attention).toEqual(memory.attention);
        expect(run.logits).toEqual(memory.logits);
        expect(run.hidden).toEqual(memory.hidden);
      }
      // PyTorch's attention (the fixture's reference, float32 run of the same weights).
      expect(maxAbsDiff(first.attention, flat(input.attentions!))).toBeLessThan(1e-4);
    });
  }

  for (const dtype of ['BF16', 'F16'] as const) {
    it(`keeps ${dtype} weights ${dtype} in the cache (the transposed matrix is the checkpoint's bits, transposed) and traces as float32 weights of the same values`, async () => {
      // A Llama-shaped checkpoint large enough for its matrices to be cache files (≥ 64 KiB).
      const dir16 = join(tmp, `llama-${dtype}`);
      const dir32 = join(tmp, `llama-${dtype}-as-f32`);
      await writeLlama(dir16, dtype);
      const src = await openSafetensors(join(dir16, 'model.safetensors'));
      const values = new Map<string, FloatTensor>();
      for (const name of src.names()) values.set(name, await src.get(name));
      await src.close();
      mkdirSync(dir32);
      copyFileSync(join(dir16, 'config.json'), join(dir32, 'config.json'));
      await writeSafetensors(join(dir32, 'model.safetensors'), [...values].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data })));
      const root = join(tmp, `cache-${dtype}`);
      const ids = [1, 5, 9, 200, 7, 33, 2];
      const streamed = await traceOf(dir16, root, ids);
      const cached = await traceOf(dir16, root, ids);
      const wide = await traceOf(dir32, false, ids);
      for (const run of [streamed, cached]) {
        expect(run.attention).toEqual(wide.attention);
        expect(run.logits).toEqual(wide.logits);
      }
      // The raw bits of q_proj in the checkpoint, transposed by hand, are the cache file's bytes.
      const file = readFileSync(join(dir16, 'model.safetensors'));
      const n = Number(file.readBigUInt64LE(0));
      const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[]; data_offsets: [number, number] }>;
      const entry = header['model.layers.1.self_attn.q_proj.weight']!;
      const [rows, cols] = entry.shape as [number, number];
      const raw = file.subarray(8 + n + entry.data_offsets[0], 8 + n + entry.data_offsets[1]);
      const files = [...cacheFiles(root)].filter(([f]) => f.endsWith('.bin'));
      const cachedQ = files.find(([f]) => f.includes('layers.1.self_attn.q_proj.weight.T'));
      expect(cachedQ?.[1]).toBe(rows * cols * 2); // two bytes a value: the checkpoint's dtype kept
      const bytes = readFileSync(join(root, cachedQ![0]));
      let mismatches = 0;
      for (let c = 0; c < cols; c++) for (let r = 0; r < rows; r++) if (bytes.readUInt16LE(2 * (c * rows + r)) !== raw.readUInt16LE(2 * (r * cols + c))) mismatches++;
      expect(mismatches).toBe(0);
      // Every cached weight file is stored 16-bit (named after its storage type, two bytes a value).
      const storage = dtype === 'BF16' ? '_bfloat16-' : '__float16-';
      expect(files.length).toBeGreaterThan(10);
      for (const [f] of files) expect(f).toContain(storage);
    });
  }

  it('a changed checkpoint gets a new cache entry and traces its new weights', async () => {
    const dir = join(tmp, 'llama-copy');
    cpSync(join(FIXTURES, 'llama'), dir, { recursive: true });
    const root = join(tmp, 'changed');
    const ids = readReference('llama').inputs[0]!.input_ids;
    const before = await traceOf(dir, root, ids);
    expect(readdirSync(root)).toHaveLength(1);
    // Rewrite the checkpoint with the first query weight's bytes replaced (same size, new time).
    const path = join(dir, 'model.safetensors');
    const file = readFileSync(path);
    const n = Number(file.readBigUInt64LE(0));
    const header = JSON.parse(file.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
    const q = header['model.layers.0.self_attn.q_proj.weight']!;
    const data = new Float32Array(file.buffer.slice(file.byteOffset + 8 + n + q.data_offsets[0], file.byteOffset + 8 + n + q.data_offsets[1]));
    for (let i = 0; i < data.length; i++) data[i] = data[i]! * 3;
    file.set(new Uint8Array(data.buffer), 8 + n + q.data_offsets[0]);
    writeFileSync(path, file);
    const uncached = await traceOf(dir, false, ids);
    const after = await traceOf(dir, root, ids);
    expect(readdirSync(root)).toHaveLength(2);
    expect(after.attention).toEqual(uncached.attention);
    expect(after.attention).not.toEqual(before.attention);
  });

  it('a truncated checkpoint is one clear line, with the cache on, and leaves no partial file in it', async () => {
    const dir = join(tmp, 'bert-truncated');
    cpSync(join(FIXTURES, 'bert'), dir, { recursive: true });
    const path = join(dir, 'model.safetensors');
    truncateSync(path, statSync(path).size - 1000);
    const root = join(tmp, 'truncated-cache');
    const err = await traceOf(dir, root, [101, 102]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AttnscopeError);
    expect((err as Error).message).not.toContain('\n');
    expect((err as Error).message).toMatch(/model\.safetensors/);
    for (const [f] of existsSync(root) ? cacheFiles(root) : []) expect(f.endsWith('.tmp') || f.endsWith('.onnx')).toBe(false);
    copyFileSync(join(FIXTURES, 'bert', 'model.safetensors'), path); // repaired: traces again
    const ok = await traceOf(dir, root, [101, 102]);
    expect(ok.attention.length).toBeGreaterThan(0);
  });
});

describe('weights not pre-packed (packWeights: false, ATTNSCOPE_PACK_WEIGHTS=off)', () => {
  it('traces from the memory-mapped cache as the packed session does, and PyTorch', async () => {
    const input = readReference('llama').inputs[0]!;
    const dir = join(FIXTURES, 'llama');
    const root = join(tmp, 'unpacked');
    const packed = await traceOf(dir, root, input.input_ids);
    // Opens the cache the packed session wrote, with nothing packed.
    const model = await loadModel(dir, { graphCache: root, packWeights: false });
    try {
      const trace = await model.trace(null, { ids: input.input_ids, logits: true });
      expect(maxAbsDiff(stackValues(trace.attention.self), packed.attention)).toBeLessThan(1e-6);
      expect(maxAbsDiff(trace.logits!.data, packed.logits)).toBeLessThan(1e-5);
      expect(maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!))).toBeLessThan(1e-4);
    } finally {
      await model.dispose();
    }
  });

  it('a bad ATTNSCOPE_PACK_WEIGHTS is one line naming it and the allowed values', () => {
    expect(() => packWeightsSetting({ ATTNSCOPE_PACK_WEIGHTS: 'maybe' })).toThrow(/^ATTNSCOPE_PACK_WEIGHTS=maybe: allowed: on, off, 1, 0, true, false$/);
    expect(packWeightsSetting({ ATTNSCOPE_PACK_WEIGHTS: 'off' })).toBe(false);
    expect(packWeightsSetting({})).toBe(true);
  });
});

describe('16-bit weights not folded (packWeights: false)', () => {
  for (const fixture of ['bert-bf16', 'bert-fp16']) {
    it(`${fixture}: converted where used, the trace equals the packed session's and PyTorch`, async () => {
      const input = readReference(fixture).inputs[0]!;
      const dir = join(FIXTURES, fixture);
      const root = join(tmp, `unfolded-${fixture}`);
      const packed = await traceOf(dir, root, input.input_ids, input.token_type_ids);
      const model = await loadModel(dir, { graphCache: root, packWeights: false });
      try {
        const trace = await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, logits: true });
        expect(maxAbsDiff(stackValues(trace.attention.self), packed.attention)).toBeLessThan(1e-6);
        expect(maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!))).toBeLessThan(1e-4);
      } finally {
        await model.dispose();
      }
    });
  }
});
