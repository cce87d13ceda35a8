/**
 * Head types: one score per kind of behaviour for every head, a documented threshold for each,
 * and the head's top type. Rows, supports, renormalisation and `excludeFirstToken` are those of
 * head-metrics.ts (forced rows — support of one key — are left out; each counted row weighs the same).
 *
 * | type            | score (mean over counted rows unless said)                                   | threshold |
 * |-----------------|-------------------------------------------------------------------------------|-----------|
 * | previous_token  | weight on position i − 1 (0 where that key is not in the row's support)       | 0.4       |
 * | next_token      | weight on position i + 1 (0 for causal rows: never in the support)            | 0.4       |
 * | self            | weight on position i (`self` metric)                                          | 0.4       |
 * | sink            | weight on the first token (`sink` metric)                                     | 0.5       |
 * | separator       | weight on specials other than the first (`separator` metric)                  | 0.4       |
 * | punctuation     | weight on punctuation tokens (`punctuation` metric)                           | 0.4       |
 * | broad           | normalised row entropy (`entropy` metric)                                     | 0.85      |
 * | local           | weight within |i − j| ≤ 2 (local/positional: attends by position nearby)      | 0.7       |
 * | duplicate_token | weight on earlier occurrences of the query's token                           | 0.4       |
 * | induction       | weight on the tokens right after earlier occurrences of the query's token    | 0.4       |
 *
 * duplicate_token and induction are measured the standard way on a repeated random sequence
 * (probe.ts: BOS, then L random tokens, then the same L again; over the second copy's queries i,
 * induction = weight on i − L + 1, duplicate = weight on i − L). On any other trace they follow
 * TransformerLens' detection patterns: duplicate targets are the earlier keys with the query's
 * token id (diagonal excluded), induction targets the keys j ≤ i whose previous token j − 1 < i
 * has the query's id; averaged over the rows that have at least one target (NaN when no token repeats).
 *
 * Syntax, semantics and entity focus (Attention Atlas): the share of each row's attention on
 * function words, content words and named entities (word-classes.ts tags them with wink-nlp);
 * reported as scores without a type (they follow the mix of words in the text), NaN without classes.
 *
 * The top type is the type whose score is the largest multiple of its threshold, among those at or
 * above it; null (no type) otherwise, e.g. on uniform attention over a short causal prefix.
 *
 * Pure functions of a Trace; isomorphic.
 */
import type { StackName, Trace } from '../core/trace.js';
import { HEAD_METRIC_NAMES, defaultStack, headMetricsEach, rowGeometry, stackTokens, type HeadMetricName, type HeadMetricOptions, type HeadMetricRow, type MetricValues } from './head-metrics.js';

/** Word-class bits of a key token (word-classes.ts computes them with wink-nlp). */
export const WORD_FUNCTION = 1;
export const WORD_CONTENT = 2;
export const WORD_ENTITY = 4;

export const HEAD_TYPE_NAMES = ['previous_token', 'next_token', 'self', 'sink', 'separator', 'punctuation', 'broad', 'local', 'duplicate_token', 'induction'] as const;
export type HeadTypeName = (typeof HEAD_TYPE_NAMES)[number];

/** Each type's threshold (score at or above it: the head is of that type). */
export const HEAD_TYPE_THRESHOLDS: Readonly<Record<HeadTypeName, number>> = {
  previous_token: 0.4,
  next_token: 0.4,
  self: 0.4,
  sink: 0.5,
  separator: 0.4,
  punctuation: 0.4,
  broad: 0.85,
  local: 0.7,
  duplicate_token: 0.4,
  induction: 0.4,
};

/** Which table column holds each type's score (types measured by a metric share its column). */
export const HEAD_TYPE_COLUMN: Readonly<Record<HeadTypeName, HeadColumn>> = {
  previous_token: 'previous_token',
  next_token: 'next_token',
  self: 'self',
  sink: 'sink',
  separator: 'separator',
  punctuation: 'punctuation',
  broad: 'entropy',
  local: 'local',
  duplicate_token: 'duplicate_token',
  induction: 'induction',
};

/** Scores with no metric column of their own. */
export const HEAD_SCORE_NAMES = ['previous_token', 'next_token', 'local', 'duplicate_token', 'induction', 'syntax_focus', 'semantic_focus', 'entity_focus'] as const;
export type HeadScoreName = (typeof HEAD_SCORE_NAMES)[number];

export type HeadColumn = HeadMetricName | HeadScoreName;
/** Every numeric column of the head table, in order (after `layer` and `head`). */
export const HEAD_COLUMNS: readonly HeadColumn[] = [...HEAD_METRIC_NAMES, ...HEAD_SCORE_NAMES];

/** One row of the head table: position, every metric and score, and the top type. */
export type HeadTableRow = { layer: number; head: number } & Record<HeadColumn, number> & {
  top_type: HeadTypeName | null;
  /** The top type's score (NaN without a type). */
  top_score: number;
};

export interface HeadTableOptions extends HeadMetricOptions {
  /**
   * The trace is the standard repeated probe: `prefix` tokens (BOS) then a random sequence of
   * `length` tokens repeated once; duplicate_token and induction follow its positions.
   */
  repeat?: { prefix: number; length: number };
  /** Word classes of the key tokens (word-classes.ts: WORD_FUNCTION | WORD_CONTENT | WORD_ENTITY bits). */
  wordClasses?: Uint8Array;
  /** Called with each layer's rows as soon as the layer is done (progress; a view filling in). */
  onLayer?: (rows: HeadTableRow[]) => void;
}

/** The top type of a row of scores: largest score/threshold ratio at or above 1, or null. */
export function topType(row: Readonly<Record<HeadColumn, number>>): { type: HeadTypeName | null; score: number } {
  let best: HeadTypeName | null = null;
  let bestRatio = 1;
  for (const t of HEAD_TYPE_NAMES) {
    const v = row[HEAD_TYPE_COLUMN[t]];
    const ratio = v / HEAD_TYPE_THRESHOLDS[t];
    if (ratio >= bestRatio && !(best !== null && ratio === bestRatio)) {
      best = t;
      bestRatio = ratio;
    }
  }
  return { type: best, score: best === null ? NaN : row[HEAD_TYPE_COLUMN[best]] };
}

/**
 * The head table of a stack (default: `defaultStack`): every metric of `headMetrics` plus the
 * type scores of the module comment, one row per (layer, head), layer-major.
 */
export function headTable(trace: Trace, stackName?: StackName, options: HeadTableOptions = {}): HeadTableRow[] {
  const stack = stackName ?? defaultStack(trace);
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const g = rowGeometry(s, stack);
  const { heads, nq, nk, shift } = g;
  const { keys } = stackTokens(trace, stack);
  const classes = options.wordClasses;
  if (classes && classes.length !== nk) throw new Error(`wordClasses has ${classes.length} entries for ${nk} keys`);
  const repeat = options.repeat;
  if (repeat && (stack === 'cross' || shift !== 0 || nq !== repeat.prefix + 2 * repeat.length)) {
    throw new Error(`the trace is not a repeated probe of ${repeat.prefix} + 2 × ${repeat.length} tokens`);
  }
  // Targets of duplicate/induction per query from token ids (when not a probe): CSR lists.
  const dupStart = new Int32Array(nq + 1);
  const indStart = new Int32Array(nq + 1);
  const dupList: number[] = [];
  const indList: number[] = [];
  if (!repeat && stack !== 'cross') {
    const ids = keys.map((t) => t.id);
    for (let q = 0; q < nq; q++) {
      const qp = q + shift;
      dupStart[q] = dupList.length;
      indStart[q] = indList.length;
      // Earlier occurrences k < i of the query's id: duplicate targets k, induction targets k + 1.
      const id = ids[qp];
      for (let k = 0; k < qp; k++) {
        if (ids[k] !== id) continue;
        dupList.push(k);
        indList.push(k + 1);
      }
    }
    dupStart[nq] = dupList.length;
    indStart[nq] = indList.length;
  }
  // The type scores of each head, taken in headMetrics' pass from its row sums (rows it counts).
  const scoresOf: Record<HeadScoreName, number>[] = [];
  const tableRow = (m: HeadMetricRow, scores: Record<HeadScoreName, number>): HeadTableRow => {
    const row = { ...m, ...scores } as Omit<HeadTableRow, 'top_type' | 'top_score'>;
    const top = topType(row);
    return { ...row, top_type: top.type, top_score: top.score };
  };
  let done = 0;
  const onLayer = options.onLayer;
  const layerDone = onLayer
    ? (_layer: number, rows: readonly HeadMetricRow[]) => {
        onLayer(rows.map((m, i) => tableRow(m, scoresOf[done + i]!)));
        done += rows.length;
      }
    : undefined;
  // The word classes' sums come from headMetrics' pass (its key groups: bits 0, 1, 2 are the classes').
  const metrics = headMetricsEach(trace, stack, { ...options, keyGroups: classes }, ({ W, off, support, rowSums, counted, groupSums }) => {
    let prev = 0;
    let next = 0;
    let local = 0;
    let dup = 0;
    let ind = 0;
    let repRows = 0;
    let syn = 0;
    let sem = 0;
    let ent = 0;
    let nRows = 0;
    // The renormalised weight of key k of the current row (0 off the support), read where it is needed.
    let base = 0;
    let inv = 0;
    const at = (k: number): number => (k >= 0 && k < nk && support[base + k] === 1 ? W[off + base + k]! * inv : 0);
    for (let q = 0; q < nq; q++) {
      if (counted[q] !== 1) continue;
      base = q * nk;
      inv = 1 / rowSums[q]!;
      nRows++;
      const qp = q + shift;
      if (stack !== 'cross') {
        prev += at(qp - 1);
        next += at(qp + 1);
        for (let k = qp - 2; k <= qp + 2; k++) local += at(k);
      }
      if (repeat) {
        const L = repeat.length;
        if (qp >= repeat.prefix + L) {
          dup += at(qp - L);
          ind += at(qp - L + 1);
          repRows++;
        }
      } else if (dupStart[q + 1]! > dupStart[q]!) {
        for (let i = dupStart[q]!; i < dupStart[q + 1]!; i++) dup += at(dupList[i]!);
        for (let i = indStart[q]!; i < indStart[q + 1]!; i++) ind += at(indList[i]!);
        repRows++;
      }
    }
    if (groupSums) {
      syn = groupSums[0]!;
      sem = groupSums[1]!;
      ent = groupSums[2]!;
    }
    const nan = nRows === 0;
    scoresOf.push({
      previous_token: nan || stack === 'cross' ? NaN : prev / nRows,
      next_token: nan || stack === 'cross' ? NaN : next / nRows,
      local: nan || stack === 'cross' ? NaN : local / nRows,
      duplicate_token: repRows ? dup / repRows : NaN,
      induction: repRows ? ind / repRows : NaN,
      syntax_focus: classes && !nan ? syn / nRows : NaN,
      semantic_focus: classes && !nan ? sem / nRows : NaN,
      entity_focus: classes && !nan ? ent / nRows : NaN,
    });
  }, layerDone);
  return metrics.rows.map((m, i) => tableRow(m, scoresOf[i]!));
}

/**
 * `parts` contiguous layer ranges of nearly equal cost covering `layers` layers, for computing a
 * head table in parallel (`HeadTableOptions.layers`; the tables of the ranges, concatenated in
 * order, are the model's table). A range that does not start at layer 0 also reads the first
 * layer when js_from_first is computed (`withFirstLayer`): not its metrics, only what the later
 * layers compare with (renormalised rows, one logarithm per weight against a full layer's two and
 * the rest of the scan), counted as FIRST_LAYER_COST of a layer. Fewer ranges when there are
 * fewer layers.
 */
export function headTableRanges(layers: number, parts: number, withFirstLayer = true): { from: number; to: number }[] {
  if (!(Number.isInteger(layers) && layers > 0)) throw new Error(`headTableRanges: expected a positive layer count, got ${layers}`);
  const k = Math.max(1, Math.min(Math.floor(parts), layers));
  const extra = withFirstLayer ? FIRST_LAYER_COST : 0;
  // Part 0 costs its own layers; each later part its layers plus the first layer's re-read.
  const perPart = (layers + extra * (k - 1)) / k;
  const out: { from: number; to: number }[] = [];
  let from = 0;
  for (let i = 0; i < k; i++) {
    const left = k - i;
    const want = i === 0 ? perPart : perPart - extra;
    let to = i === k - 1 ? layers : Math.min(layers - (left - 1), from + Math.max(1, Math.round(want)));
    if (to <= from) to = from + 1;
    out.push({ from, to });
    from = to;
  }
  return out;
}

/** What re-reading the first layer costs a range that does not hold it, in layers (measured: bench/analysis-heads.ts). */
const FIRST_LAYER_COST = 0.3;

/** The mean of several tables of the same model (NaN entries skipped), with top types recomputed. */
export function averageHeadTables(tables: readonly (readonly HeadTableRow[])[]): HeadTableRow[] {
  if (tables.length === 0) return [];
  const n = tables[0]!.length;
  if (tables.some((t) => t.length !== n)) throw new Error('averageHeadTables: tables of different sizes');
  const out: HeadTableRow[] = [];
  for (let i = 0; i < n; i++) {
    const first = tables[0]![i]!;
    const values = {} as Record<HeadColumn, number>;
    for (const c of HEAD_COLUMNS) {
      let sum = 0;
      let count = 0;
      for (const t of tables) {
        const v = t[i]![c];
        if (Number.isNaN(v)) continue;
        sum += v;
        count++;
      }
      // max_weight is a max over rows; over samples its max is kept too.
      values[c] = count === 0 ? NaN : c === 'max_weight' ? Math.max(...tables.map((t) => t[i]![c]).filter((v) => !Number.isNaN(v))) : sum / count;
    }
    const top = topType(values);
    out.push({ layer: first.layer, head: first.head, ...values, top_type: top.type, top_score: top.score });
  }
  return out;
}

/** The heads (layer, head, score) whose score of `type` reaches its threshold, strongest first. */
export function headsOfType(table: readonly HeadTableRow[], type: HeadTypeName): { layer: number; head: number; score: number }[] {
  const col = HEAD_TYPE_COLUMN[type];
  return table
    .filter((r) => r[col] >= HEAD_TYPE_THRESHOLDS[type])
    .map((r) => ({ layer: r.layer, head: r.head, score: r[col] }))
    .sort((a, b) => b.score - a.score);
}

export type { MetricValues };

/** The CSV header of a head table: layer, head, every column of HEAD_COLUMNS, top_type, top_score. */
export const HEAD_TABLE_HEADER: readonly string[] = ['layer', 'head', ...HEAD_COLUMNS, 'top_type', 'top_score'];

/** A number as a table writes it: NaN empty (CSV) or null (JSON), else at most 6 significant digits. */
function cell(v: number): number | null {
  return Number.isFinite(v) ? Number(v.toPrecision(6)) : null;
}

/** The table as plain JSON objects (NaN as null), keys in HEAD_TABLE_HEADER order. */
export function headTableJsonRows(table: readonly HeadTableRow[]): Record<string, number | string | null>[] {
  return table.map((r) => {
    const o: Record<string, number | string | null> = { layer: r.layer, head: r.head };
    for (const c of HEAD_COLUMNS) o[c] = cell(r[c]);
    o.top_type = r.top_type;
    o.top_score = cell(r.top_score);
    return o;
  });
}

/** The table as CSV (RFC 4180; header HEAD_TABLE_HEADER; empty cells for NaN and for no type). */
export function headTableCsv(table: readonly HeadTableRow[]): string {
  const lines = [HEAD_TABLE_HEADER.join(',')];
  for (const o of headTableJsonRows(table)) lines.push(HEAD_TABLE_HEADER.map((c) => (o[c] === null ? '' : String(o[c]))).join(','));
  return `${lines.join('\n')}\n`;
}
