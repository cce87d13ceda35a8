/** Shared command-line parsing helpers. */
import { AttnscopeError } from '../core/errors.js';

/** Parses "1,2,3" (spaces allowed) into integers, naming the flag on error. */
export function parseIdList(value: string | undefined, flag: string): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(/[\s,]+/).filter((p) => p !== '');
  if (parts.length === 0) throw new AttnscopeError(`${flag}: expected a comma-separated list of integers`);
  return parts.map((p) => {
    if (!/^-?\d+$/.test(p)) throw new AttnscopeError(`${flag}: '${p}' is not an integer`);
    const n = Number(p);
    if (n < 0) throw new AttnscopeError(`${flag}: '${p}' is negative`);
    return n;
  });
}

export const MODEL_OPTIONS = {
  revision: { type: 'string' },
  offline: { type: 'boolean' },
  threads: { type: 'string' },
} as const;

export function parsePositiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new AttnscopeError(`${flag}: expected a positive integer, got '${value}'`);
  return n;
}

export function parseThreads(value: string | undefined): number | undefined {
  return parsePositiveInt(value, '--threads');
}
