/**
 * What the layer-by-layer tests (test/layerwise.test.ts, test/layerwise-shared.test.ts) share: the
 * fixtures they run on, the trace options of a reference input with every tap, and the paths at
 * which a trace gathered layer by layer differs from the whole-graph trace.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES, type ReferenceInput } from './reference.js';

/** The fixtures with reference outputs, without the storage variants of bert and gpt2 and stories260k. */
export const LAYERWISE_FIXTURES = readdirSync(FIXTURES).filter((f) => existsSync(join(FIXTURES, f, 'reference.json')) && !['bert-fp16', 'bert-bf16', 'bert-sharded', 'gpt2-bin', 'stories260k'].includes(f));

/** A reference input's ids (type ids, decoder ids where it has them) with queries/keys, hidden states, logits and residuals tapped. */
export function allTapsOptions(input: ReferenceInput): { ids: number[]; typeIds?: number[]; decoderIds?: number[]; qk: true; hidden: true; logits: true; residuals: true } {
  const decoderIds = input.decoder_input_ids as number[] | undefined;
  return {
    ids: input.input_ids,
    ...(input.token_type_ids ? { typeIds: input.token_type_ids } : {}),
    ...(decoderIds ? { decoderIds } : {}),
    qk: true,
    hidden: true,
    logits: true,
    residuals: true,
  };
}

/**
 * Paths at which two values differ (the first element of each typed array that does): typed arrays
 * element by element, floats by more than `tol` relative to max(1, |b|) (0: bit for bit, with
 * Object.is), everything else exactly.
 */
export function differences(a: unknown, b: unknown, tol = 0, path = 'trace'): string[] {
  if (ArrayBuffer.isView(a) && ArrayBuffer.isView(b)) {
    const x = a as unknown as ArrayLike<number | bigint>;
    const y = b as unknown as ArrayLike<number | bigint>;
    if (x.length !== y.length) return [`${path}: length ${x.length} vs ${y.length}`];
    const float = a instanceof Float32Array || a instanceof Float64Array;
    for (let i = 0; i < x.length; i++) {
      const [u, v] = [x[i]!, y[i]!];
      const same = tol > 0 && float ? Math.abs((u as number) - (v as number)) <= tol * Math.max(1, Math.abs(v as number)) : Object.is(u, v);
      if (!same) return [`${path}[${i}]: ${String(u)} vs ${String(v)}`];
    }
    return [];
  }
  if (typeof a !== 'object' || a === null || typeof b !== 'object' || b === null) return Object.is(a, b) ? [] : [`${path}: ${String(a)} vs ${String(b)}`];
  const out: string[] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out.push(...differences((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], tol, `${path}.${k}`));
  return out;
}
