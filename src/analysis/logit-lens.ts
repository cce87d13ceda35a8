/**
 * The logit lens of a trace (Trace.logitLens, TraceOptions.logitLens) as a grid of layers ×
 * positions and as flat table rows (CLI, CSV, the logit-lens view). Pure functions of a Trace.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Candidate, LogitLens, StackName, Token, Trace } from '../core/trace.js';

/** The logit lens as layers × positions, each cell the top tokens, most probable first. */
export interface LensGrid {
  stack: StackName;
  topK: number;
  /** One label per row: 'embeddings' (row 0, the embedding output), then 'layer 0', 'layer 1', … (each layer's output). */
  rows: string[];
  /** The tokens at the positions (the decoder's for encoder-decoders). */
  positions: Token[];
  /** cells[row][position]: top-k candidates of the readout of that row's residual at that position. */
  cells: Candidate[][][];
}

/** The label of lens row `row`: 'embeddings' for 0, else 'layer <row − 1>'. */
export function lensRowLabel(row: number): string {
  return row === 0 ? 'embeddings' : `layer ${row - 1}`;
}

/** The trace's logit lens, or one clear error saying how to record it. */
export function logitLensOf(trace: Trace): LogitLens {
  if (!trace.logitLens) throw new AttnscopeError('the trace has no logit lens (re-trace with --logit-lens K, or logitLens: K)');
  return trace.logitLens;
}

/** The logit lens of a trace as a grid of rows (embeddings, then each layer) × positions. */
export function logitLensGrid(trace: Trace): LensGrid {
  const lens = logitLensOf(trace);
  const positions = lens.stack === 'decoder' ? (trace.decoderTokens ?? []) : trace.tokens;
  const k = lens.topK;
  const cells = lens.layers.map((row, r) => {
    if (row.ids.length !== positions.length * k || row.probabilities.length !== row.ids.length) {
      throw new AttnscopeError(`logit lens row ${r}: ${row.ids.length} ids for ${positions.length} positions × top ${k}`);
    }
    return positions.map((_, p) => Array.from({ length: k }, (_, i): Candidate => {
      const at = p * k + i;
      return { id: row.ids[at]!, token: row.tokens[at] ?? String(row.ids[at]), probability: row.probabilities[at]! };
    }));
  });
  return { stack: lens.stack, topK: k, rows: lens.layers.map((_, r) => lensRowLabel(r)), positions, cells };
}

/** One candidate of one cell of the lens, as a flat table row. */
export interface LensTableRow {
  /** Lens row: 0 = embeddings, l + 1 = layer l. */
  row: number;
  /** 'embeddings' or 'layer <l>'. */
  layer: string;
  position: number;
  /** The input token at the position. */
  input: string;
  /** 1 = most probable. */
  rank: number;
  id: number;
  token: string;
  probability: number;
}

/** Every candidate of the grid, row by row, position by position, rank by rank. */
export function logitLensTable(grid: LensGrid): LensTableRow[] {
  const out: LensTableRow[] = [];
  grid.cells.forEach((row, r) => {
    row.forEach((cands, p) => {
      cands.forEach((c, i) => {
        out.push({ row: r, layer: grid.rows[r]!, position: p, input: grid.positions[p]?.text ?? '', rank: i + 1, id: c.id, token: c.token, probability: c.probability });
      });
    });
  });
  return out;
}
