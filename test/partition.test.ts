/**
 * graph/partition.ts on small hand-built graphs: three "layers" over a residual stream with a mask
 * every layer reads and a 16-bit weight (a Cast from weights only, repeated where read). The cut
 * falls at the residual stream (only it and the mask cross), each layer's tap is in its own
 * segment, the head is cut off from the last layer (which then is the middle layers' graph),
 * what leads to no output is left out, and running the segments in order gives the whole graph's
 * outputs bit for bit, which are a float64 computation written here within float32 rounding.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder, type Value } from '../src/graph/builder.js';
import type { GraphSpec } from '../src/graph/onnx-model.js';
import { partitionByLayer, sharedSegmentForm } from '../src/graph/partition.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { runGraph } from './helpers/run-graph.js';

const D = 4;
const LAYERS = 3;
/** Exact in float16 (multiples of 1/64 below 1). */
const weight = (l: number) => Float32Array.from({ length: D * D }, (_, i) => (((i * 7 + l * 5) % 13) - 6) / 64);
const headWeight = Float32Array.from({ length: D * 2 }, (_, i) => ((i % 5) - 2) / 8);

/** x → 3 × (a_l = softmax(h·hᵀ + mask), tapped; h += a_l·h; h += tanh(h·W_l)); logits = h·W_out. */
async function graph(): Promise<GraphSpec> {
  const g = new GraphBuilder('toy');
  const x = g.input('x', 'float32', [1, 'seq', D]);
  const bias = g.input('bias', 'float32', [1, 'seq', 'seq']);
  // The mask is computed once, before the layers, and read by every layer.
  const mask = g.mul(bias, g.scalar(2));
  let h: Value = x;
  for (let l = 0; l < LAYERS; l++) {
    const w = g.initializer(`layers.${l}.w`, weight(l), [D, D], 'float16');
    const a = g.softmax(g.add(g.matMul(h, g.transpose(h, [0, 2, 1])), mask), -1);
    g.output(a, `attention.self.${l}`);
    h = g.add(h, g.matMul(a, h));
    h = g.add(h, g.tanh(g.matMul(h, w)));
  }
  g.output(g.matMul(h, g.initializer('head.w', headWeight, [D, 2])), 'logits');
  return (await g.buildGraph()).graph;
}

const layerOf = (name: string) => (/^attention\.self\.\d+$/.test(name) ? name.slice('attention.'.length) : undefined);

describe('graph partition', () => {
  const n = 5;
  const xs = Float32Array.from({ length: n * D }, (_, i) => Math.sin(i * 1.3));
  const bs = Float32Array.from({ length: n * n }, (_, i) => (i % n > Math.floor(i / n) ? -1e4 : 0));
  const feeds: Record<string, RuntimeTensor> = { x: { type: 'float32', dims: [1, n, D], data: xs }, bias: { type: 'float32', dims: [1, n, n], data: bs } };

  it('cuts at the residual stream: one segment per layer, only the stream and the mask carried; the head apart', async () => {
    const spec = await graph();
    const { segments, lastUse } = partitionByLayer(spec, layerOf);
    expect(segments.map((s) => s.layers)).toEqual([['self.0'], ['self.1'], ['self.2'], []]);
    segments.slice(0, LAYERS).forEach((s, l) => expect(s.outputs).toEqual([`attention.self.${l}`]));
    // The last layer is laid out as the middle one: the same graph on other weights (one shared session).
    const form = (g: GraphSpec) => sharedSegmentForm(g, (t) => t.name.startsWith('layers.')).key;
    expect(form(segments[2]!.graph)).toBe(form(segments[1]!.graph));
    expect(segments[3]!.outputs).toEqual(['logits']);
    expect(segments[3]!.graph.nodes.map((x) => x.opType)).toEqual(['MatMul', 'Identity']); // the head, and its output's name
    expect(segments[3]!.carriedIn).toEqual(segments[2]!.carriedOut);
    for (const s of segments.slice(1, LAYERS)) {
      expect(s.carriedIn).toHaveLength(2); // the residual stream and the mask
      // The 16-bit weight's Cast is in the segment that reads it, not carried.
      expect(s.graph.nodes.filter((x) => x.opType === 'Cast')).toHaveLength(1);
    }
    const mask = segments[1]!.carriedIn.find((v) => segments[2]!.carriedIn.includes(v))!;
    expect(lastUse.get(mask)).toBe(2);
    expect(segments[0]!.graph.inputs.map((i) => i.name).sort()).toEqual(['bias', 'x']);
  });

  it('leaves out what leads to no output: the last layer after its tap, without the head', async () => {
    const spec = await graph();
    // The same graph with only the attention taps as outputs: the last layer's update of the
    // stream and the head are dead (onnxruntime would run them all the same).
    const tapsOnly: GraphSpec = { ...spec, outputs: spec.outputs.filter((o) => layerOf(o.name) !== undefined) };
    const { segments } = partitionByLayer(tapsOnly, layerOf);
    expect(segments.map((s) => s.layers)).toEqual([['self.0'], ['self.1'], ['self.2']]);
    const last = segments[2]!;
    expect(last.graph.nodes.map((x) => x.opType)).not.toContain('Tanh');
    expect(last.graph.nodes.map((x) => x.opType)).not.toContain('Cast');
    expect(last.graph.initializers.map((t) => t.name)).toEqual([]);
    expect(last.carriedOut).toEqual([]);
    // The middle layers are cut as before (the last one's dead reads still place the cuts).
    expect(segments.slice(0, 2).map((s) => s.graph.nodes.length)).toEqual(partitionByLayer(spec, layerOf).segments.slice(0, 2).map((s) => s.graph.nodes.length));
    const whole = await runGraph(spec, feeds);
    const values: Record<string, RuntimeTensor> = { ...feeds };
    for (const s of segments) {
      const out = await runGraph(s.graph, values);
      Object.assign(values, out);
      for (const o of s.outputs) expect([...out[o]!.data], o).toEqual([...whole[o]!.data]);
    }
  });

  it('running the segments in order gives the whole graph bit for bit, and the float64 values', async () => {
    const spec = await graph();
    const whole = await runGraph(spec, feeds);
    const { segments } = partitionByLayer(spec, layerOf);
    const values: Record<string, RuntimeTensor> = { ...feeds };
    const outputs: Record<string, RuntimeTensor> = {};
    for (const s of segments) {
      const out = await runGraph(s.graph, values);
      Object.assign(values, out);
      for (const o of s.outputs) outputs[o] = out[o]!;
    }
    expect(Object.keys(outputs).sort()).toEqual(Object.keys(whole).sort());
    for (const [name, t] of Object.entries(whole)) expect([...outputs[name]!.data], name).toEqual([...t.data]);

    // Float64, written out here.
    let h = Array.from({ length: n }, (_, i) => Array.from({ length: D }, (_, j) => xs[i * D + j]!));
    for (let l = 0; l < LAYERS; l++) {
      const w = weight(l);
      const att = whole[`attention.self.${l}`]!.data as Float32Array;
      const probs = h.map((_, i) => {
        const s = h.map((row, j) => row.reduce((a, v, k) => a + v * h[i]![k]!, 0) + 2 * bs[i * n + j]!);
        const mx = Math.max(...s);
        const e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, b) => a + b, 0);
        return e.map((v) => v / z);
      });
      probs.forEach((row, i) => row.forEach((p, j) => expect(Math.abs(att[i * n + j]! - p)).toBeLessThan(1e-5)));
      h = h.map((row, i) => row.map((v, c) => v + probs[i]!.reduce((a, p, j) => a + p * h[j]![c]!, 0)));
      h = h.map((row) => row.map((v, j) => v + Math.tanh(row.reduce((a, r, k) => a + r * w[k * D + j]!, 0))));
    }
    const logits = whole.logits!.data as Float32Array;
    h.forEach((row, i) => [0, 1].forEach((c) => expect(Math.abs(logits[i * 2 + c]! - row.reduce((a, v, k) => a + v * headWeight[k * 2 + c]!, 0))).toBeLessThan(1e-5)));
  });

  it('a graph without layer outputs is one segment', async () => {
    const g = new GraphBuilder('plain');
    const x = g.input('x', 'float32', [1, 'seq', D]);
    g.output(g.tanh(x), 'y');
    const { segments } = partitionByLayer((await g.buildGraph()).graph, layerOf);
    expect(segments).toHaveLength(1);
    expect(segments[0]!.outputs).toEqual(['y']);
    expect(segments[0]!.carriedIn).toEqual([]);
  });
});
