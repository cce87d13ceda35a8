/**
 * `attnscope export [model|trace.json|trace.safetensors] --text "..." --view head|model|neuron|heatmap
 *  ... --format svg|png [--scale 3] --out file`: renders a view server-side as an image.
 */
import { existsSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { withAttentionLayers } from '../core/attention-on-demand.js';
import { openTraceFile, writeFileAtomically } from '../io/trace-file.js';
import { svgToPng } from '../views/png.js';
import { type AnyViewOptions, VIEW_NAMES, type ViewName, renderSvg } from '../views/svg/index.js';
import { THEME_NAMES, type ThemeName } from '../views/theme.js';
import { parsePairFilter } from '../views/tokens.js';
import { LANGUAGE_HELP, LANGUAGE_OPTIONS, MODEL_HELP, MODEL_OPTIONS, parseIdList, parseIndex, parseLoadOptions, parseNumber, parsePositiveInt } from './args.js';
import { HEAD_FUSIONS, type HeadFusion } from '../analysis/rollout.js';
import { FLOW_VIEW_METHODS, type FlowMethod } from '../views/layout/flow.js';
import { CLUSTER_PROJECTIONS, type ClusterProjection } from '../analysis/cluster.js';
import { GROUP_CELL_RULES, type GroupCellRule } from '../views/layout/grouped-heatmap.js';
import { checkModelArg, checkOut, isCheckpointFile, parseCommandArgs, reportWrote, UsageError } from './parse.js';
import { ANALYSIS_VIEW_NAMES, type AnalysisViewName, isAnalysisViewName } from '../views/layout/analysis-views.js';
import { type TargetNaming, ablationViewData, headImportanceViewData, logitLensViewData, saliencyViewData, traceAttributions } from '../views/analysis-data.js';
import { attribute } from '../engine/gradients.js';
import { attentionAttributions } from '../analysis/attribution.js';
import { analysisTitle, renderAblation, renderHeadImportance, renderLogitLens, renderSaliency } from '../views/svg/analysis-views.js';
import { parseHeadList } from '../analysis/ablation.js';
import { ablateHeads } from '../engine/ablation.js';

export const EXPORT_USAGE = `attnscope export [model | trace.json | trace.safetensors] --view head|model|neuron|heatmap|words|sentences|flow|influence|clusters|types|saliency|importance|ablation|lens --out FILE
                [--text "..." [--pair "..."] [--decoder-text "..."]] [--src-lang CODE] [--tgt-lang CODE]
                [--layer L] [--head H | --heads 0,1,2] [--layers 0,1] [--query I] [--stack encoder|decoder|cross]
                [--aggregate mean|max|all] [--log] [--pair-filter all|A→B|B→A|A→A|B→B] [--all-lines]
                [--method attention|rollout|flow] [--fusion mean|max|min] [--discard R] [--residual W]
                [--keep K] [--threshold T] [--column C] [--depth D] [--max-nodes N]
                [--projection umap|pca] [--clusters K] [--cluster-seed S] [--exclude-first]
                [--signed] [--scale-rows per-row|shared]
                [--rule mean|max|sum|share] [--cell R,C] [--step N] [--theme light|dark] [--hide-special] [--merge-subwords] [--title "..."]
                [--format svg|png] [--scale 3] [--top-k N] [--truncate] [--revision REV] [--offline] [--threads N]

  source       a trace file (.json or .safetensors), or a model directory / Hub id to run on --text;
               the embedded stories260k model when omitted
  --text       the text to run the model on;  --pair  a second sentence (sentence B);
  --decoder-text   encoder-decoder models: the decoder input (generated when not given)
${LANGUAGE_HELP}
  --truncate   cut inputs longer than the model's maximum positions
  --top-k N    add the head's N most likely tokens (at each [MASK], or the next token)
  --layer      the layer shown (default 0);  --head  one head;  --heads  several heads (default all)
  --layers     model view: the layers shown (default all)
  --view       head: lines between query and key tokens, one colour per head (--layer, --heads, --query, --pair-filter)
               model: every layer × head as small images (--layers, --heads)
               neuron: query/key vectors, products, scores and softmax (--layer, --head, --query; needs q/k)
               heatmap: query × key matrix of a head (--head), the --aggregate mean|max over heads,
               or all heads as small multiples (the default); --log for a log colour scale
               words / sentences: the layer's --head H (default the --aggregate mean over heads) summarised
               per word or per sentence (Intl.Segmenter); --rule mean (the block's mean: Attention Atlas's
               inter-sentence attention; sentences' default), max, sum, or share (summed over the key unit,
               averaged over the query unit; words' default); --cell R,C shows the token block behind a cell
               flow: tokens of every layer as columns, edges weighted by --method (attention: heads fused;
               rollout / flow: the residual-augmented graph, the highlighted token's rollout or attention
               flow per input), pruned to the --keep K strongest per token (default 3) above --threshold T;
               --query I highlights what flows into token I (of --column C, default the last)
               influence: from token --query I (default the last), its --keep strongest sources,
               recursively --depth D layers down (default 3)
               clusters: every head as a point of a 2-D --projection (umap, default, or pca) of its metric
               profile on the text, coloured by its k-means cluster (--clusters K; default k by silhouette;
               --cluster-seed S, default 0; --exclude-first measures without the first token); see 'attnscope heads --clusters'
               types: a layers × heads grid, each head coloured by its top type on the text (shade: how far its
               score passes the type's threshold; --exclude-first as for clusters); see 'attnscope heads'
               saliency: the tokens coloured by their attribution to the target, one row per method (gradient,
               gradient × input, integrated gradients, attention × gradient, gradient-weighted rollout), from a
               trace with attributions or a model run on --text (target: the top prediction at the last position,
               masked LMs the first [MASK]); --scale-rows shared for one colour scale
               importance: a layers × heads grid of head importance for that target (Michel et al.: |∂T/∂gate|,
               each layer divided by its L2 norm; --signed for ∂T/∂gate itself), from a trace or a model run
               ablation: the next-token/[MASK] distribution before and after removing --heads L:H,L:H (L:* a whole
               layer; decoder/L:H a stack) from a model run on --text, with the target's change, KL and cosine;
               --top-k N candidates (default 10)
               lens: the logit lens, layers × positions with each layer's top token and its probability (a trace
               with a logit lens, or a model run on --text; --top-k N candidates per cell, default 5)
  --method     flow view: attention, rollout (default) or flow;  --keep K / --threshold T  edges kept
               per token;  --column C  the highlighted token's layer;  --depth D  influence tree depth
  --fusion / --discard / --residual   flow views: head fusion, share of weights discarded, residual weight
  --rule       words / sentences: mean, max, sum or share;  --cell R,C  the token block behind a cell
  --projection clusters: umap or pca;  --clusters K  the number of clusters;  --cluster-seed S  the seed
  --exclude-first  clusters / types: measure without the first token (TransformerLens' exclude_bos)
  --signed     importance: the signed gate gradient ∂T/∂gate on a diverging scale, not Michel's |·| per layer
  --scale-rows saliency: per-row (default: each method's row by its own largest |score|) or shared (one scale)
  --max-nodes  flow view with --method flow: largest graph, (layers + 1) × tokens (default 832)
  --query      index of a query token as displayed (after --hide-special / --merge-subwords)
  --stack      encoder-decoder traces: encoder, decoder or cross attention (default encoder)
  --aggregate  heatmap: mean or max over heads, or all heads as small multiples;  --log  log colour scale
  --pair-filter  head view: only lines from sentence A to B (A→B), B→A, A→A, B→B, or all
  --all-lines  head view: draw every line, not only the strongest the page draws (the caption says
               how many are drawn); slow and large beyond ~100 tokens
  --theme      light or dark (default light);  --title  the heading (default: the model and view)
  --hide-special   leave out special tokens ([CLS], <s>, ...);  --merge-subwords  one label per word
  --step       generation traces (attnscope generate --out): the sequence as it was at generated token N
               (0 = the prompt alone), the newest token's row highlighted (head view: its lines;
               heatmap and model view: its row outlined; neuron view: it is the query)
  --format     svg or png (default: from --out's extension); --scale  PNG pixels per unit (default 2)
  --out        the image file, .svg or .png as --format says (written atomically)
${MODEL_HELP}`;

function parseScale(value: string | undefined): number {
  if (value === undefined) return 2;
  const s = Number(value);
  if (!Number.isFinite(s) || s <= 0 || s > 16) throw new UsageError(`--scale: expected a number in (0, 16], got '${value}'`);
  return s;
}

function isTraceFile(source: string | undefined): boolean {
  if (!source) return false;
  const lower = source.toLowerCase();
  if (!lower.endsWith('.json') && !lower.endsWith('.safetensors')) return false;
  if (!existsSync(source)) throw new AttnscopeError(`${source}: no such trace file`);
  return statSync(source).isFile();
}

export const EXPORT_OPTIONS = {
  text: { type: 'string' },
  pair: { type: 'string' },
  'decoder-text': { type: 'string' },
  ...LANGUAGE_OPTIONS,
  truncate: { type: 'boolean' },
  'top-k': { type: 'string' },
  view: { type: 'string' },
  layer: { type: 'string' },
  head: { type: 'string' },
  heads: { type: 'string' },
  layers: { type: 'string' },
  query: { type: 'string' },
  stack: { type: 'string' },
  theme: { type: 'string' },
  'hide-special': { type: 'boolean' },
  'merge-subwords': { type: 'boolean' },
  aggregate: { type: 'string' },
  log: { type: 'boolean' },
  'pair-filter': { type: 'string' },
  'all-lines': { type: 'boolean' },
  method: { type: 'string' },
  fusion: { type: 'string' },
  discard: { type: 'string' },
  residual: { type: 'string' },
  keep: { type: 'string' },
  threshold: { type: 'string' },
  column: { type: 'string' },
  depth: { type: 'string' },
  'max-nodes': { type: 'string' },
  projection: { type: 'string' },
  clusters: { type: 'string' },
  'cluster-seed': { type: 'string' },
  'exclude-first': { type: 'boolean' },
  signed: { type: 'boolean' },
  'scale-rows': { type: 'string' },
  rule: { type: 'string' },
  cell: { type: 'string' },
  title: { type: 'string' },
  format: { type: 'string' },
  scale: { type: 'string' },
  step: { type: 'string' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

/** The flow views' options from their flags (checked here; ranges against the trace are checked by the layout). */
function parseFlowViewFlags(values: { method?: string; fusion?: string; discard?: string; residual?: string; keep?: string; threshold?: string; column?: string; depth?: string; 'max-nodes'?: string }): AnyViewOptions {
  const out: AnyViewOptions = {};
  if (values.method !== undefined) {
    if (!FLOW_VIEW_METHODS.includes(values.method as FlowMethod)) throw new UsageError(`--method: expected ${FLOW_VIEW_METHODS.join(', ')}, got '${values.method}'`);
    out.method = values.method as FlowMethod;
  }
  if (values.fusion !== undefined) {
    if (!HEAD_FUSIONS.includes(values.fusion as HeadFusion)) throw new UsageError(`--fusion: expected ${HEAD_FUSIONS.join(', ')}, got '${values.fusion}'`);
    out.fusion = values.fusion as HeadFusion;
  }
  const share = (v: string | undefined, flag: string, closed: boolean) => {
    const x = parseNumber(v, flag);
    if (x !== undefined && !(x >= 0 && (closed ? x <= 1 : x < 1))) throw new UsageError(`${flag}: expected a number in [0, 1${closed ? ']' : ')'}, got '${v}'`);
    return x;
  };
  out.discard = share(values.discard, '--discard', false);
  out.residual = share(values.residual, '--residual', true);
  out.threshold = share(values.threshold, '--threshold', true);
  out.keep = parsePositiveInt(values.keep, '--keep');
  out.depth = parsePositiveInt(values.depth, '--depth');
  out.maxNodes = parsePositiveInt(values['max-nodes'], '--max-nodes');
  out.column = parseIndex(values.column, '--column');
  for (const k of Object.keys(out) as (keyof AnyViewOptions)[]) if (out[k] === undefined) delete out[k];
  return out;
}

export async function exportCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, EXPORT_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`export: expected at most one model or trace file, got ${positionals.join(' ')}`);
  const view = values.view;
  if (!view) throw new UsageError(`export: give --view ${VIEW_NAMES.join('|')}`);
  if (!VIEW_NAMES.includes(view as ViewName) && !isAnalysisViewName(view)) throw new UsageError(`unknown view '${view}' (expected ${[...VIEW_NAMES, ...ANALYSIS_VIEW_NAMES].join(', ')})`);
  if (!values.out) throw new UsageError('export: give --out FILE');
  const ext = extname(values.out).slice(1).toLowerCase();
  const format = (values.format ?? (ext === 'svg' || ext === 'png' ? ext : undefined))?.toLowerCase();
  if (format !== undefined && format !== 'svg' && format !== 'png') throw new UsageError(`unknown format '${values.format}' (expected svg or png)`);
  checkOut(values.out, format === undefined ? ['.svg', '.png'] : [`.${format}`], format === undefined ? 'export --format svg|png' : `export --format ${format}`);
  const scale = parseScale(values.scale);
  if (values.theme !== undefined && !THEME_NAMES.includes(values.theme as ThemeName)) {
    throw new UsageError(`unknown theme '${values.theme}' (expected ${THEME_NAMES.join(' or ')})`);
  }
  const stacks: StackName[] = ['self', 'encoder', 'decoder', 'cross'];
  if (values.stack !== undefined && !stacks.includes(values.stack as StackName)) {
    throw new UsageError(`unknown stack '${values.stack}' (expected ${stacks.join(', ')})`);
  }
  if (values.aggregate !== undefined && !['mean', 'max', 'all'].includes(values.aggregate)) {
    throw new UsageError(`unknown aggregate '${values.aggregate}' (expected mean, max or all)`);
  }
  for (const flag of ['signed', 'scale-rows'] as const) {
    if (values[flag] !== undefined && !isAnalysisViewName(view)) throw new AttnscopeError(`--${flag} does not apply to the ${view} view`);
  }
  if (isAnalysisViewName(view)) {
    await exportAnalysisView(view, values, positionals[0], format, scale);
    return;
  }
  const head = parseIndex(values.head, '--head');
  const heads = parseIdList(values.heads, '--heads');
  if (head !== undefined && heads !== undefined) throw new UsageError('export: give --head or --heads, not both');

  const options: AnyViewOptions = {
    stack: values.stack as StackName | undefined,
    theme: values.theme as ThemeName | undefined,
    hideSpecial: values['hide-special'] ?? false,
    mergeSubwords: values['merge-subwords'] ?? false,
    layer: parseIndex(values.layer, '--layer'),
    query: parseIndex(values.query, '--query'),
    log: values.log ?? false,
    title: values.title,
    step: parseIndex(values.step, '--step'),
  };
  const grouped = view === 'words' || view === 'sentences';
  if (view === 'heatmap' || view === 'neuron' || grouped) {
    if (heads !== undefined) {
      if (heads.length !== 1) throw new AttnscopeError(`the ${view} view shows one head: give --head H`);
      options.head = heads[0];
    } else options.head = head;
    if (values.aggregate !== undefined) options.aggregate = values.aggregate as AnyViewOptions['aggregate'];
  } else {
    options.heads = heads ?? (head === undefined ? undefined : [head]);
  }
  if (view === 'model') options.layers = parseIdList(values.layers, '--layers');
  if (grouped) {
    if (values.rule !== undefined && !GROUP_CELL_RULES.includes(values.rule as GroupCellRule)) throw new UsageError(`--rule: expected ${GROUP_CELL_RULES.join(', ')}, got '${values.rule}'`);
    options.rule = values.rule as GroupCellRule | undefined;
    if (values.cell !== undefined) {
      const m = /^\s*(\d+)\s*,\s*(\d+)\s*$/.exec(values.cell);
      if (!m) throw new UsageError(`--cell: expected ROW,COL (unit indices, e.g. 1,0), got '${values.cell}'`);
      options.drill = { row: Number(m[1]), col: Number(m[2]) };
    }
  }
  if (values['pair-filter'] !== undefined) options.pair = parsePairFilter(values['pair-filter']);
  if (values['all-lines']) options.allLines = true;
  if (view === 'flow' || view === 'influence') Object.assign(options, parseFlowViewFlags(values));
  if (view === 'clusters') {
    if (values.projection !== undefined && !CLUSTER_PROJECTIONS.includes(values.projection as ClusterProjection)) {
      throw new UsageError(`--projection: expected ${CLUSTER_PROJECTIONS.join(' or ')}, got '${values.projection}'`);
    }
    options.projection = values.projection as ClusterProjection | undefined;
    options.clusters = parsePositiveInt(values.clusters, '--clusters');
    const seed = values['cluster-seed'];
    if (seed !== undefined && (!/^\d+$/.test(seed.trim()) || Number(seed) > 0xffffffff)) throw new UsageError(`--cluster-seed: expected an integer from 0 to 4294967295, got '${seed}'`);
    options.clusterSeed = seed === undefined ? undefined : Number(seed);
    options.excludeFirstToken = values['exclude-first'] ?? false;
  }
  if (view === 'types') options.excludeFirstToken = values['exclude-first'] ?? false;
  const unused = (flag: string, views: string[]) => {
    const given = values[flag as keyof typeof values] !== undefined;
    if (given && !views.includes(view)) throw new AttnscopeError(`--${flag} does not apply to the ${view} view`);
  };
  unused('aggregate', ['heatmap', 'words', 'sentences']);
  unused('rule', ['words', 'sentences']);
  unused('cell', ['words', 'sentences']);
  unused('pair-filter', ['head']);
  unused('all-lines', ['head']);
  unused('layers', ['model']);
  unused('query', ['head', 'neuron', 'flow', 'influence']);
  for (const flag of ['method', 'fusion', 'discard', 'residual', 'keep', 'threshold', 'column', 'depth', 'max-nodes']) unused(flag, ['flow', 'influence']);
  unused('layer', ['head', 'neuron', 'heatmap', 'words', 'sentences']);
  unused('log', ['heatmap', 'model', 'words', 'sentences']);
  for (const flag of ['projection', 'clusters', 'cluster-seed']) unused(flag, ['clusters']);
  unused('exclude-first', ['clusters', 'types']);

  const source = positionals[0];
  let trace: Trace;
  if (source !== undefined && isCheckpointFile(source)) checkModelArg(source);
  if (isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'decoder-text', 'src-lang', 'tgt-lang', 'truncate', 'top-k'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`--${flag} does not apply to a trace file (it already holds its tokens)`);
    }
    const opened = await openTraceFile(source!);
    // A trace kept as queries and keys: the layers the view reads are computed (within a budget).
    trace = withAttentionLayers(opened.trace);
    // Values that are not probabilities still open, with one line saying where they are.
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
  } else {
    if (values.text === undefined) throw new AttnscopeError('export: give --text "..." to run the model on (or a trace file)');
    const topK = parsePositiveInt(values['top-k'], '--top-k');
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      // Words and sentences: units from the text itself.
      if (grouped) options.texts = [values.text, values.pair];
      trace = await model.trace(values.text, { pair: values.pair, decoderText: values['decoder-text'], srcLang: values['src-lang'], tgtLang: values['tgt-lang'], qk: view === 'neuron', truncate: values.truncate ?? false, topK });
    } finally {
      await model.dispose();
    }
  }

  const svg = renderSvg(view, trace, options);
  const data = format !== 'png' ? svg : svgToPng(svg, { scale });
  await writeFileAtomically(values.out, async (stream) => {
    stream.write(data);
  });
  reportWrote(values.out, `${view} view, ${format}${format === 'png' ? ` ×${scale}` : ''}`);
}

/** Flags of the export that only the attention views take (the analysis views refuse them). */
const ATTENTION_ONLY_FLAGS = ['head', 'layer', 'layers', 'query', 'aggregate', 'log', 'pair-filter', 'all-lines', 'method', 'fusion', 'discard', 'residual', 'keep', 'threshold', 'column', 'depth', 'max-nodes', 'projection', 'clusters', 'cluster-seed', 'exclude-first', 'rule', 'cell', 'hide-special', 'merge-subwords', 'step'] as const;

/**
 * `export --view saliency|importance|ablation|lens`: the view's data from a trace file (attributions,
 * logit lens) or from a model run on --text (logit lens, ablation), drawn as SVG or PNG.
 */
async function exportAnalysisView(view: AnalysisViewName, values: ReturnType<typeof parseCommandArgs<typeof EXPORT_OPTIONS>>['values'], source: string | undefined, format: string | undefined, scale: number): Promise<void> {
  for (const flag of ATTENTION_ONLY_FLAGS) if (values[flag] !== undefined) throw new AttnscopeError(`--${flag} does not apply to the ${view} view`);
  if (values.heads !== undefined && view !== 'ablation') throw new AttnscopeError(`--heads does not apply to the ${view} view`);
  if (values.signed !== undefined && view !== 'importance') throw new AttnscopeError(`--signed does not apply to the ${view} view (only importance)`);
  const scaleRows = values['scale-rows'];
  if (scaleRows !== undefined && view !== 'saliency') throw new AttnscopeError(`--scale-rows does not apply to the ${view} view (only saliency)`);
  if (scaleRows !== undefined && scaleRows !== 'per-row' && scaleRows !== 'shared') throw new UsageError(`--scale-rows: expected per-row or shared, got '${scaleRows}'`);
  if (values.stack !== undefined && view !== 'importance') throw new AttnscopeError(`--stack does not apply to the ${view} view`);
  const topK = parsePositiveInt(values['top-k'], '--top-k');
  if (topK !== undefined && view !== 'ablation' && view !== 'lens') throw new AttnscopeError(`--top-k does not apply to the ${view} view`);
  const common = { theme: values.theme as ThemeName | undefined };
  let svg: string;
  if (source !== undefined && isCheckpointFile(source)) checkModelArg(source);
  if (isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'decoder-text', 'src-lang', 'tgt-lang', 'truncate'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`--${flag} does not apply to a trace file (it already holds its tokens)`);
    }
    if (view === 'ablation') throw new AttnscopeError('the ablation view runs the model twice: give a model and --text with --heads L:H (a trace file holds no ablation)');
    if (view === 'lens' && topK !== undefined) throw new AttnscopeError('--top-k does not apply to a trace file (its logit lens holds its own top-k)');
    const opened = await openTraceFile(source!);
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
    const trace = opened.trace;
    svg = renderAnalysisData(view, trace, values, common);
  } else {
    if (values.text === undefined) throw new AttnscopeError(`export: give --text "..." to run the model on (or a trace file${view === 'lens' ? ' with a logit lens' : ''})`);
    if (view === 'ablation' && values.heads === undefined) throw new UsageError('export --view ablation: give the heads to remove with --heads L:H,L:H (L:* for a whole layer)');
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      const trace = await model.trace(values.text, {
        pair: values.pair,
        decoderText: values['decoder-text'],
        srcLang: values['src-lang'],
        tgtLang: values['tgt-lang'],
        truncate: values.truncate ?? false,
        ...(view === 'lens' ? { logitLens: topK ?? 5 } : { attention: true }),
      });
      const inputs = { inputIds: trace.tokens.map((t) => t.id), typeIds: trace.tokens.map((t) => t.segment), ...(trace.decoderTokens ? { decoderInputIds: trace.decoderTokens.map((t) => t.id) } : {}) };
      if (view === 'lens') svg = renderLogitLens(logitLensViewData(trace), { ...common, title: values.title ?? analysisTitle('lens', trace.model.name) });
      else if (view === 'saliency' || view === 'importance') {
        // The default target (the top prediction at the last position; masked LMs: the first [MASK]).
        const result = await attribute(model, inputs, { methods: view === 'importance' ? ['headImportance'] : ['gradient', 'gradXInput', 'integratedGradients', 'attentionGrad'] });
        trace.attributions = traceAttributions(result);
        if (view === 'saliency' && result.attentionGrad) {
          const withAttention: Trace = { ...trace, attention: result.attention ?? trace.attention };
          Object.assign(trace.attributions.scores, attentionAttributions(withAttention));
        }
        svg = renderAnalysisData(view, trace, values, common, { tokenText: (id) => model.tokenizer?.idToToken(id) ?? null });
      } else {
        const info = model.architectureInfo;
        const defaultStack = info.stacks.self !== undefined ? 'self' : 'encoder';
        const heads = parseHeadList(values.heads!, info.stacks, info.numHeads, defaultStack);
        const result = await ablateHeads(model, inputs, { heads, topK: topK ?? 10 });
        const data = ablationViewData(trace, result, { tokenText: (id) => model.tokenizer?.idToToken(id) ?? null });
        svg = renderAblation(data, { ...common, topK: topK ?? 10, title: values.title ?? analysisTitle('ablation', trace.model.name) });
      }
    } finally {
      await model.dispose();
    }
  }
  const data = format !== 'png' ? svg : svgToPng(svg, { scale });
  await writeFileAtomically(values.out!, async (stream) => {
    stream.write(data);
  });
  reportWrote(values.out!, `${view} view, ${format}${format === 'png' ? ` ×${scale}` : ''}`);
}

/** The saliency, importance or lens view of a trace's own data as SVG. */
function renderAnalysisData(view: 'saliency' | 'importance' | 'lens', trace: Trace, values: { title?: string; signed?: boolean; 'scale-rows'?: string; stack?: string }, common: { theme?: ThemeName }, naming: TargetNaming = {}): string {
  switch (view) {
    case 'saliency': {
      const data = saliencyViewData(trace, naming);
      return renderSaliency(data, { ...common, scale: values['scale-rows'] as 'per-row' | 'shared' | undefined, title: values.title ?? analysisTitle('saliency', trace.model.name) });
    }
    case 'importance': {
      const data = headImportanceViewData(trace, { ...naming, stack: values.stack as StackName | undefined, normalization: values.signed ? 'signed' : 'michel' });
      return renderHeadImportance(data, { ...common, title: values.title ?? analysisTitle('importance', trace.model.name, data) });
    }
    case 'lens':
      return renderLogitLens(logitLensViewData(trace), { ...common, title: values.title ?? analysisTitle('lens', trace.model.name) });
  }
}

