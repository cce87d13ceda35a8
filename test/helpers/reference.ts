/**
 * Reading the fixtures' reference.json (outputs computed by Hugging Face transformers) and
 * comparing our tensors with them.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LayerStack } from '../../src/core/trace.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures');

export type Nested = number | Nested[];

export interface ReferenceInput {
  id: string;
  text: string;
  text_pair?: string;
  input_ids: number[];
  tokens: string[];
  token_type_ids?: number[];
  attentions?: Nested;
  queries?: Nested;
  keys?: Nested;
  last_hidden_state?: Nested;
  logits?: Nested;
  [key: string]: unknown;
}

export interface Reference {
  name: string;
  model_type: string;
  inputs: ReferenceInput[];
  attention: { num_layers: number | Record<string, number>; num_heads: number; num_kv_heads: number; head_dim: number };
  [key: string]: unknown;
}

export function readReference(fixture: string): Reference {
  return JSON.parse(readFileSync(join(FIXTURES, fixture, 'reference.json'), 'utf8')) as Reference;
}

/** Flattens a nested array of numbers into a Float64Array (row-major). */
export function flat(x: Nested): Float64Array {
  const out: number[] = [];
  const walk = (v: Nested): void => {
    if (typeof v === 'number') out.push(v);
    else for (const c of v) walk(c);
  };
  walk(x);
  return Float64Array.from(out);
}

/** Max |a - b| over two equally long arrays; Infinity when lengths differ. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : d;
  }
  return m;
}

/** Concatenates a LayerStack's layers ([layers][d0][rows][cols]) into one array. */
export function stackValues(stack: LayerStack | undefined): Float32Array {
  if (!stack) return new Float32Array(0);
  const n = stack.layers.reduce((s, l) => s + l.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const l of stack.layers) {
    out.set(l, o);
    o += l.length;
  }
  return out;
}

/**
 * numpy.allclose semantics, reported as the worst margin: max over i of |a − b| − (atol + rtol·|b|).
 * ≤ 0 means every element is within tolerance; Infinity when lengths differ or a value is NaN.
 */
export function allcloseExcess(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  let worst = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!) - (atol + rtol * Math.abs(b[i]!));
    if (!(e <= worst)) worst = Number.isNaN(e) ? Number.POSITIVE_INFINITY : e;
  }
  return worst;
}

/** Largest |value| of an array (0 when empty). */
export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** A named tensor of a reference input, flattened (an error naming it when the input has none). */
export function refTensor(input: ReferenceInput, key: string): Float64Array {
  const v = input[key];
  if (v === undefined) throw new Error(`reference input ${input.id} has no ${key}`);
  return flat(v as Nested);
}
