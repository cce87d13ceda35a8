/**
 * The heaviest fixture sweeps (every family through the deep-dive taps, integrated gradients on
 * every gradients.json input, completeness on every family) run in full under
 * `npm run test:deep` (ATTNSCOPE_DEEP_TESTS=1, which CI runs); `npm test` runs them on a few
 * representative families so it stays under five minutes on two cores.
 */
export const DEEP = process.env.ATTNSCOPE_DEEP_TESTS === '1';

/** `all` under test:deep, else the members of `all` that are in `quick`. */
export function deepOr<T>(all: readonly T[], quick: readonly T[]): T[] {
  return DEEP ? [...all] : all.filter((x) => quick.includes(x));
}
