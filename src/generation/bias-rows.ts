/**
 * The score bias of generation on demand, kept compact as the rows come: a position bias the model
 * adds (ALiBi: a row over the keys, the same for every query; T5's relative buckets: one value per
 * offset j − i) is held as that row or vector, allocated once for the whole sequence, and each
 * step's row is checked against it (bit for bit) and adds only its new key or offset. So a 4k-token
 * prompt and 256 new tokens hold O(heads · n) per layer instead of the [heads, n, n] rows dense
 * decoding assembles. A bias that is neither (or a step that breaks the form) is kept as rows, as
 * dense decoding does, from that step on (earlier steps rebuilt from the compact form).
 *
 * Outputs for model.assemble (engine/scores.ts collectScores): `score_bias.<stack>.<l>` [1, heads,
 * 1, total] (broadcast over the queries), `score_bias_relative.<stack>.<l>` [1, heads, 2·total − 1]
 * (offsets the model never computed — keys after the query, which the causal mask hides — are 0),
 * or the dense [1, heads, total, total] rows.
 */
import { relativeBiasOutput } from '../engine/scores.js';
import { tapName } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { StackName } from '../core/trace.js';
import { assembleRows, type StepRows } from './rows.js';

/**
 * One way the bias may be compact, with what the steps so far told of it: 'key' holds
 * values[h·cap + j] for keys j < known; 'relative' holds values[h·(2·cap − 1) + cap − 1 + d] for
 * offsets d = j − i in [lo, hi] (empty while lo > hi).
 */
interface Candidate {
  kind: 'key' | 'relative';
  values: Float32Array;
  known: number;
  lo: number;
  hi: number;
}

export class CompactBiasRows {
  /** Per output: the candidates still consistent with every step (key first), and the dense rows once none is. */
  private readonly candidates: Candidate[][];
  private readonly dense: (StepRows[] | null)[];
  private heads = 0;
  /** The (start, rows, width) of every step so far, to rebuild rows when the last candidate breaks. */
  private readonly shapes: { start: number; rows: number; width: number }[] = [];

  constructor(
    readonly stack: StackName,
    /** Outputs per step: the stack's layers (1 for a bias all layers share). */
    private readonly layers: number,
    /** Positions the sequence may reach (prompt + new tokens). */
    private readonly capacity: number,
  ) {
    this.candidates = Array.from({ length: layers }, () => []);
    this.dense = new Array<StepRows[] | null>(layers).fill(null);
  }

  /** The form each output is kept in ('key', 'relative' or 'dense'), for tests and readouts. */
  get kinds(): string[] {
    return this.candidates.map((c, l) => (this.dense[l] ? 'dense' : (c[0]?.kind ?? 'none')));
  }

  add(out: Readonly<Record<string, RuntimeTensor>>, start: number): void {
    let shape: { start: number; rows: number; width: number } | null = null;
    for (let l = 0; l < this.layers; l++) {
      const name = tapName('score_bias', this.stack, l);
      const t = out[name];
      if (!t || t.type !== 'float32') throw new Error(`graph output ${name} missing or not float32`);
      const [, heads, rows, width] = t.dims as [number, number, number, number];
      const data = t.data as Float32Array;
      // One row for a step of several queries: a row over the keys broadcast over them (ALiBi built per band on demand).
      const queries = out[tapName('queries', this.stack, 0)]?.dims[2] ?? rows;
      const broadcast = rows === 1 && queries > 1;
      shape = { start, rows: queries, width };
      if (this.shapes.length === 0 && l === 0) {
        this.heads = heads;
        const cap = this.capacity;
        for (const c of this.candidates) {
          c.push({ kind: 'key', values: new Float32Array(heads * cap), known: 0, lo: 1, hi: 0 });
          c.push({ kind: 'relative', values: new Float32Array(heads * (2 * cap - 1)), known: 0, lo: 1, hi: 0 });
        }
      }
      const dense = this.dense[l];
      if (dense) {
        dense.push(broadcast ? { start, rows: queries, width, layers: [repeatRows(data, heads, queries, width)] } : { start, rows, width, layers: [data] });
        continue;
      }
      const before = this.candidates[l]!;
      // A broadcast row fits 'key' (checked as that row at the step's last query); 'relative' only by chance: dropped.
      const alive = before.filter((c) => (broadcast ? c.kind === 'key' && fold(c, data, heads, start + queries - 1, 1, width, this.capacity) : fold(c, data, heads, start, rows, width, this.capacity)));
      if (alive.length === 0) {
        // Every earlier step fitted the last candidate alive before this one: rebuild them from it.
        this.dense[l] = [...this.rebuild(before[0]!), broadcast ? { start, rows: queries, width, layers: [repeatRows(data, heads, queries, width)] } : { start, rows, width, layers: [data] }];
      }
      this.candidates[l] = alive;
    }
    if (shape) this.shapes.push(shape);
  }

  /** The earlier steps' rows from a candidate (exactly what they were: each was checked against it). */
  private rebuild(c: Candidate): StepRows[] {
    const cap = this.capacity;
    return this.shapes.map(({ start, rows, width }) => {
      const data = new Float32Array(this.heads * rows * width);
      for (let h = 0; h < this.heads; h++) {
        for (let i = 0; i < rows; i++) {
          for (let j = 0; j < width; j++) {
            data[(h * rows + i) * width + j] = c.kind === 'key' ? c.values[h * cap + j]! : c.values[h * (2 * cap - 1) + cap - 1 + j - start - i]!;
          }
        }
      }
      return { start, rows, width, layers: [data] };
    });
  }

  /** The whole sequence's bias outputs (see the file's comment); every layer in one form. */
  outputs(total: number): Record<string, RuntimeTensor> {
    const cap = this.capacity;
    const heads = this.heads;
    const common = (['key', 'relative'] as const).find((k) => this.candidates.every((c, l) => !this.dense[l] && c.some((x) => x.kind === k)));
    const out: Record<string, RuntimeTensor> = {};
    for (let l = 0; l < this.layers; l++) {
      const c = common ? this.candidates[l]!.find((x) => x.kind === common)! : null;
      if (c?.kind === 'key') {
        const data = new Float32Array(heads * total);
        for (let h = 0; h < heads; h++) data.set(c.values.subarray(h * cap, h * cap + total), h * total);
        out[tapName('score_bias', this.stack, l)] = { type: 'float32', dims: [1, heads, 1, total], data };
      } else if (c?.kind === 'relative') {
        const w = 2 * total - 1;
        const data = new Float32Array(heads * w);
        const [lo, hi] = [Math.max(c.lo, -(total - 1)), Math.min(c.hi, total - 1)];
        for (let h = 0; h < heads; h++) data.set(c.values.subarray(h * (2 * cap - 1) + cap - 1 + lo, h * (2 * cap - 1) + cap + hi), h * w + total - 1 + lo);
        out[relativeBiasOutput(this.stack, l)] = { type: 'float32', dims: [1, heads, w], data };
      } else {
        const steps = this.dense[l] ?? this.rebuild(this.candidates[l]![0]!);
        const cols = Math.max(...steps.map((s) => s.width));
        const stack = assembleRows(steps, heads, total, cols);
        out[tapName('score_bias', this.stack, l)] = { type: 'float32', dims: [1, ...stack.dims], data: stack.layers[0]! };
      }
    }
    return out;
  }
}

/** A row over the keys per head [heads, 1, width] as `rows` equal rows [heads, rows, width]. */
function repeatRows(row: Float32Array, heads: number, rows: number, width: number): Float32Array {
  const out = new Float32Array(heads * rows * width);
  for (let h = 0; h < heads; h++) for (let i = 0; i < rows; i++) out.set(row.subarray(h * width, (h + 1) * width), (h * rows + i) * width);
  return out;
}

/**
 * Checks one step's rows [heads, rows, width] (queries start …) against what the candidate knows
 * (bit for bit) and adds what it did not know; false when they disagree (the candidate is dropped).
 */
function fold(c: Candidate, data: Float32Array, heads: number, start: number, rows: number, width: number, cap: number): boolean {
  if (start + rows > cap || width > cap) return false;
  const v = c.values;
  for (let i = 0; i < rows; i++) {
    const q = start + i;
    // The offsets of row i: [−q, width − 1 − q]; a row that leaves a gap after the known ones is not relative.
    if (c.kind === 'relative' && c.lo <= c.hi && (width - 1 - q < c.lo - 1 || -q > c.hi + 1)) return false;
    for (let h = 0; h < heads; h++) {
      const row = (h * rows + i) * width;
      if (c.kind === 'key') {
        const at = h * cap;
        for (let j = 0; j < width; j++) {
          const x = data[row + j]!;
          if (j < c.known) {
            if (!Object.is(v[at + j], x)) return false;
          } else v[at + j] = x;
        }
      } else {
        const at = h * (2 * cap - 1) + cap - 1 - q;
        for (let j = 0; j < width; j++) {
          const x = data[row + j]!;
          const d = j - q;
          if (d >= c.lo && d <= c.hi) {
            if (!Object.is(v[at + j], x)) return false;
          } else v[at + j] = x;
        }
      }
    }
    if (c.kind === 'key') c.known = Math.max(c.known, width);
    else if (c.lo > c.hi) [c.lo, c.hi] = [-q, width - 1 - q];
    else [c.lo, c.hi] = [Math.min(c.lo, -q), Math.max(c.hi, width - 1 - q)];
  }
  return true;
}
