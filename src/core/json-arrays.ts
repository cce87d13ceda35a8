/** Reading nested JSON arrays of numbers (trace files) with one clear error naming the field. */
import { AttnscopeError } from './errors.js';
import type { Matrix } from './trace.js';

export function isNumberArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number');
}

/** [row][col] arrays as a float32 Matrix; every row as long as the first; `rows` when it must be that many. */
export function matrixFromJson(value: unknown, where: string, rows?: number): Matrix {
  if (!Array.isArray(value) || (rows !== undefined && value.length !== rows)) {
    throw new AttnscopeError(`${where}: expected ${rows !== undefined ? `[position][width] arrays with ${rows} positions` : '[row][col] arrays'}`);
  }
  const cols = Array.isArray(value[0]) ? (value[0] as unknown[]).length : 0;
  const data = new Float32Array(value.length * cols);
  value.forEach((row: unknown, r) => {
    if (!isNumberArray(row) || row.length !== cols) throw new AttnscopeError(`${where}: row ${r} is not ${cols} numbers`);
    data.set(row, r * cols);
  });
  return { dims: [value.length, cols], data };
}
