/**
 * Trace.attributions in both trace formats: PyTorch's gradients.json values (gpt2 and bart:
 * one self stack, and encoder/decoder/cross) written and read back bit for bit as JSON and
 * `.safetensors`; a `.safetensors` trace assembled byte by byte in this test (header length, JSON
 * header, little-endian float32 data, as `safetensors.torch.save_file` lays it out) opens with the
 * same numbers; malformed attributions give one clear error naming the field.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Attributions, LayerStack, StackMap, Trace } from '../src/core/trace.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { byStack, readGradients, type GradientsInput } from './helpers/gradients.js';
import { readReference } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-attr-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type N4 = number[][][][];

const stackOf = (v: N4): LayerStack => ({ dims: [v[0]!.length, v[0]![0]!.length, v[0]![0]![0]!.length], layers: v.map((l) => Float32Array.from(l.flat(2))) });
const tokensOf = (ids: number[], texts?: string[]) => ids.map((id, i) => ({ id, text: texts?.[i] ?? String(id), start: 0, end: 0, special: false, segment: 0, word: null }));

/** A trace of the fixture's first input: reference.json's attention, gradients.json's attributions. */
function fixtureTrace(fixture: string): { trace: Trace; grad: GradientsInput } {
  const grad = readGradients(fixture).inputs[0]!;
  const ref = readReference(fixture).inputs[0]!;
  const encdec = grad.decoder_input_ids !== undefined;
  const attention: StackMap = encdec
    ? { encoder: stackOf(ref.encoder_attentions as N4), decoder: stackOf(ref.decoder_attentions as N4), cross: stackOf(ref.cross_attentions as N4) }
    : { self: stackOf(ref.attentions as N4) };
  const attentionGrad: StackMap = {};
  for (const [s, v] of Object.entries(byStack(grad.attention_grad!))) attentionGrad[s as keyof StackMap] = stackOf(v);
  const headImportance: Attributions['headImportance'] = {};
  for (const [s, v] of Object.entries(byStack(grad.head_importance))) headImportance[s as keyof StackMap] = { dims: [v.length, v[0]!.length], data: Float32Array.from(v.flat()) };
  const t = grad.target;
  const attributions: Attributions = {
    target: { kind: t.kind, position: t.position, tokenId: t.token_id, value: t.value, ...(t.stack ? { stack: 'decoder' as const } : {}) },
    scores: {
      gradXInput: { method: 'gradXInput', reduction: 'sum', scores: Float32Array.from(grad.grad_x_input) },
      integratedGradients: {
        method: 'integratedGradients', reduction: 'sum', baseline: 'zero', steps: 256, rule: 'midpoint', scores: Float32Array.from(grad.integrated_gradients),
        completeness: { sumAttributions: grad.ig_completeness.sum_attributions, targetInput: grad.ig_completeness.target_x, targetBaseline: grad.ig_completeness.target_baseline },
      },
    },
    embeddingGrad: { dims: [grad.embedding_grad.length, grad.embedding_grad[0]!.length], data: Float32Array.from(grad.embedding_grad.flat()) },
    attentionGrad,
    headImportance,
  };
  if (encdec) attributions.scores.decoderSide = { method: 'custom', tokens: 'decoderTokens', scores: Float32Array.from(grad.decoder_input_ids!, (x) => x / 7) };
  const trace: Trace = {
    model: { name: fixture, modelType: fixture, numLayers: 2, numHeads: attention[encdec ? 'encoder' : 'self']!.dims[0], numKeyValueHeads: 1, headDim: 4 },
    tokens: tokensOf(grad.input_ids, ref.tokens),
    ...(encdec ? { decoderTokens: tokensOf(grad.decoder_input_ids!) } : {}),
    attention,
    attributions,
  };
  return { trace, grad };
}

const arrays = (a: Attributions) => ({
  target: a.target,
  scores: Object.fromEntries(Object.entries(a.scores).map(([k, s]) => [k, { ...s, scores: Array.from(s.scores) }])),
  embeddingGrad: a.embeddingGrad && { dims: a.embeddingGrad.dims, data: Array.from(a.embeddingGrad.data) },
  attentionGrad: Object.fromEntries(Object.entries(a.attentionGrad ?? {}).map(([k, s]) => [k, { dims: s.dims, layers: s.layers.map((l) => Array.from(l)) }])),
  headImportance: Object.fromEntries(Object.entries(a.headImportance ?? {}).map(([k, m]) => [k, { dims: m.dims, data: Array.from(m.data) }])),
});

describe('round trips of PyTorch attributions', () => {
  for (const fixture of ['gpt2', 'bart']) {
    for (const ext of ['json', 'safetensors']) {
      it(`${fixture} → .${ext} → back, bit for bit`, async () => {
        const { trace } = fixtureTrace(fixture);
        const path = join(tmp, `${fixture}.${ext}`);
        await writeTraceFile(path, trace);
        const back = await readTraceFile(path);
        expect(arrays(back.attributions!)).toEqual(arrays(trace.attributions!));
      });
    }
  }
});

/** The bytes of a .safetensors file: u64 header length, JSON header, F32 little-endian data. */
function handMadeSafetensors(tensors: { name: string; shape: number[]; values: number[] }[], metadata: Record<string, string>): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + 4 * t.values.length] };
    offset += 4 * t.values.length;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const data = Buffer.alloc(offset);
  let o = 0;
  for (const t of tensors) for (const v of t.values) o = data.writeFloatLE(v, o);
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([size, json, data]);
}

describe('a .safetensors trace written by hand (as a PyTorch user would)', () => {
  it('gpt2: attention, ∂T/∂α, gate gradients, ∂T/∂E and IG from gradients.json open unchanged', async () => {
    const grad = readGradients('gpt2').inputs[0]!;
    const ref = readReference('gpt2').inputs[0]!;
    const att = ref.attentions as N4;
    const ag = grad.attention_grad as N4;
    const hi = grad.head_importance as number[][];
    const n = grad.input_ids.length;
    const bytes = handMadeSafetensors([
      { name: 'attention.self', shape: [att.length, att[0]!.length, n, n], values: att.flat(3) },
      { name: 'attentionGrad.self', shape: [ag.length, ag[0]!.length, n, n], values: ag.flat(3) },
      { name: 'headImportance.self', shape: [hi.length, hi[0]!.length], values: hi.flat() },
      { name: 'embeddingGrad', shape: [n, grad.embedding_grad[0]!.length], values: grad.embedding_grad.flat() },
      { name: 'attribution.ig', shape: [n], values: grad.integrated_gradients },
      { name: 'attribution.saliency', shape: [n], values: grad.grad_x_input },
    ], {
      format: 'attnscope-trace',
      tokens: JSON.stringify(ref.tokens),
      attributions: JSON.stringify({
        target: { kind: grad.target.kind, position: grad.target.position, tokenId: grad.target.token_id, value: grad.target.value },
        scores: { ig: { method: 'integratedGradients', baseline: 'zero', steps: 256, rule: 'midpoint', reduction: 'sum' } },
      }),
    });
    const path = join(tmp, 'by-hand.safetensors');
    writeFileSync(path, bytes);
    const back = await readTraceFile(path);
    const a = back.attributions!;
    const f32 = (v: number[]) => Array.from(Float32Array.from(v));
    expect(a.target).toEqual({ kind: 'causal_lm_argmax_logprob', position: grad.target.position, tokenId: grad.target.token_id, value: grad.target.value });
    expect(Array.from(a.scores.ig!.scores)).toEqual(f32(grad.integrated_gradients));
    expect(a.scores.ig).toMatchObject({ method: 'integratedGradients', baseline: 'zero', steps: 256, rule: 'midpoint', reduction: 'sum' });
    // A score tensor without a metadata entry: its name is the method.
    expect(a.scores.saliency!.method).toBe('saliency');
    expect(Array.from(a.scores.saliency!.scores)).toEqual(f32(grad.grad_x_input));
    expect(Array.from(a.embeddingGrad!.data)).toEqual(f32(grad.embedding_grad.flat()));
    expect(a.attentionGrad!.self!.layers.map((l) => Array.from(l))).toEqual(ag.map((l) => f32(l.flat(2))));
    expect(Array.from(a.headImportance!.self!.data)).toEqual(f32(hi.flat()));
  });
});

describe('malformed attributions', () => {
  const write = async (name: string, mutate: (t: Trace) => void): Promise<string> => {
    const { trace } = fixtureTrace('gpt2');
    mutate(trace);
    const path = join(tmp, name);
    await writeTraceFile(path, trace);
    return path;
  };
  const cases: [string, (t: Trace) => void, RegExp][] = [
    ['too few scores', (t) => { t.attributions!.scores.gradXInput!.scores = new Float32Array(3); }, /attributions\.scores\.gradXInput: 3 values but there are 13 tokens/],
    ['target out of range', (t) => { t.attributions!.target.position = 99; }, /attributions\.target\.position: 99 is out of range \(0–12/],
    ['gradient of the wrong shape', (t) => { t.attributions!.attentionGrad!.self = { dims: [1, 13, 13], layers: [new Float32Array(169)] }; }, /attributions\.attentionGrad\.self: \[1, 1, 13, 13\] does not fit the attention \[2, 4, 13, 13\]/],
    ['head importance of the wrong shape', (t) => { t.attributions!.headImportance!.self = { dims: [1, 2], data: new Float32Array(2) }; }, /headImportance\.self: 1 × 2 but the attention has 2 layers × 4 heads/],
  ];
  for (const ext of ['json', 'safetensors']) {
    for (const [what, mutate, message] of cases) {
      it(`.${ext}: ${what}`, async () => {
        const path = await write(`bad-${what.replace(/\W+/g, '-')}.${ext}`, mutate);
        await expect(readTraceFile(path)).rejects.toThrow(message);
      });
    }
  }

  it('attribution tensors without the metadata that names the target', async () => {
    const path = join(tmp, 'no-meta.safetensors');
    writeFileSync(path, handMadeSafetensors([
      { name: 'attention.self', shape: [1, 1, 2, 2], values: [1, 0, 0.5, 0.5] },
      { name: 'attribution.x', shape: [2], values: [1, 2] },
    ], { format: 'attnscope-trace', tokens: JSON.stringify(['a', 'b']) }));
    await expect(readTraceFile(path)).rejects.toThrow(/attribution tensors need the metadata field attributions/);
  });

  it('a non-finite value in a JSON trace is named', async () => {
    const { trace } = fixtureTrace('gpt2');
    trace.attributions!.scores.gradXInput!.scores[4] = Number.NaN;
    await expect(writeTraceFile(join(tmp, 'nan.json'), trace)).rejects.toThrow(/attributions\.scores\.gradXInput: value 4 is NaN/);
  });
});
