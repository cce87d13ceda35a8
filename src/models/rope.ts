/**
 * Rotary position embedding (the "rotate_half" layout of Llama, GPT-NeoX, Qwen2, Gemma, ...).
 * The cos/sin tables are computed here in float32 exactly as transformers does and fed to the
 * graph; the graph applies the rotation to the first `rotaryDims` dims of each head.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import type { GraphBuilder, Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { checkConfigValue, type ModelConfig } from './config.js';

export interface RopeSpec {
  base: number;
  /** Number of leading dims of each head that are rotated (even). */
  rotaryDims: number;
  headDim: number;
  /** rope_scaling of the config, when present (linear, dynamic, llama3 ...). */
  scaling?: Readonly<Record<string, unknown>>;
  /** Multiplier applied to cos and sin (1 unless the scaling type defines one). */
  attentionFactor?: number;
  /**
   * Pairing of the rotated dims: 'half' (default; rotate_half, dim i with i + d/2) or
   * 'interleaved' (GPT-J's rotate_every_two, Cohere: dims (2i, 2i+1) form a pair).
   */
  style?: 'half' | 'interleaved';
}

const f = Math.fround;

/** transformers' inv_freq: 1 / base^(2i/dim), in float32, with rope_scaling applied. */
export function inverseFrequencies(spec: RopeSpec): Float32Array {
  const half = spec.rotaryDims / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) inv[i] = f(1 / f(Math.pow(spec.base, f(f(2 * i) / spec.rotaryDims))));
  const scaling = spec.scaling;
  const type = scaling ? String(scaling.rope_type ?? scaling.type ?? 'default') : 'default';
  if (type === 'linear') {
    const factor = Number(scaling!.factor);
    for (let i = 0; i < half; i++) inv[i] = f(inv[i]! / factor);
  } else if (type === 'llama3') {
    const factor = Number(scaling!.factor);
    const lowFactor = Number(scaling!.low_freq_factor);
    const highFactor = Number(scaling!.high_freq_factor);
    const oldContext = Number(scaling!.original_max_position_embeddings);
    const lowWavelen = oldContext / lowFactor;
    const highWavelen = oldContext / highFactor;
    for (let i = 0; i < half; i++) {
      const freq = inv[i]!;
      const wavelen = (2 * Math.PI) / freq;
      if (wavelen > lowWavelen) inv[i] = f(freq / factor);
      else if (wavelen >= highWavelen) {
        const smooth = (oldContext / wavelen - lowFactor) / (highFactor - lowFactor);
        inv[i] = f((1 - smooth) * (freq / factor) + smooth * freq);
      }
    }
  }
  return inv;
}

/**
 * cos and sin tables [positions, rotaryDims]: the half-table repeated twice, as `cat(freqs, freqs)`,
 * or with style 'interleaved' each entry repeated in place, as `repeat_interleave(freqs, 2)`.
 */
export function ropeTables(spec: RopeSpec, positions: readonly number[]): { cos: Float32Array; sin: Float32Array } {
  const inv = inverseFrequencies(spec);
  const half = inv.length;
  const d = spec.rotaryDims;
  const factor = spec.attentionFactor ?? 1;
  const interleaved = spec.style === 'interleaved';
  const cos = new Float32Array(positions.length * d);
  const sin = new Float32Array(positions.length * d);
  positions.forEach((p, row) => {
    for (let i = 0; i < half; i++) {
      const angle = f(f(p) * inv[i]!);
      const c = f(f(Math.cos(angle)) * factor);
      const s = f(f(Math.sin(angle)) * factor);
      const [a, b] = interleaved ? [2 * i, 2 * i + 1] : [i, half + i];
      cos[row * d + a] = c;
      cos[row * d + b] = c;
      sin[row * d + a] = s;
      sin[row * d + b] = s;
    }
  });
  return { cos, sin };
}

/** Reads the rotary settings shared by the Llama family from a config. */
export function ropeFromConfig(config: ModelConfig, headDim: number, rotaryDims = headDim): RopeSpec {
  const scaling = config.object('rope_scaling') ?? undefined;
  const params = config.object('rope_parameters');
  const base = config.num('rope_theta', params && typeof params.rope_theta === 'number' ? params.rope_theta : 10000);
  checkConfigValue(config.source, 'rope_theta', base);
  if (scaling) {
    // Every scaling type divides frequencies by `factor`, and llama3 also reads these.
    for (const key of ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings']) {
      const v = scaling[key];
      if (v !== undefined && v !== null && !(typeof v === 'number' && Number.isFinite(v) && v > 0)) {
        throw new AttnscopeError(`${config.source}: rope_scaling.${key} is ${quote(v)}; allowed: a number above 0`);
      }
    }
  }
  return { base, rotaryDims, headDim, scaling };
}

/**
 * Applies the rotation to x [1, heads, seq, headDim] with cos/sin [1, 1, seq, rotaryDims]:
 * x·cos + rotate_half(x)·sin (rotate_every_two with style 'interleaved') on the first rotaryDims
 * dims; the rest pass through.
 */
export function applyRotary(g: GraphBuilder, x: Value, cos: Value, sin: Value, spec: RopeSpec): Value {
  const d = spec.rotaryDims;
  const half = d / 2;
  const partial = d < spec.headDim;
  const rot = partial ? g.slice(x, [0], [d], [3]) : x;
  let rotated: Value;
  if (spec.style === 'interleaved') {
    // rotate_every_two: (x0, x1, x2, x3, ...) → (−x1, x0, −x3, x2, ...).
    const pairs = g.reshape(rot, [0, 0, 0, half, 2]);
    const [even, odd] = g.split(pairs, [1, 1], 4) as [Value, Value];
    rotated = g.reshape(g.concat([g.neg(odd), even], 4), [0, 0, 0, d]);
  } else {
    const [x1, x2] = g.split(rot, [half, half], 3) as [Value, Value];
    rotated = g.concat([g.neg(x2), x1], 3);
  }
  const out = g.add(g.mul(rot, cos), g.mul(rotated, sin));
  if (!partial) return out;
  const pass = g.slice(x, [d], [spec.headDim], [3]);
  return g.concat([out, pass], 3);
}

/** The cos/sin tables as graph inputs `rope_cos` / `rope_sin` [1, 1, seq, rotaryDims]. */
export interface Rotary {
  cos: Value;
  sin: Value;
}

export function rotaryInputs(g: GraphBuilder, spec: RopeSpec): Rotary {
  return {
    cos: g.input('rope_cos', 'float32', [1, 1, 'seq', spec.rotaryDims]),
    sin: g.input('rope_sin', 'float32', [1, 1, 'seq', spec.rotaryDims]),
  };
}

/** The feeds of rotaryInputs for `n` tokens at positions past … past + n − 1. */
export function rotaryFeeds(spec: RopeSpec, n: number, past: number): { rope_cos: RuntimeTensor; rope_sin: RuntimeTensor } {
  const { cos, sin } = ropeTables(spec, Array.from({ length: n }, (_, i) => past + i));
  const dims = [1, 1, n, spec.rotaryDims];
  return { rope_cos: { type: 'float32', dims, data: cos }, rope_sin: { type: 'float32', dims, data: sin } };
}
