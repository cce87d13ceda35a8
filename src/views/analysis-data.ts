/**
 * The analysis views' plain data read from a Trace: the saliency rows and head importance of
 * `Trace.attributions` (attnscope attribute, or a trace file written by another tool), and the
 * logit-lens grid of `Trace.logitLens`. The ablation comparison comes from an ablation run, not a
 * trace (see ablationViewData). Token texts are prettified as the other views show them.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { AttributionTarget, Attributions, Matrix, StackMap, StackName, Token, TokenAttribution, Trace } from '../core/trace.js';
import { michelHeadImportance } from '../analysis/attribution.js';
import type { AblationData } from './layout/ablation.js';
import type { AnalysisViewData } from './layout/analysis-views.js';
import type { HeadImportanceData } from './layout/head-importance.js';
import type { LensCandidate, LogitLensData } from './layout/logit-lens.js';
import type { SaliencyData, SaliencyRow } from './layout/saliency.js';
import { prettifyToken, tokenLabel } from './tokens.js';

/** A vocabulary or input token as the views label it. */
export function viewTokenLabel(text: string, modelType?: string): string {
  return tokenLabel(prettifyToken(text, modelType));
}

/** The text of vocabulary id `id` as far as the trace knows it (its tokens, predictions, lens), else null. */
function knownTokenText(trace: Trace, id: number): string | null {
  for (const t of [...trace.tokens, ...(trace.decoderTokens ?? [])]) if (t.id === id) return t.text;
  for (const p of trace.predictions ?? []) for (const c of p.candidates) if (c.id === id) return c.token;
  for (const l of trace.logitLens?.layers ?? []) {
    const i = l.ids.indexOf(id);
    if (i >= 0 && l.tokens[i] !== undefined) return l.tokens[i]!;
  }
  return null;
}

export interface TargetNaming {
  /** Vocabulary text of an id (a tokenizer's idToToken), when the trace alone does not know it. */
  tokenText?: (id: number) => string | null | undefined;
}

/** "“Paris”", or "token 1234" when the text is unknown. */
function quoted(trace: Trace, id: number, naming: TargetNaming): string {
  const text = naming.tokenText?.(id) ?? knownTokenText(trace, id);
  return text === null || text === undefined ? `token ${id}` : `“${viewTokenLabel(text, trace.model.modelType)}”`;
}

/** The target named for people: "log p(“Paris” | position 7)", "log p(“he”) − log p(“she”) | position 3", "logit at position 2". */
export function targetLabel(trace: Trace, target: AttributionTarget, naming: TargetNaming = {}): string {
  const where = `position ${target.position}${target.stack === 'decoder' ? ' of the decoder' : ''}`;
  if (target.tokenId === null) return /logit/.test(target.kind) ? `logit at ${where}` : `${target.kind} at ${where}`;
  const tok = quoted(trace, target.tokenId, naming);
  if (target.contrastTokenId !== undefined) return `log p(${tok}) − log p(${quoted(trace, target.contrastTokenId, naming)}) | ${where}`;
  if (/continuation/.test(target.kind)) return `log p(continuation) up to ${where}`;
  if (/logit$/.test(target.kind)) return `logit of ${tok} at ${where}`;
  return `log p(${tok} | ${where})`;
}

const METHOD_NAMES: Readonly<Record<string, string>> = {
  gradient: 'gradient',
  gradXInput: 'gradient × input',
  integratedGradients: 'integrated gradients',
  attentionXGradient: 'attention × gradient',
  gradientRollout: 'gradient-weighted rollout',
  gradientRolloutDecoder: 'gradient-weighted rollout (decoder)',
};

/** Method names in the order rows are shown; others follow in the trace's order. */
const METHOD_ORDER = ['gradient', 'gradXInput', 'integratedGradients', 'attentionXGradient', 'gradientRollout', 'gradientRolloutDecoder'];

function methodRow(name: string, a: TokenAttribution): SaliencyRow {
  let method = METHOD_NAMES[a.method] ?? METHOD_NAMES[name] ?? a.method;
  if (a.reduction === 'l2') method += ' (L2)';
  const parts: string[] = [];
  if (a.baseline) parts.push(`${a.baseline} baseline`);
  if (a.steps) parts.push(`${a.steps} steps${a.rule ? ` (${a.rule} rule)` : ''}`);
  if (a.reduction) parts.push(a.reduction === 'l2' ? 'L2 norm over the embedding' : 'summed over the embedding');
  const c = a.completeness;
  if (c) {
    const delta = c.targetInput - c.targetBaseline;
    const err = c.sumAttributions - delta;
    const rel = delta !== 0 ? ` (${(Math.abs(err / delta) * 100).toPrecision(2)}% of T(x) − T(baseline))` : '';
    const num = (v: number, d: number) => v.toPrecision(d).replace(/^-/, '−');
    parts.push(`completeness: Σ = ${num(c.sumAttributions, 4)} vs T(x) − T(baseline) = ${num(delta, 4)}, error ${num(err, 2)}${rel}`);
  }
  return { method, scores: Array.from(a.scores), detail: parts.length ? parts.join(', ') : undefined };
}

function tokensOf(trace: Trace, which: 'tokens' | 'decoderTokens'): readonly Token[] {
  const t = which === 'decoderTokens' ? trace.decoderTokens : trace.tokens;
  if (!t) throw new AttnscopeError(`the attributions follow decoderTokens but the trace has none`);
  return t;
}

export interface SaliencyOptions extends TargetNaming {
  /** Which rows (attribution names of Trace.attributions.scores); default all that follow `tokens`. */
  methods?: readonly string[];
  /** The token sequence shown (default 'tokens', the encoder's for encoder-decoders). */
  sequence?: 'tokens' | 'decoderTokens';
}

function attributionsOf(trace: Trace): Attributions {
  if (!trace.attributions) throw new AttnscopeError('the trace has no attributions (run attnscope attribute … --out trace.json)');
  return trace.attributions;
}

/** The saliency view's data from a trace's attributions. */
export function saliencyViewData(trace: Trace, options: SaliencyOptions = {}): SaliencyData {
  const attr = attributionsOf(trace);
  const sequence = options.sequence ?? 'tokens';
  const tokens = tokensOf(trace, sequence);
  const entries = Object.entries(attr.scores).filter(([name, a]) => (a.tokens ?? 'tokens') === sequence && (!options.methods || options.methods.includes(name)));
  if (options.methods) {
    for (const m of options.methods) if (!(m in attr.scores)) throw new AttnscopeError(`the trace has no attribution '${m}' (it has: ${Object.keys(attr.scores).join(', ') || 'none'})`);
  }
  if (entries.length === 0) throw new AttnscopeError(`the trace has no token attributions for its ${sequence === 'tokens' ? 'input' : 'decoder'} tokens`);
  const rank = (name: string, a: TokenAttribution) => {
    const i = METHOD_ORDER.indexOf(a.method in METHOD_NAMES ? a.method : name);
    return i < 0 ? METHOD_ORDER.length : i;
  };
  entries.sort((a, b) => rank(a[0], a[1]) - rank(b[0], b[1]));
  const t = attr.target;
  const targetSeq = t.stack === 'decoder' ? 'decoderTokens' : 'tokens';
  return {
    tokens: tokens.map((x) => viewTokenLabel(x.text, trace.model.modelType)),
    target: targetLabel(trace, t, options),
    targetPosition: targetSeq === sequence && t.position >= 0 && t.position < tokens.length ? t.position : undefined,
    rows: entries.map(([name, a]) => methodRow(name, a)),
  };
}

export interface ImportanceOptions extends TargetNaming {
  stack?: StackName;
  /** 'michel' (default): |∂T/∂g| divided by each layer's L2 norm (Michel et al. 2019); 'signed': ∂T/∂g itself. */
  normalization?: 'michel' | 'signed';
}

/** The head-importance grid's data from a trace's attributions (gate gradients per stack). */
export function headImportanceViewData(trace: Trace, options: ImportanceOptions = {}): HeadImportanceData {
  const attr = attributionsOf(trace);
  const map = attr.headImportance ?? {};
  const stacks = Object.keys(map) as StackName[];
  if (stacks.length === 0) throw new AttnscopeError('the trace has no head importance (attnscope attribute --method headImportance)');
  const stack = options.stack ?? (stacks.includes('self') ? 'self' : stacks.includes('encoder') ? 'encoder' : stacks[0]!);
  const raw = map[stack];
  if (!raw) throw new AttnscopeError(`the trace has no head importance for the '${stack}' stack (it has: ${stacks.join(', ')})`);
  const signed = options.normalization === 'signed';
  const m = signed ? raw : michelHeadImportance(raw);
  const [layers, heads] = m.dims;
  const values = Array.from({ length: layers }, (_, l) => Array.from(m.data.subarray(l * heads, (l + 1) * heads)));
  return {
    values,
    target: targetLabel(trace, attr.target, options),
    signed,
    method: signed
      ? '∂T/∂g for a gate g = 1 on each head’s output (positive: the head raises the target)'
      : 'importance = |∂T/∂g| for a gate g = 1 on each head’s output, each layer divided by its L2 norm (Michel et al. 2019)',
    stack,
  };
}

/** True when the stack's attention never looks at a later key (causal), read from the trace. */
function isCausal(trace: Trace, stack: StackName): boolean {
  const terms = trace.scores?.[stack];
  if (terms) return terms.causal;
  const s = trace.attention[stack];
  if (!s || s.layers.length === 0) return true;
  const [heads, rows, cols] = s.dims;
  const a = s.layers[0]!;
  for (let h = 0; h < heads; h++) for (let q = 0; q < rows; q++) for (let k = q + 1; k < cols; k++) if (a[(h * rows + q) * cols + k]! > 0) return false;
  return true;
}

/** The logit-lens grid's data from a trace's logit lens. */
export function logitLensViewData(trace: Trace): LogitLensData {
  const lens = trace.logitLens;
  if (!lens) throw new AttnscopeError('the trace has no logit lens (trace with --logit-lens K)');
  const positions = lens.stack === 'decoder' ? (trace.decoderTokens ?? []) : trace.tokens;
  const n = positions.length;
  const k = lens.topK;
  const mt = trace.model.modelType;
  const causal = lens.stack === 'decoder' || isCausal(trace, lens.stack);
  const cells = lens.layers.map((row, r) => {
    if (row.ids.length !== n * k || row.probabilities.length !== n * k) {
      throw new AttnscopeError(`logit lens row ${r}: ${row.ids.length} ids for ${n} positions × top ${k}`);
    }
    return positions.map((_, p) =>
      Array.from({ length: k }, (_, i): LensCandidate => {
        const at = p * k + i;
        return { token: viewTokenLabel(row.tokens[at] ?? String(row.ids[at]), mt), probability: row.probabilities[at]! };
      }),
    );
  });
  // The input's own answer: the next token (causal) or the token itself (masked LMs), compared by id.
  const actualIds = positions.map((_, p) => (causal ? (positions[p + 1]?.id ?? null) : positions[p]!.id));
  const last = lens.layers.length - 1;
  return {
    tokens: positions.map((t) => viewTokenLabel(t.text, mt)),
    layers: lens.layers.map((_, r) => (r === 0 ? 'embeddings' : `L${r - 1}`)),
    cells,
    predicts: causal ? 'next token' : 'token at the position',
    // A cell is bold where its top id is the actual id; labels of equal ids are equal.
    actual: actualIds.map((id, p) => {
      if (id === null) return null;
      for (let r = 0; r <= last; r++) if (lens.layers[r]!.ids[p * k] === id) return cells[r]![p]![0]!.token;
      return viewTokenLabel(positions[causal ? p + 1 : p]!.text, mt);
    }),
  };
}

/** Every analysis view's data the trace holds (each absent when the trace lacks it). */
export function analysisViewData(trace: Trace, naming: TargetNaming = {}): AnalysisViewData {
  const out: AnalysisViewData = {};
  if (trace.attributions) {
    const hasTokens = Object.values(trace.attributions.scores).some((a) => (a.tokens ?? 'tokens') === 'tokens');
    if (hasTokens) out.saliency = saliencyViewData(trace, naming);
    if (trace.attributions.headImportance && Object.keys(trace.attributions.headImportance).length > 0) out.importance = headImportanceViewData(trace, naming);
  }
  if (trace.logitLens) out.lens = logitLensViewData(trace);
  return out;
}

/** What an ablation run reports (src/engine/ablation.ts' AblationResult has this shape). */
export interface AblationRun {
  heads: readonly { layer: number; head: number; stack?: StackName }[];
  mode: 'zero' | 'mean';
  target: { kind: 'logprob' | 'logit'; stack: StackName; position: number; tokenId: number | null; before: number; after: number };
  kl: number | null;
  cosine: number;
  candidates: readonly { id: number; token: string; before: number; after: number }[];
}

/**
 * The ablation view's data from an ablation run on a trace's input: where the distribution is read
 * ("next token after “is” (position 4)", or "token at the [MASK] (position 3)" for masked LMs),
 * the target's change, KL and cosine, and the candidates' probabilities before and after.
 */
export function ablationViewData(trace: Trace, run: AblationRun, naming: TargetNaming = {}): AblationData {
  const mt = trace.model.modelType;
  const t = run.target;
  const tokens = t.stack === 'decoder' ? (trace.decoderTokens ?? []) : trace.tokens;
  const at = tokens[t.position];
  const atLabel = at ? `“${viewTokenLabel(at.text, mt)}”` : '';
  const masked = t.stack !== 'decoder' && !isCausal(trace, t.stack);
  const seq = t.stack === 'decoder' ? 'decoder ' : '';
  const where = masked ? `${seq}token at ${atLabel} (position ${t.position})` : `next ${seq}token after ${atLabel} (position ${t.position})`;
  if (run.candidates.length === 0) throw new AttnscopeError(`the ablation has no distribution to compare (${trace.model.name}'s head scores tokens: target ${t.before} → ${t.after})`);
  const target =
    t.tokenId === null
      ? { label: `logit at position ${t.position}`, before: t.before, after: t.after }
      : { label: t.kind === 'logit' ? `logit of ${quoted(trace, t.tokenId, naming)}` : `log p(${quoted(trace, t.tokenId, naming)})`, before: t.before, after: t.after };
  return {
    heads: run.heads.map(({ layer, head }) => ({ layer, head })),
    mode: run.mode,
    stack: run.heads[0]?.stack ?? t.stack,
    where,
    candidates: run.candidates.map((c) => ({ token: viewTokenLabel(c.token, mt), before: c.before, after: c.after })),
    target,
    kl: run.kl ?? Number.NaN,
    cosine: run.cosine,
  };
}

/** What an attribution run reports (src/engine/gradients.ts' AttributionResult has this shape). */
export interface AttributionRun {
  target: { name: string; position: number; tokenId: number | null; versusId?: number; stack: StackName; value: number };
  embeddingGrad?: Matrix;
  gradientNorm?: Float32Array;
  gradXInput?: Float32Array;
  integratedGradients?: { scores: Float32Array; baseline: string; steps: number; rule: string; completeness: { sumAttributions: number; targetInput: number; targetBaseline: number } };
  attentionGrad?: StackMap;
  headImportance?: Partial<Record<StackName, { raw: Matrix }>>;
}

/** An attribution run as the Trace's attributions (the form trace files and these views read). */
export function traceAttributions(run: AttributionRun): Attributions {
  const t = run.target;
  const scores: Attributions['scores'] = {};
  if (run.gradientNorm) scores.gradient = { method: 'gradient', reduction: 'l2', scores: run.gradientNorm };
  if (run.gradXInput) scores.gradXInput = { method: 'gradXInput', reduction: 'sum', scores: run.gradXInput };
  const ig = run.integratedGradients;
  if (ig) {
    const { sumAttributions, targetInput, targetBaseline } = ig.completeness;
    scores.integratedGradients = { method: 'integratedGradients', reduction: 'sum', scores: ig.scores, baseline: ig.baseline, steps: ig.steps, rule: ig.rule, completeness: { sumAttributions, targetInput, targetBaseline } };
  }
  const headImportance: Partial<Record<StackName, Matrix>> = {};
  for (const [stack, h] of Object.entries(run.headImportance ?? {})) if (h) headImportance[stack as StackName] = h.raw;
  return {
    target: { kind: t.name, position: t.position, tokenId: t.tokenId, ...(t.versusId !== undefined ? { contrastTokenId: t.versusId } : {}), ...(t.stack === 'decoder' ? { stack: 'decoder' as const } : {}), value: t.value },
    scores,
    ...(run.embeddingGrad ? { embeddingGrad: run.embeddingGrad } : {}),
    ...(run.attentionGrad ? { attentionGrad: run.attentionGrad } : {}),
    ...(Object.keys(headImportance).length ? { headImportance } : {}),
  };
}
