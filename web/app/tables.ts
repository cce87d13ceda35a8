/** The app's tables as flat rows (CSV / JSON downloads). */
import type { Trace } from '../../src/core/trace.js';
import type { AnalysisData } from '../../src/server/protocol.js';

export interface PredictionRow {
  /** Position of the token the prediction is made at. */
  position: number;
  token: string;
  /** 1 = the most probable candidate. */
  rank: number;
  candidate: string;
  probability: number;
}

/** Every candidate of every prediction, in position then rank order. */
export function predictionRows(trace: Trace): PredictionRow[] {
  const tokens = trace.decoderTokens ?? trace.tokens;
  return (trace.predictions ?? []).flatMap((p) =>
    p.candidates.map((c, i) => ({ position: p.position, token: tokens[p.position]?.text ?? '', rank: i + 1, candidate: c.token, probability: c.probability })),
  );
}

/** A flat table: column names, then rows of cells. */
export interface FlatTable {
  columns: readonly string[];
  rows: (string | number)[][];
}

/** An analysis view's data as one flat table (CSV / JSON downloads of the analysis tab on screen). */
export function analysisTable(result: AnalysisData): FlatTable {
  switch (result.view) {
    case 'saliency': {
      const d = result.data;
      return { columns: ['method', 'position', 'token', 'score'], rows: d.rows.flatMap((r) => r.scores.map((v, p) => [r.method, p, d.tokens[p]!, v])) };
    }
    case 'importance': {
      const d = result.data;
      return { columns: ['layer', 'head', d.signed ? 'dT_dgate' : 'importance'], rows: d.values.flatMap((row, l) => row.map((v, hd) => [l, hd, v])) };
    }
    case 'ablation': {
      const d = result.data;
      return { columns: ['token', 'before', 'after'], rows: d.candidates.map((c) => [c.token, c.before, c.after]) };
    }
    case 'lens': {
      const d = result.data;
      return { columns: ['layer', 'position', 'token', 'rank', 'candidate', 'probability'], rows: d.cells.flatMap((row, r) => row.flatMap((cands, p) => cands.map((c, i) => [d.layers[r]!, p, d.tokens[p]!, i + 1, c.token, c.probability]))) };
    }
    case 'deep': {
      const d = result.data;
      const cross = d.layers.some((l) => l.cross);
      return {
        columns: ['layer', 'position', 'token', 'residual_norm', 'attention_update', 'attention_relative', ...(cross ? ['cross_update', 'cross_relative'] : []), 'mlp_update', 'mlp_relative'],
        rows: d.layers.flatMap((l, li) => d.tokens.map((t, p) => [li, p, t, l.residual[p]!, l.attention.norm[p]!, l.attention.relative[p]!, ...(cross ? [l.cross?.norm[p] ?? 0, l.cross?.relative[p] ?? 0] : []), l.mlp.norm[p]!, l.mlp.relative[p]!])),
      };
    }
  }
}

/** CSV of a flat table (RFC 4180 quoting). */
export function tableCsv(t: FlatTable): string {
  const cell = (v: string | number) => (typeof v === 'number' ? String(v) : /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  return `${[t.columns.join(','), ...t.rows.map((r) => r.map(cell).join(','))].join('\n')}\n`;
}

/** JSON of a flat table: one object per row. */
export function tableJson(t: FlatTable): string {
  return `${JSON.stringify(t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i]]))), null, 1)}\n`;
}
