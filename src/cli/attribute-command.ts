/**
 * `attnscope attribute [model] (--text … | --ids …) [--target-position P] [--target-token ID]
 *  [--contrast-token ID | --continuation-from I] [--method …] [--baseline zero|pad|mask|bos]
 *  [--steps N|auto] [--tolerance F] [--max-steps N] [--ig-batch N] [--rule midpoint|trapezoid]
 *  [--json] [--out trace.json|.safetensors]`: which input
 * tokens, attention weights and heads mattered for a target T, by gradients computed in the
 * model's graph (engine/gradients.ts) and the analyses of analysis/attribution.ts.
 *
 * --json prints one object whose fields mirror the fixtures' gradients.json: `target` {kind,
 * position, token_id, value, stack?}, `embeddingGrad` [position][width], `gradXInput`,
 * `integratedGradients` and `igCompleteness` {sum_attributions, target_x, target_baseline, …},
 * `attentionGrad` {<stack>: [layer][head][query][key]}, `headImportance` {<stack>: [layer][head]}
 * (signed ∂T/∂gate), plus `gradientNorm`, `headImportanceNormalized` (Michel et al.),
 * `attentionXGradient` and `gradientRollout` (Chefer et al.). Without --json: a table per token.
 */
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Attributions, LayerStack, Matrix, StackName, TokenAttribution, Trace } from '../core/trace.js';
import { attentionAttributions } from '../analysis/attribution.js';
import { ATTRIBUTION_METHODS, BASELINE_KINDS, attribute, type AttributeOptions, type AttributionMethod, type AttributionResult, type BaselineKind, type TargetSpec } from '../engine/gradients.js';
import { loadModel } from '../engine/load.js';
import type { Model } from '../engine/model.js';
import type { ModelInputs } from '../models/architecture.js';
import { writeTraceFile } from '../io/trace-file.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, parseIndex, parseLoadOptions, parseModelInput, parsePositiveInt } from './args.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote, UsageError } from './parse.js';

export const ATTRIBUTE_USAGE = `attnscope attribute [model] (--text "..." | --ids 1,2,3) [--target-position P] [--target-token ID]
                [--contrast-token ID | --continuation-from I] [--method ${ATTRIBUTION_METHODS.join(',')}]
                [--baseline ${BASELINE_KINDS.join('|')}] [--steps N|auto] [--tolerance F] [--max-steps N]
                [--rule midpoint|trapezoid] [--ig-batch N]
                [--pair "..."] [--type-ids 0,0,1] [--decoder-text "..." | --decoder-ids 0,5,6]
                [--src-lang CODE] [--tgt-lang CODE] [--truncate]
                [--json] [--out trace.json | trace.safetensors] [--revision REV] [--offline] [--threads N]

  Which input tokens, attention weights and heads mattered for a target T, by gradients the model's
  own graph computes (its backward pass runs in onnxruntime beside the forward pass).
  model        a model directory or Hub id (the embedded stories260k model when omitted)
  --text       the text the model runs on;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text (bypass the tokenizer); --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models: the decoder input (required: the target is
               a decoder position)
  --truncate   cut inputs longer than the model's maximum positions
${LANGUAGE_HELP}
  Target T (default: the log-probability of the model's top prediction at the last position for causal
  LMs and decoders; for masked LMs the input token at the first [MASK], predicted there):
  --target-position P   the position whose prediction T scores (causal LMs: the token after P)
  --target-token ID     T = log p(ID) at P instead of the top prediction (masked LMs: instead of the input token)
  --contrast-token ID   T = log p(--target-token) − log p(ID) at P (e.g. "he" vs "she")
  --continuation-from I T = Σ log p(x_i | x_<i) for i ≥ I: the log-probability of the input's tokens from I on
  Discriminators that score each token (ELECTRA pre-training heads): T = the raw logit at P.
  --method     comma-separated, default all: gradient (∂T/∂E and its L2 per token), gradXInput
               (Σ_d E·∂T/∂E), integratedGradients (with its completeness error), attentionGrad (∂T/∂α
               of every attention probability; adds attention × gradient and Chefer et al.'s
               gradient-weighted rollout per token), headImportance (∂T/∂gate per head; Michel et al.'s
               normalised |·| too)
  --baseline   integrated gradients' baseline: every word embedding zero, or the embedding of the pad,
               mask, BOS or EOS token at every position (default per family: zero where position
               embeddings are added to the words, a token where a normalisation comes first, since a
               zero baseline fails there); the completeness error is reported with every result
  --steps      integrated gradients' steps, or auto (the default): refine until the completeness error is
               within --tolerance — midpoint 16, 48, 144, 432 steps (each stage reuses the previous
               points), trapezoid 16, 32, 64, … — up to --max-steps, stopping early when two refinements
               in a row do not halve the error (a path with jumps, e.g. mixture-of-experts routing); the
               steps used and whether it converged are reported
  --tolerance  with --steps auto: the completeness error to reach, relative (default 0.01 = 1%)
  --max-steps  with --steps auto: the most steps to try (default 512)
  --rule       midpoint (default) or trapezoid
  --ig-batch   integrated gradients' path points per run (default: as many as 1 GiB of working memory
               allows, at most 64; 1 = one run per step)
  --json       one JSON object with fields named as in the fixtures' gradients.json (see above)
  --out        also write a trace with the attributions (.json or .safetensors; written atomically)
${MODEL_HELP}`;

export const ATTRIBUTE_OPTIONS = {
  ...INPUT_OPTIONS,
  'target-position': { type: 'string' },
  'target-token': { type: 'string' },
  'contrast-token': { type: 'string' },
  'continuation-from': { type: 'string' },
  method: { type: 'string' },
  baseline: { type: 'string' },
  steps: { type: 'string' },
  tolerance: { type: 'string' },
  'max-steps': { type: 'string' },
  'ig-batch': { type: 'string' },
  rule: { type: 'string' },
  json: { type: 'boolean' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

/** The methods of --method (comma-separated; 'all' for every one). */
export function parseMethods(value: string | undefined): AttributionMethod[] {
  if (value === undefined) return [...ATTRIBUTION_METHODS];
  const out: AttributionMethod[] = [];
  for (const part of value.split(',').map((s) => s.trim()).filter(Boolean)) {
    if (part === 'all') return [...ATTRIBUTION_METHODS];
    if (!ATTRIBUTION_METHODS.includes(part as AttributionMethod)) throw new UsageError(`--method: unknown method '${part}'; allowed: ${ATTRIBUTION_METHODS.join(', ')} (comma-separated) or all`);
    if (!out.includes(part as AttributionMethod)) out.push(part as AttributionMethod);
  }
  if (out.length === 0) throw new UsageError(`--method: no method given; allowed: ${ATTRIBUTION_METHODS.join(', ')} or all`);
  return out;
}

/** Whether the model's head scores every token with one number (ELECTRA's discriminator). */
function scoresTokens(model: Model): boolean {
  const archs = model.config.raw.architectures;
  return Array.isArray(archs) && archs.some((a) => a === 'ElectraForPreTraining' || a === 'ElectraForTokenClassification');
}

function targetSpec(values: { 'target-position'?: string; 'target-token'?: string; 'contrast-token'?: string; 'continuation-from'?: string }, model: Model): TargetSpec | undefined {
  const position = parseIndex(values['target-position'], '--target-position');
  const tokenId = parseIndex(values['target-token'], '--target-token');
  const versusId = parseIndex(values['contrast-token'], '--contrast-token');
  const from = parseIndex(values['continuation-from'], '--continuation-from');
  if (from !== undefined) {
    if (position !== undefined || tokenId !== undefined || versusId !== undefined) throw new UsageError('--continuation-from: give it alone (the target is the continuation, not a position or a token)');
    return { kind: 'continuation', from };
  }
  if (versusId !== undefined) {
    if (tokenId === undefined) throw new UsageError('--contrast-token needs --target-token (T = log p(target) − log p(contrast))');
    return { kind: 'contrast', position, tokenId, versusId };
  }
  if (scoresTokens(model)) {
    if (tokenId !== undefined) throw new UsageError(`--target-token: ${model.name}'s head scores each token with one number; there is no token to choose`);
    if (position === undefined) throw new UsageError(`${model.name}'s head scores each token: give --target-position P (T = its logit at P)`);
    return { kind: 'logit', position };
  }
  if (position === undefined && tokenId === undefined) return undefined;
  return { kind: 'token', position, tokenId };
}

const list = (a: Float32Array): number[] => Array.from(a);
const rows = (m: Matrix): number[][] => Array.from({ length: m.dims[0] }, (_, r) => list(m.data.subarray(r * m.dims[1], (r + 1) * m.dims[1])));
const stackArrays = (s: LayerStack): number[][][][] => s.layers.map((layer) => Array.from({ length: s.dims[0] }, (_, h) => rows({ dims: [s.dims[1], s.dims[2]], data: layer.subarray(h * s.dims[1] * s.dims[2], (h + 1) * s.dims[1] * s.dims[2]) })));

/** Trace.attributions from the engine's result and the analyses of its attention gradients. */
export function attributionsOf(result: AttributionResult, trace: Trace): Attributions {
  const t = result.target;
  const a: Attributions = {
    target: {
      kind: t.name, position: t.position, tokenId: t.tokenId, value: t.value,
      ...(t.versusId !== undefined ? { contrastTokenId: t.versusId } : {}),
      ...(t.stack === 'decoder' ? { stack: 'decoder' as const } : {}),
    },
    scores: {},
  };
  if (result.gradientNorm) a.scores.gradient = { method: 'gradient', reduction: 'l2', scores: result.gradientNorm };
  if (result.gradXInput) a.scores.gradXInput = { method: 'gradXInput', reduction: 'sum', scores: result.gradXInput };
  const ig = result.integratedGradients;
  if (ig) {
    const c = ig.completeness;
    a.scores.integratedGradients = {
      method: 'integratedGradients', reduction: 'sum', scores: ig.scores, baseline: ig.baseline, steps: ig.steps, rule: ig.rule,
      completeness: { sumAttributions: c.sumAttributions, targetInput: c.targetInput, targetBaseline: c.targetBaseline },
    };
  }
  if (result.embeddingGrad) a.embeddingGrad = result.embeddingGrad;
  if (result.attentionGrad) {
    a.attentionGrad = result.attentionGrad;
    const derived = attentionAttributions({ ...trace, attributions: a });
    Object.assign(a.scores, derived);
  }
  if (result.headImportance) {
    a.headImportance = {};
    for (const [s, h] of Object.entries(result.headImportance) as [StackName, { raw: Matrix }][]) a.headImportance[s] = h.raw;
  }
  return a;
}

/** The one JSON object of --json (fields as in gradients.json). */
export function attributeJson(result: AttributionResult, trace: Trace, attributions: Attributions): Record<string, unknown> {
  const t = result.target;
  const out: Record<string, unknown> = {
    model: trace.model.name,
    tokens: trace.tokens.map((tok, i) => ({ index: i, id: tok.id, text: tok.text })),
    ...(trace.decoderTokens ? { decoderTokens: trace.decoderTokens.map((tok, i) => ({ index: i, id: tok.id, text: tok.text })) } : {}),
    target: {
      kind: t.name, position: t.position, token_id: t.tokenId, value: t.value,
      ...(t.versusId !== undefined ? { versus_id: t.versusId } : {}),
      ...(t.stack === 'decoder' ? { stack: 'decoder' } : {}),
      ...(t.terms.length > 1 ? { terms: t.terms.map((x) => ({ position: x.position, token_id: x.tokenId, weight: x.weight })) } : {}),
    },
  };
  if (result.embeddingGrad) out.embeddingGrad = rows(result.embeddingGrad);
  if (result.gradientNorm) out.gradientNorm = list(result.gradientNorm);
  if (result.gradXInput) out.gradXInput = list(result.gradXInput);
  const ig = result.integratedGradients;
  if (ig) {
    out.integratedGradients = list(ig.scores);
    out.igCompleteness = {
      sum_attributions: ig.completeness.sumAttributions, target_x: ig.completeness.targetInput, target_baseline: ig.completeness.targetBaseline,
      error: ig.completeness.error, relative_error: ig.completeness.relativeError,
      baseline: ig.baseline, baseline_token_id: ig.baselineTokenId, steps: ig.steps, rule: ig.rule,
      batch_size: ig.batch.size, runs: ig.batch.runs,
      ...(ig.auto ? { auto: { tolerance: ig.auto.tolerance, max_steps: ig.auto.maxSteps, converged: ig.auto.converged, stopped: ig.auto.stopped, stages: ig.auto.stages.map((x) => ({ steps: x.steps, relative_error: x.relativeError })) } } : {}),
    };
  }
  if (result.attentionGrad) {
    out.attentionGrad = Object.fromEntries(Object.entries(result.attentionGrad).map(([s, v]) => [s, stackArrays(v)]));
    for (const [name, s] of Object.entries(attributions.scores)) {
      if (s.method === 'attentionXGradient' || s.method === 'gradientRollout') out[name] = list(s.scores);
    }
  }
  if (result.headImportance) {
    out.headImportance = Object.fromEntries(Object.entries(result.headImportance).map(([s, h]) => [s, rows(h.raw)]));
    out.headImportanceNormalized = Object.fromEntries(Object.entries(result.headImportance).map(([s, h]) => [s, rows(h.normalized)]));
  }
  return out;
}

const num = (v: number, d = 4): string => (Number.isFinite(v) ? v.toFixed(d) : String(v));

/** The readable report: the target, a row per token with every token-level score, the top heads. */
export function attributeTable(trace: Trace, attributions: Attributions, result: AttributionResult): string {
  const t = attributions.target;
  const targetTokens = t.stack === 'decoder' ? trace.decoderTokens ?? [] : trace.tokens;
  const at = targetTokens[t.position];
  const lines = [
    `# ${trace.model.name} · target ${t.kind}: position ${t.position}${at ? ` (${sanitize(at.text, 20)})` : ''}${t.tokenId !== null ? `, token ${t.tokenId}` : ''}${t.contrastTokenId !== undefined ? ` vs ${t.contrastTokenId}` : ''} · T = ${num(t.value)}`,
  ];
  for (const side of ['tokens', 'decoderTokens'] as const) {
    const cols = Object.entries(attributions.scores).filter(([, s]) => (s.tokens ?? 'tokens') === side);
    if (cols.length === 0) continue;
    const tokens = side === 'tokens' ? trace.tokens : trace.decoderTokens ?? [];
    if (side === 'decoderTokens') lines.push('', 'decoder tokens:');
    const head = ['pos', 'token', ...cols.map(([n]) => n)];
    const body = tokens.map((tok, i) => [String(i), sanitize(tok.text, 16), ...cols.map(([, s]: [string, TokenAttribution]) => num(s.scores[i]!))]);
    const widths = head.map((h, c) => Math.max(h.length, ...body.map((r) => [...r[c]!].length)));
    const fmtRow = (r: string[]) => r.map((c, k) => (k === 1 ? c.padEnd(widths[k]!) : c.padStart(widths[k]!))).join('  ').trimEnd();
    lines.push(fmtRow(head), ...body.map(fmtRow));
  }
  const ig = result.integratedGradients;
  if (ig) {
    const c = ig.completeness;
    lines.push('', `integrated gradients (${ig.steps} steps, ${ig.rule}, baseline ${ig.baseline}${ig.baselineTokenId !== null ? ` = token ${ig.baselineTokenId}` : ''}): Σ = ${num(c.sumAttributions)}, T(x) − T(baseline) = ${num(c.targetInput - c.targetBaseline)}, completeness error ${num(c.error)} (${num(100 * c.relativeError, 2)}%)${autoNote(ig)}`);
  }
  if (result.headImportance) {
    for (const [s, h] of Object.entries(result.headImportance) as [StackName, { raw: Matrix; normalized: Matrix }][]) {
      const heads = h.normalized.dims[1];
      const ranked = Array.from(h.normalized.data, (v, i) => ({ v, raw: h.raw.data[i]!, l: Math.floor(i / heads), h: i % heads })).sort((a, b) => b.v - a.v).slice(0, 8);
      lines.push(`head importance (${s}, Michel et al., |∂T/∂gate| / layer L2; signed ∂T/∂gate in brackets): ${ranked.map((r) => `L${r.l}H${r.h} ${num(r.v, 3)} (${num(r.raw, 3)})`).join(', ')}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** What an 'auto' refinement did, for the table line (nothing for fixed steps). */
function autoNote(ig: NonNullable<AttributionResult['integratedGradients']>): string {
  const a = ig.auto;
  if (!a) return '';
  const tol = `${Number((100 * a.tolerance).toPrecision(3))}%`;
  if (a.converged) return ` — auto: within ${tol} at ${ig.steps} steps`;
  const why = a.stopped === 'stalled' ? 'the error stopped shrinking (the path has jumps the gradients cannot see)'
    : a.stopped === 'degenerate' ? 'T(x) − T(baseline) is within float32 noise'
    : `--max-steps ${a.maxSteps} reached`;
  return ` — auto: NOT within ${tol} after ${ig.steps} steps: ${why}`;
}

export async function attributeCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, ATTRIBUTE_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`attribute: expected at most one model, got ${positionals.join(' ')}`);
  const methods = parseMethods(values.method);
  const baseline = values.baseline;
  if (baseline !== undefined && !BASELINE_KINDS.includes(baseline as BaselineKind)) throw new UsageError(`--baseline: expected ${BASELINE_KINDS.join(', ')}, got '${baseline}'`);
  const steps = values.steps === 'auto' ? 'auto' : parsePositiveInt(values.steps, '--steps');
  if (typeof steps === 'number' && steps > 100_000) throw new UsageError(`--steps: expected 1 to 100000 or auto, got ${steps}`);
  let tolerance: number | undefined;
  if (values.tolerance !== undefined) {
    tolerance = Number(values.tolerance);
    if (values.tolerance.trim() === '' || !(tolerance > 0 && tolerance < 1)) throw new UsageError(`--tolerance: expected a number above 0 and below 1 (0.01 = 1%), got '${values.tolerance}'`);
  }
  const maxSteps = parsePositiveInt(values['max-steps'], '--max-steps');
  if (maxSteps !== undefined && maxSteps > 100_000) throw new UsageError(`--max-steps: expected 1 to 100000, got ${maxSteps}`);
  if ((tolerance !== undefined || maxSteps !== undefined) && typeof steps === 'number') {
    throw new UsageError(`--${tolerance !== undefined ? 'tolerance' : 'max-steps'} applies to --steps auto (the default), not --steps ${steps}`);
  }
  const igBatch = parsePositiveInt(values['ig-batch'], '--ig-batch');
  if (igBatch !== undefined && igBatch > 4096) throw new UsageError(`--ig-batch: expected 1 to 4096, got ${igBatch}`);
  const rule = values.rule;
  if (rule !== undefined && rule !== 'midpoint' && rule !== 'trapezoid') throw new UsageError(`--rule: expected midpoint or trapezoid, got '${rule}'`);
  const igOnly: [string, unknown][] = [['baseline', baseline], ['steps', steps], ['rule', rule], ['tolerance', tolerance], ['max-steps', maxSteps], ['ig-batch', igBatch]];
  const stray = igOnly.find(([, v]) => v !== undefined);
  if (stray && !methods.includes('integratedGradients')) throw new UsageError(`--${stray[0]} applies to --method integratedGradients`);
  if (values.out !== undefined) checkOut(values.out, ['.json', '.safetensors'], 'attribute --out (a trace)');
  const source = positionals[0];
  checkModelArg(source);
  const input = parseModelInput(values, 'attribute', 'attribute: give --text "..." (or --ids 1,2,3)');
  const model = await loadModel(source, parseLoadOptions(values));
  try {
    if (model.info.kind === 'encoder-decoder' && input.options.decoderIds === undefined && input.options.decoderText === undefined) {
      throw new UsageError(`attribute: ${model.name} is an encoder-decoder; give --decoder-text "..." or --decoder-ids (the target is a decoder position)`);
    }
    const spec = targetSpec(values, model);
    // The trace gives the tokens (and the attention the analyses read); the gradients run on its ids.
    const trace = await model.trace(input.text, input.options);
    const inputs: ModelInputs = {
      inputIds: trace.tokens.map((t) => t.id),
      ...(trace.tokens.some((t) => t.segment !== 0) ? { typeIds: trace.tokens.map((t) => t.segment) } : {}),
      ...(trace.decoderTokens ? { decoderInputIds: trace.decoderTokens.map((t) => t.id) } : {}),
    };
    const options: AttributeOptions = {
      methods,
      ...(spec ? { target: spec } : {}),
      ...(baseline !== undefined ? { baseline: baseline as BaselineKind } : {}),
      ...(steps !== undefined ? { steps } : {}),
      ...(tolerance !== undefined ? { tolerance } : {}),
      ...(maxSteps !== undefined ? { maxSteps } : {}),
      ...(igBatch !== undefined ? { batchSize: igBatch } : {}),
      ...(rule !== undefined ? { rule: rule as 'midpoint' | 'trapezoid' } : {}),
    };
    const result = await attribute(model, inputs, options);
    const attributions = attributionsOf(result, trace);
    trace.attributions = attributions;
    const text = values.json ? `${JSON.stringify(attributeJson(result, trace, attributions))}\n` : attributeTable(trace, attributions, result);
    process.stdout.write(text);
    if (values.out !== undefined) {
      await writeTraceFile(values.out, trace);
      reportWrote(values.out, `trace with attributions (${Object.keys(attributions.scores).join(', ')})`);
    }
  } finally {
    await model.dispose();
  }
}
