/**
 * The head view of a long input, limited to what a screen can show: a virtualised strip of token
 * rows (only the rows in view exist), and for each query in view its top-k keys per head, read a
 * band of rows at a time from an AttentionSource; a search over the token texts and jump-to-token.
 * Plain functions here (tested without a browser); web/views/head-long.ts draws them.
 *
 * Isomorphic: imports nothing from Node.
 */

/** Height of one token row of the strip in CSS pixels. */
export const STRIP_ROW = 18;
/** Rows rendered above and below the visible ones. */
export const STRIP_OVERSCAN = 12;
/** Rows read per block when computing top-k keys (a band of a source computed on demand costs whole rows). */
export const TOPK_CHUNK = 64;
/** Largest k offered. */
export const TOPK_MAX = 20;

/** The rows a strip renders: those in [scrollTop, scrollTop + height) and `overscan` either side. */
export function stripRange(scrollTop: number, height: number, n: number, row = STRIP_ROW, overscan = STRIP_OVERSCAN): { first: number; last: number } {
  const first = Math.max(0, Math.floor(scrollTop / row) - overscan);
  const last = Math.min(n, Math.ceil((scrollTop + height) / row) + overscan);
  return { first, last };
}

/** The scrollTop that centres row i in a strip of the given height (clamped to the strip). */
export function scrollToRow(i: number, height: number, n: number, row = STRIP_ROW): number {
  return Math.max(0, Math.min(n * row - height, (i + 0.5) * row - height / 2));
}

/** The top k keys of each row of a block (rows × nk), strongest first; ties by key index. Zero weights are never listed. */
export function topKeys(block: Float32Array, rows: number, nk: number, k: number): { index: Int32Array; value: Float32Array } {
  const index = new Int32Array(rows * k).fill(-1);
  const value = new Float32Array(rows * k);
  for (let r = 0; r < rows; r++) {
    const base = r * k;
    let filled = 0;
    for (let c = 0; c < nk; c++) {
      const v = block[r * nk + c]!;
      if (!(v > 0)) continue;
      if (filled === k && v <= value[base + k - 1]!) continue;
      // Insert into the sorted top list (descending; equal values keep the lower key first).
      let i = filled < k ? filled++ : k - 1;
      while (i > 0 && value[base + i - 1]! < v) {
        value[base + i] = value[base + i - 1]!;
        index[base + i] = index[base + i - 1]!;
        i--;
      }
      value[base + i] = v;
      index[base + i] = c;
    }
  }
  return { index, value };
}

/**
 * Tokens whose label contains `query` (case-insensitive), in order; `#123` or a bare number also
 * names position 123 (jump-to-token). Empty for an empty query.
 */
export function searchTokens(labels: readonly string[], query: string): number[] {
  const q = query.trim();
  if (!q) return [];
  const pos = /^#?(\d+)$/.exec(q);
  const out: number[] = [];
  if (pos) {
    const i = Number(pos[1]);
    if (i < labels.length) out.push(i);
    if (q.startsWith('#')) return out;
  }
  const needle = q.toLowerCase();
  for (let i = 0; i < labels.length; i++) if (labels[i]!.toLowerCase().includes(needle) && !out.includes(i)) out.push(i);
  return out;
}
