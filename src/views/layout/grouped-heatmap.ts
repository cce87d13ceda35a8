/**
 * Word- and sentence-level heatmap layout, computed once as plain data: one layer's head (or the
 * mean / max over its heads) summarised per word or per sentence (analysis/words.ts: word units by
 * the tokens' word indices, sentence units by Intl.Segmenter), and the token-level block behind one
 * cell ("drill"). Both are laid out by the heatmap's matrixGridLayout, so labels, legend, value
 * text and colours are the heatmap's.
 *
 * Rules (how a block of token weights A[U, V] becomes one cell):
 * - 'mean'  the block's mean (Attention Atlas's inter-sentence attention; both sides mean), over
 *           the entries the model could attend: masked (causal) entries are left out, so a
 *           diagonal block of a decoder is not halved by the zeros above its diagonal;
 * - 'max'   the block's largest weight;
 * - 'sum'   the block's total (the matrix total is preserved);
 * - 'share' the mean over U's query tokens of their summed weight on V (BertViz's word rule;
 *           a row-stochastic matrix stays row-stochastic).
 * For max, sum and share masked entries count as the zeros they are; a cell whose whole block is
 * masked is blank.
 *
 * Texts: sentence units need each segment's text. When it is not given, it is rebuilt from the
 * tokens (each token's text, without word markers, at its character offsets; gaps are spaces),
 * which segments into the same sentences whenever the tokens spell the text.
 *
 * The SVG writer (src/views/svg/grouped-heatmap.ts) and the page (web/views/grouped.ts) paint it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { aggregateHeads, headMatrix, maskedEntries } from '../../analysis/aggregate.js';
import { type CombineRule, type Unit, bareTokenText, blockMatrix, drillBlock, groupMatrix, sentenceUnits, textWordUnits, wordUnits } from '../../analysis/words.js';
import { AttnscopeError } from '../../core/errors.js';
import type { StackName, Token, Trace } from '../../core/trace.js';
import { type CommonViewOptions, checkIndex, resolveCommon } from '../svg/common.js';
import { prettifyToken, stackTokens, tokenLabel } from '../tokens.js';
import { stackAxes } from './common.js';
import { traceAtStep } from './head-clusters.js';
import { type GridInput, type GridLayout, type GridToken, matrixGridLayout } from './heatmap.js';

export type GroupBy = 'words' | 'sentences';
export type GroupCellRule = 'mean' | 'max' | 'sum' | 'share';
export const GROUP_BY: readonly GroupBy[] = ['words', 'sentences'];
export const GROUP_CELL_RULES: readonly GroupCellRule[] = ['mean', 'max', 'sum', 'share'];

/** The query and key rules of groupMatrix behind each cell rule. */
export const CELL_RULE_SIDES: Readonly<Record<GroupCellRule, { query: CombineRule; key: CombineRule }>> = {
  mean: { query: 'mean', key: 'mean' },
  max: { query: 'max', key: 'max' },
  sum: { query: 'sum', key: 'sum' },
  share: { query: 'mean', key: 'sum' },
};

export interface GroupedHeatmapOptions extends CommonViewOptions {
  /** Units: words (default) or sentences. */
  by?: GroupBy;
  layer?: number;
  /** One head; when omitted, `aggregate` (default mean) over the layer's heads. */
  head?: number;
  /** 'mean' or 'max' ('all', the heatmap's small multiples, is refused). */
  aggregate?: 'mean' | 'max' | 'all';
  /** How a block becomes a cell (default: mean for sentences, share for words). */
  rule?: GroupCellRule;
  /** The text of each segment of the trace's input (sentence A, and B for pairs); rebuilt from the tokens when omitted. */
  texts?: readonly (string | undefined)[];
  /** Show the token-level block behind this cell (row and column unit indices) instead of the units. */
  drill?: { row: number; col: number };
  log?: boolean;
  showValues?: boolean;
  /** Upper end of the colour scale (default: the largest value shown). */
  max?: number;
}

/** What a grouped heatmap shows, resolved from the options. */
export interface GroupedModel {
  stack: StackName;
  by: GroupBy;
  rule: GroupCellRule;
  layer: number;
  mode: number | 'mean' | 'max';
  numHeads: number;
  queries: readonly Token[];
  keys: readonly Token[];
  /** The token-level matrix (queries × keys). */
  matrix: Float32Array;
  /** Token-level masked entries (queries × keys), or null. */
  masked: Uint8Array | null;
  rows: Unit[];
  cols: Unit[];
  /** rows × cols, by the rule. */
  values: Float32Array;
  /** 1 where every token entry of the cell's block is masked (rows × cols), or null. */
  unitMasked: Uint8Array | null;
  common: ReturnType<typeof resolveCommon>;
}

/**
 * A segment's text rebuilt from its tokens: each non-special token's text without word markers,
 * right-aligned in its character span (so a leading space stays a space), gaps filled with spaces.
 */
export function rebuildTexts(tokens: readonly Token[]): string[] {
  const segments = Math.max(0, ...tokens.map((t) => t.segment)) + 1;
  const out: string[] = [];
  for (let s = 0; s < segments; s++) {
    const own = tokens.filter((t) => t.segment === s && !t.special && t.end > t.start);
    const len = Math.max(0, ...own.map((t) => t.end));
    const chars = new Array<string>(len).fill(' ');
    for (const t of own) {
      const span = t.end - t.start;
      const bare = [...bareTokenText(t.text).trimEnd()];
      const piece = bare.length >= span ? bare.slice(bare.length - span) : [...new Array<string>(span - bare.length).fill(' '), ...bare];
      for (let c = 0; c < span; c++) chars[t.start + c] = piece[c]!.length === 1 ? piece[c]! : 'x';
    }
    out.push(chars.join(''));
  }
  return out;
}

/** Texts per segment: the given ones where they cover the tokens' offsets, else rebuilt from the tokens. */
function segmentTexts(tokens: readonly Token[], given: readonly (string | undefined)[] | undefined): string[] {
  const rebuilt = rebuildTexts(tokens);
  return rebuilt.map((r, s) => {
    const g = given?.[s];
    const need = Math.max(0, ...tokens.filter((t) => t.segment === s && !t.special).map((t) => t.end));
    return g !== undefined && g.length >= need ? g : r;
  });
}

/** Word units; by the text's words when the tokenizer's word indices put spaces inside a unit (SentencePiece without a pre-tokenizer). */
function unitsOf(tokens: readonly Token[], texts: string[], by: GroupBy): Unit[] {
  if (by === 'sentences') return sentenceUnits(tokens, texts);
  const units = wordUnits(tokens, texts);
  const single = tokens.every((t) => t.segment === 0);
  if (single && units.some((u) => !u.special && /\s/.test(u.label))) {
    // Whole-text words: keep the specials in place, in token order.
    const words = textWordUnits(tokens, texts[0]!);
    const specials = units.filter((u) => u.special);
    return [...words, ...specials].sort((a, b) => a.tokens[0]! - b.tokens[0]!);
  }
  return units;
}

export function groupedHeatmapModel(full: Trace, options: GroupedHeatmapOptions = {}): GroupedModel {
  const common = resolveCommon(full, options);
  const { stack } = common;
  // Generation traces at a step: the sequence as it was then.
  const trace = options.step === undefined ? full : traceAtStep(full, stack, options.step);
  const s = trace.attention[stack]!;
  const [numHeads, nq, nk] = s.dims;
  const by = options.by ?? 'words';
  if (!GROUP_BY.includes(by)) throw new AttnscopeError(`unknown grouping '${by}' (expected ${GROUP_BY.join(' or ')})`);
  const rule = options.rule ?? (by === 'sentences' ? 'mean' : 'share');
  if (!GROUP_CELL_RULES.includes(rule)) throw new AttnscopeError(`unknown rule '${rule}' (expected ${GROUP_CELL_RULES.join(', ')})`);
  if (options.head !== undefined && options.aggregate !== undefined) throw new AttnscopeError(`${by} view: give either a head or an aggregate (mean, max), not both`);
  if (options.aggregate !== undefined && options.aggregate !== 'mean' && options.aggregate !== 'max') {
    throw new AttnscopeError(`unknown aggregate '${String(options.aggregate)}' for the ${by} view (expected mean or max)`);
  }
  if (options.mergeSubwords) throw new AttnscopeError(`the ${by} view groups tokens itself (no merge sub-words)`);
  const layer = checkIndex(options.layer ?? 0, s.layers.length, 'layer');
  const head = options.head === undefined ? undefined : checkIndex(options.head, numHeads, 'head');
  const mode: number | 'mean' | 'max' = head ?? options.aggregate ?? 'mean';
  const { queryTokens: queries, keyTokens: keys } = stackTokens(trace, stack);
  const data = s.layers[layer]!;
  const matrix = typeof mode === 'number' ? headMatrix(data, mode, nq, nk) : aggregateHeads(data, numHeads, nq, nk, mode);
  // The given texts are the input's (trace.tokens); decoder tokens' texts are rebuilt.
  const textsFor = (tokens: readonly Token[]) => segmentTexts(tokens, tokens === trace.tokens ? options.texts : undefined);
  const keep = (units: Unit[]) => (options.hideSpecial ? units.filter((u) => !u.special) : units);
  const rows = keep(unitsOf(queries, textsFor(queries), by));
  const cols = keys === queries ? rows : keep(unitsOf(keys, textsFor(keys), by));
  if (rows.length === 0 || cols.length === 0) throw new AttnscopeError(`the ${by} view has nothing to show (only special tokens)`);
  const mask = maskedEntries(trace, stack, layer);
  const masked = mask && mask.some((v) => v === 1) ? mask : null;
  const values = rule === 'mean' ? blockMatrix(matrix, nq, nk, rows, cols, 'mean', 0, masked) : groupMatrix(matrix, nq, nk, rows, cols, CELL_RULE_SIDES[rule]);
  let unitMasked: Uint8Array | null = null;
  if (masked) {
    unitMasked = new Uint8Array(rows.length * cols.length);
    rows.forEach((r, a) => cols.forEach((c, b) => (unitMasked![a * cols.length + b] = r.tokens.every((i) => c.tokens.every((j) => masked[i * nk + j] === 1)) ? 1 : 0)));
    if (!unitMasked.some((v) => v === 1)) unitMasked = null;
  }
  return { stack, by, rule, layer, mode, numHeads, queries, keys, matrix, masked, rows, cols, values, unitMasked, common };
}

/** The token-level block behind cell (row, col) of a grouped model: positions, weights and masked entries. */
export function groupedDrill(model: GroupedModel, row: number, col: number): { rows: number[]; cols: number[]; values: Float32Array; masked: Uint8Array | null } {
  const r = model.rows[row];
  const c = model.cols[col];
  if (!r || !c) throw new AttnscopeError(`cell ${row}, ${col} is out of range (the ${model.by} matrix is ${model.rows.length} × ${model.cols.length})`);
  const nk = model.keys.length;
  const block = drillBlock(model.matrix, nk, r, c);
  let masked: Uint8Array | null = null;
  if (model.masked) {
    const m = new Uint8Array(block.values.length);
    block.rows.forEach((i, a) => block.cols.forEach((j, b) => (m[a * block.cols.length + b] = model.masked![i * nk + j]!)));
    masked = m.some((v) => v === 1) ? m : null;
  }
  return { ...block, masked };
}

/** Heading words: "head 3", "mean over 8 heads". */
export function groupedWhat(model: GroupedModel): string {
  return typeof model.mode === 'number' ? `head ${model.mode}` : `${model.mode} over ${model.numHeads} heads`;
}

const RULE_CAPTION: Readonly<Record<GroupCellRule, string>> = {
  mean: 'mean weight of the block',
  max: 'max weight of the block',
  sum: 'total weight of the block',
  share: 'share of the row unit’s attention',
};

/** A unit as a grid row/column: its text, its tokens in the tooltip. */
export function unitGridTokens(model: GroupedModel, side: 'query' | 'key'): GridToken[] {
  const units = side === 'query' ? model.rows : model.cols;
  const tokens = side === 'query' ? model.queries : model.keys;
  return units.map((u) => ({
    label: u.label,
    special: u.special,
    generated: u.tokens.some((p) => tokens[p]!.generated === true),
    segment: u.segment,
    tip: `${u.label} · tokens ${u.tokens.length === 1 ? u.tokens[0] : `${u.tokens[0]}–${u.tokens[u.tokens.length - 1]}`}: ${u.tokens.map((p) => tokenLabel(prettifyToken(tokens[p]!.text))).join(' ')}`,
  }));
}

export type GroupedPlace = Pick<GridInput, 'top' | 'frame' | 'maxCell'>;

/** The unit-level layout (words × words or sentences × sentences); matrices carry data-by / data-rule. */
export function groupedHeatmapLayout(model: GroupedModel, options: Pick<GroupedHeatmapOptions, 'log' | 'showValues' | 'max'> = {}, place: GroupedPlace = {}): GridLayout {
  const unit = model.by === 'sentences' ? 'sentences' : 'words';
  return matrixGridLayout({
    matrices: [{ values: model.values, data: { by: model.by, rule: model.rule, layer: model.layer, ...(typeof model.mode === 'number' ? { head: model.mode } : { aggregate: model.mode }) } }],
    rows: unitGridTokens(model, 'query'),
    cols: unitGridTokens(model, 'key'),
    theme: model.common.theme,
    log: options.log ?? false,
    max: options.max,
    caption: RULE_CAPTION[model.rule],
    axes: model.stack === 'cross' ? { query: `decoder ${unit} (queries)`, key: `encoder ${unit} (keys)` } : { query: `query ${unit}`, key: `key ${unit}` },
    newest: null,
    masked: model.unitMasked,
    showValues: options.showValues,
    top: place.top,
    frame: place.frame,
    // Sentences: long enough for most of a sentence (the whole one is the label's tooltip).
    labelChars: model.by === 'sentences' ? 40 : undefined,
    maxCell: place.maxCell ?? (model.by === 'sentences' ? 64 : 48),
  });
}

/** The layout of the token block behind cell (row, col): token labels, token-level weights, masked entries blank. */
export function drillLayout(
  model: GroupedModel,
  row: number,
  col: number,
  options: Pick<GroupedHeatmapOptions, 'log' | 'showValues' | 'max'> = {},
  place: GroupedPlace = {},
): GridLayout & { block: ReturnType<typeof groupedDrill> } {
  const block = groupedDrill(model, row, col);
  const tok = (tokens: readonly Token[], p: number): GridToken => {
    const t = tokens[p]!;
    return { label: tokenLabel(prettifyToken(t.text)), special: t.special, generated: t.generated === true, segment: t.segment, tip: `${p}: ${t.text}` };
  };
  const axes = stackAxes(model.stack);
  const layout = matrixGridLayout({
    matrices: [{ values: block.values, data: { drillRow: row, drillCol: col, layer: model.layer } }],
    rows: block.rows.map((p) => tok(model.queries, p)),
    cols: block.cols.map((p) => tok(model.keys, p)),
    theme: model.common.theme,
    log: options.log ?? false,
    max: options.max,
    caption: 'attention weight',
    axes,
    newest: null,
    masked: block.masked,
    showValues: options.showValues,
    top: place.top,
    frame: place.frame,
    maxCell: place.maxCell ?? 48,
  });
  return { ...layout, block };
}
