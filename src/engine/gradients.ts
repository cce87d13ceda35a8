/**
 * Gradient-based attribution (issue 10): which input tokens, attention weights and heads mattered
 * for a scalar target T, computed by the model's own graph grown with its backward pass
 * (graph/autodiff.ts) and run by the same runtime. Browser-safe: imports nothing from Node.
 *
 * The graph. After the architecture has built its forward pass, `gradientGraph`:
 * - finds the word-embedding lookup E = Gather(table, input_ids) (HF's `inputs_embeds`: before any
 *   scaling, position/type embedding, norm or projection; the encoder's for encoder-decoders) and
 *   puts X = α·E + (1 − α)·E′ in its place for everything that read it, with α an input of one
 *   value per batch item (`gradients.alpha` [steps]; X is [steps, seq, d] and the rest of the
 *   graph carries the batch dimension: the architectures' reshapes copy it) and the baseline
 *   E′ = s · Gather(table, baseline ids) (s = 0: the zero baseline). At α = 1, X = E exactly
 *   (1·E + 0·E′), so the model is the model;
 * - builds T from the `logits` output: per batch item b, T_b = Σ_k w_k · log_softmax(logits[b, p_k])[t_k]
 *   (a token id −1 means the argmax at p_k, resolved in the graph and reported), or for heads that
 *   score each position with one number (ELECTRA's discriminator, logits [b, seq]) T_b = Σ_k w_k ·
 *   logits[b, p_k]; T = Σ_b T_b, so ∂T/∂X_b = ∂T_b/∂X_b (the items are independent);
 * - appends ∂T/∂X, and in the full variant ∂T/∂α for every layer's attention probabilities (the
 *   values the `attention.<stack>.<layer>` taps read, treated as the inputs of α·V) and ∂T/∂g for
 *   the head gates `head_gates.<stack>` (TapRequest.headGates), all in one backward pass.
 *
 * Methods. gradient: ∂T/∂E at the input (and its L2 norm per token). gradient × input: Σ_d E·∂T/∂E.
 * Integrated gradients (Sundararajan et al. 2017): Σ_d (E − E′)·(1/N)·Σ_k ∂T/∂X at α_k, midpoint
 * rule α_k = (k + ½)/N by default, with completeness Σ attributions vs T(E) − T(E′) reported; the
 * path points run as the batch items of as few runs as a memory bound allows (engine/batch-memory.ts;
 * `batchSize: 1` runs them one after another). Steps 'auto' (the default) refines with nested points
 * until completeness is within a tolerance (1%), reporting the steps used and whether it got there
 * (see AttributeOptions.steps and HARD_PATHS). Attention gradient ∂T/∂α per stack,
 * layer, head, query, key (attention × gradient = α ⊙ ∂T/∂α; α comes from the same pass). Head
 * importance: ∂T/∂g at g = 1, signed, and Michel et al. 2019's |∂T/∂g| normalised per layer (L2).
 *
 * Baselines (BaselineKind): 'zero' (E′ = 0), or 'pad', 'mask', 'bos', 'eos': that token's embedding at
 * every position (position/type embeddings, the decoder side etc. stay as they are). Defaults per
 * family (`defaultBaseline`), chosen by measuring completeness at 50 midpoint steps on the fixtures:
 * - 'zero' for families that add position or type embeddings to E before any normalisation: BERT,
 *   RoBERTa, XLM-R, CamemBERT, ELECTRA, DistilBERT, ALBERT, MPNet, GPT-2, OPT, Marian, Pegasus
 *   (completeness error 0.003% to 0.72%).
 * - a token baseline for every other family, the first of 'bos', 'eos', 'pad', 'mask' the checkpoint
 *   has whose embedding row is not all zeros (padding rows often are: then it is the zero baseline).
 *   Models whose first operation on E is a normalisation (RMSNorm: Llama, Mistral, Qwen2, Gemma,
 *   T5, ...; LayerNorm: GPT-NeoX, OLMo, BLOOM, ...) are nearly invariant to the scale of E, so
 *   T(αE) changes almost entirely for α below the first midpoint and the zero baseline misses
 *   completeness by 60% to 11×; BART and mBART scale E by √d and their zero path is steep too
 *   (mBART: 493% at 50 steps), while their <s> baseline gives 0.16% and 0.02%.
 * HARD_PATHS lists the families where 50 midpoint steps do not reach 1% on the fixtures, with why.
 */
import { AttnscopeError } from '../core/errors.js';
import type { LayerStack, Matrix, StackMap, StackName } from '../core/trace.js';
import { appendGradients, inferRank } from '../graph/autodiff.js';
import type { Value } from '../graph/builder.js';
import type { BuildContext, ModelInputs, TapRequest } from '../models/architecture.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { toFloat32 } from './assemble.js';
import { backwardItemBytes, DEFAULT_BATCH_MEMORY_MB, itemsPerRun, memoryShape } from './batch-memory.js';
import type { GraphExtension, Model } from './model.js';

export type AttributionMethod = 'gradient' | 'gradXInput' | 'integratedGradients' | 'attentionGrad' | 'headImportance';
export const ATTRIBUTION_METHODS: readonly AttributionMethod[] = ['gradient', 'gradXInput', 'integratedGradients', 'attentionGrad', 'headImportance'];

export type BaselineKind = 'zero' | 'pad' | 'mask' | 'bos' | 'eos';
export const BASELINE_KINDS: readonly BaselineKind[] = ['zero', 'pad', 'mask', 'bos', 'eos'];

export type IntegrationRule = 'midpoint' | 'trapezoid' | 'gauss-legendre';
export const INTEGRATION_RULES: readonly IntegrationRule[] = ['midpoint', 'trapezoid', 'gauss-legendre'];

/**
 * Points α and weights of a rule on [0, 1]: midpoint α_k = (k + ½)/n, weights 1/n; trapezoid
 * α_k = k/n (n + 1 points), weights 1/n with ½ at the ends; Gauss–Legendre the n roots of P_n
 * mapped to [0, 1] (exact for polynomials of degree 2n − 1: far fewer steps for smooth paths).
 */
export function integrationPoints(rule: IntegrationRule, n: number): { alpha: number; weight: number }[] {
  if (rule === 'midpoint') return Array.from({ length: n }, (_, k) => ({ alpha: (k + 0.5) / n, weight: 1 / n }));
  if (rule === 'trapezoid') return Array.from({ length: n + 1 }, (_, k) => ({ alpha: k / n, weight: (k === 0 || k === n ? 0.5 : 1) / n }));
  const out: { alpha: number; weight: number }[] = [];
  for (let i = 0; i < n; i++) {
    // Newton's method on P_n from the Chebyshev-like first guess; P_n by the three-term recurrence.
    let x = Math.cos((Math.PI * (i + 0.75)) / (n + 0.5));
    let dp = 1;
    for (let iter = 0; iter < 100; iter++) {
      let p0 = 1;
      let p1 = x;
      for (let k = 2; k <= n; k++) [p0, p1] = [p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k];
      dp = (n * (x * p1 - p0)) / (x * x - 1);
      const dx = p1 / dp;
      x -= dx;
      if (Math.abs(dx) < 1e-15) break;
    }
    out.push({ alpha: (1 - x) / 2, weight: 1 / ((1 - x * x) * dp * dp) });
  }
  return out.sort((a, b) => a.alpha - b.alpha);
}

/**
 * What T is. Positions index the input tokens (the decoder's for encoder-decoders); for causal LMs
 * and decoders the score at position p is the prediction of the token after p.
 */
export type TargetSpec =
  /** log p(tokenId) at `position`. */
  | { kind: 'token'; position?: number; tokenId?: number }
  /** Σ_{i ≥ from} log p(x_i | x_<i): the log-probability of the input's tokens from `from` on (causal LMs, decoders). */
  | { kind: 'continuation'; from: number }
  /** log p(tokenId) − log p(versusId) at `position` ("he" vs "she"). */
  | { kind: 'contrast'; position?: number; tokenId: number; versusId: number }
  /** Heads that score each position with one number (ELECTRA's discriminator): that raw logit. */
  | { kind: 'logit'; position?: number };

export interface AttributeOptions {
  /**
   * Default: causal LMs and encoder-decoders the top prediction at the last (decoder) position;
   * masked LMs the input token at the first mask token (the top prediction when the input there is
   * the mask token); discriminator heads the logit at the first mask token. Without a mask token,
   * encoders need `position`.
   */
  target?: TargetSpec;
  /** Default: all of ATTRIBUTION_METHODS. */
  methods?: readonly AttributionMethod[];
  /** Integrated gradients' baseline; default `defaultBaseline(model)`. */
  baseline?: BaselineKind;
  /**
   * Integrated gradients' steps: a number, or 'auto' (the default): refine the rule with nested
   * points (midpoint: 16, 48, 144, … steps, each stage reusing the previous points; trapezoid: 16,
   * 32, 64, …; Gauss–Legendre: 8, 16, 32, … nodes, not nested) until the completeness error is
   * within `tolerance`, `maxSteps` is reached, or the error stops shrinking ('stalled': the path
   * has jumps, as top-k expert routing makes); the result says which (`IntegratedGradients.auto`).
   */
  steps?: number | 'auto';
  /** With steps 'auto': the relative completeness error to reach (default 0.01, i.e. 1%). */
  tolerance?: number;
  /** With steps 'auto': the most steps (default 512). */
  maxSteps?: number;
  /**
   * Integrated gradients' path points per session run (each a batch item of one run). Default: as
   * many as the memory budget `memoryMB` allows (engine/batch-memory.ts), at most 64; 1 runs the
   * steps one after another.
   */
  batchSize?: number;
  /** Working-memory budget of one batched run in MiB (default 1024). */
  memoryMB?: number;
  /** Default 'midpoint': α_k = (k + ½)/steps; 'trapezoid': α_k = k/steps, ends weighted ½; 'gauss-legendre': `steps` Gauss–Legendre nodes. */
  rule?: IntegrationRule;
  /** Head gates [layers·heads] per stack during the whole computation (default ones: the model as trained). */
  headGates?: Partial<Record<StackName, Float32Array>>;
  /** Integrated gradients: called after each run of path points (`done` of the stage's `total` new points, for `steps` steps). */
  onProgress?: (p: { steps: number; done: number; total: number }) => void;
  /** Stops before the next session run when it fires (rejects with the signal's reason). */
  signal?: AbortSignal;
}

/** One term of T: weight · score of `tokenId` at `position`. */
export interface TargetTerm {
  position: number;
  /** null for discriminator logits. */
  tokenId: number | null;
  weight: number;
}

export interface ResolvedTarget {
  kind: TargetSpec['kind'];
  /**
   * gradients.json-style name: 'causal_lm_argmax_logprob', 'seq2seq_argmax_logprob',
   * 'masked_lm_input_token_logprob', 'discriminator_logit', else 'token_logprob',
   * 'continuation_logprob', 'contrast_logprob'.
   */
  name: string;
  /** Position of the (last) term. */
  position: number;
  /** Token of the first term (null for discriminator logits). */
  tokenId: number | null;
  /** Contrastive targets: the token subtracted. */
  versusId?: number;
  /** Where positions index: 'decoder' for encoder-decoders, else 'self'. */
  stack: StackName;
  /** T = Σ weight · score(position, tokenId). */
  terms: TargetTerm[];
  /** T at the input. */
  value: number;
}

export interface IntegratedGradients {
  /** [tokens] Σ_d (E − E′)·mean_k ∂T/∂E at the path points. */
  scores: Float32Array;
  baseline: BaselineKind;
  /** The token whose embedding is the baseline at every position (null for 'zero'). */
  baselineTokenId: number | null;
  /** The steps used (with steps 'auto': those of the last stage). */
  steps: number;
  rule: IntegrationRule;
  /** Σ scores against T(input) − T(baseline); error = sum − (targetInput − targetBaseline), relativeError = |error| / |targetInput − targetBaseline|. */
  completeness: { sumAttributions: number; targetInput: number; targetBaseline: number; error: number; relativeError: number };
  /** Path points per session run (batch items) and the runs the points took (the end points α = 0, 1 come from the other passes). */
  batch: { size: number; runs: number };
  /** With steps 'auto': how the refinement went. */
  auto?: AutoSteps;
}

/** How an 'auto' integrated-gradients refinement ended. */
export interface AutoSteps {
  tolerance: number;
  maxSteps: number;
  /** The completeness error is within the tolerance. */
  converged: boolean;
  /**
   * 'tolerance': converged; 'max-steps': the next stage would exceed maxSteps; 'stalled': two
   * refinements in a row did not halve the error (a path with jumps: gradients cannot see them);
   * 'degenerate': T(input) − T(baseline) is within float32 noise, so there is no relative error to reach.
   */
  stopped: 'tolerance' | 'max-steps' | 'stalled' | 'degenerate';
  /** Each stage's steps and relative completeness error. */
  stages: { steps: number; relativeError: number }[];
}

export interface HeadImportance {
  /** ∂T/∂g at g = 1, [layers, heads], signed. */
  raw: Matrix;
  /** |raw| divided by the L2 norm of its layer's |raw| (Michel et al. 2019); rows of zeros stay zeros. */
  normalized: Matrix;
}

export interface AttributionResult {
  target: ResolvedTarget;
  /** Token-level results follow the (encoder) input tokens. */
  tokens: 'tokens';
  /** Width d of the word embeddings (ALBERT, ELECTRA: embedding_size). */
  embeddingWidth: number;
  /** ∂T/∂E [tokens, d] ('gradient'). */
  embeddingGrad?: Matrix;
  /** L2 norm of each row of embeddingGrad ('gradient'). */
  gradientNorm?: Float32Array;
  /** Σ_d E·∂T/∂E per token ('gradXInput'). */
  gradXInput?: Float32Array;
  integratedGradients?: IntegratedGradients;
  /** The attention probabilities α of the same pass ('attentionGrad'). */
  attention?: StackMap;
  /** ∂T/∂α per stack, [heads, queries, keys] per layer ('attentionGrad'). */
  attentionGrad?: StackMap;
  /** Per stack ('headImportance'). */
  headImportance?: Partial<Record<StackName, HeadImportance>>;
}

/** Graph value names of the gradient extension. */
const IN = {
  alpha: 'gradients.alpha',
  baselineIds: 'gradients.baseline_ids',
  baselineScale: 'gradients.baseline_scale',
  positions: 'gradients.target_positions',
  tokens: 'gradients.target_tokens',
  weights: 'gradients.target_weights',
} as const;
const OUT = {
  target: 'gradients.target',
  targetItems: 'gradients.target_items',
  resolvedTokens: 'gradients.resolved_tokens',
  embeddings: 'gradients.embeddings',
  baselineEmbeddings: 'gradients.baseline_embeddings',
  embeddingGrad: 'gradients.grad.embeddings',
  attentionGrad: (stack: string, layer: number) => `gradients.grad.attention.${stack}.${layer}`,
  gateGrad: (stack: string) => `gradients.grad.head_gates.${stack}`,
} as const;

type Variant = 'full' | 'embeddings';

/**
 * Grows a model graph (built with `logits`, `headGates` and, for 'full', `attention` taps) with
 * the baseline mix, the target and its backward pass (see the file header).
 */
export function gradientGraph(ctx: BuildContext, variant: Variant): void {
  const { g, config } = ctx;
  const lookups = g.graphNodes.filter((n) => n.opType === 'Gather' && n.inputs[1] === 'input_ids');
  if (lookups.length !== 1) {
    throw new AttnscopeError(`${config.modelType}: gradients need the word-embedding lookup (one Gather of the table by input_ids); the graph has ${lookups.length}`);
  }
  const lookup = lookups[0]!;
  if (!g.graphNodes.some((n) => n.outputs.includes('logits'))) {
    throw new AttnscopeError(`${config.modelType}: the checkpoint has no prediction head (no logits), so there is no target to differentiate`);
  }
  const table: Value = { name: lookup.inputs[0]! };
  const embeddings: Value = { name: lookup.outputs[0]! };
  // α [steps]: one path point per batch item (X [steps, seq, d] from E [1, seq, d]); the model
  // broadcasts its other [1, …] inputs over the batch, and T below sums the items' targets, so
  // ∂T/∂X_b = ∂T_b/∂X_b (the items are independent).
  const alpha = g.reshape(g.input(IN.alpha, 'float32', ['steps']), [-1, 1, 1]);
  const baselineIds = g.input(IN.baselineIds, 'int64', g.describeValue('input_ids')?.shape ?? [1, 'seq']);
  const baselineScale = g.input(IN.baselineScale, 'float32', []);
  let baseline: Value | undefined;
  const mixed = g.intercept(embeddings, (e) => {
    baseline = g.mul(g.gather(table, baselineIds, 0), baselineScale);
    return g.add(g.mul(e, alpha), g.mul(baseline, g.sub(g.scalar(1), alpha)));
  });
  g.output(embeddings, OUT.embeddings);
  g.output(baseline!, OUT.baselineEmbeddings);

  const logits: Value = { name: 'logits' };
  const positions = g.input(IN.positions, 'int64', ['terms']);
  const tokens = g.input(IN.tokens, 'int64', ['terms']);
  const weights = g.input(IN.weights, 'float32', ['terms']);
  const rows = g.gather(logits, positions, 1); // [steps, K, vocab], or [steps, K] for one score per position
  let scores: Value;
  if (inferRank(g, logits) === 2) {
    scores = rows;
  } else {
    // Token −1: the argmax, per batch item ([steps, K, 1]; the engine reads item 0's, at α = 1).
    const wanted = g.reshape(tokens, [1, -1, 1]);
    const resolved = g.where(g.op('Less', [wanted, g.ints([0])]), g.op('ArgMax', [rows], { axis: -1, keepdims: 1 }), wanted);
    g.output(g.reshape(resolved, [-1]), OUT.resolvedTokens, 'int64');
    const logProbs = g.op('LogSoftmax', [rows], { axis: -1 });
    scores = g.reshape(g.op('GatherElements', [logProbs, resolved], { axis: 2 }), [0, -1]);
  }
  // T_b per batch item [steps], and T = Σ_b T_b, the value differentiated.
  const items = g.op('ReduceSum', [g.mul(scores, g.unsqueeze(weights, [0])), g.ints([1])], { keepdims: 0 });
  g.output(items, OUT.targetItems);
  const target = g.op('ReduceSum', [items], { keepdims: 0 });
  g.output(target, OUT.target);

  const wrt: Value[] = [mixed];
  const names: string[] = [OUT.embeddingGrad];
  if (variant === 'full') {
    for (const n of g.graphNodes) {
      const m = n.opType === 'Identity' ? /^attention\.(\w+)\.(\d+)$/.exec(n.outputs[0]!) : null;
      if (!m) continue;
      wrt.push({ name: n.inputs[0]! });
      names.push(OUT.attentionGrad(m[1]!, Number(m[2])));
    }
    for (const stack of Object.keys(ctxStacks(ctx))) {
      const name = `head_gates.${stack}`;
      if (!g.describeValue(name)) continue;
      wrt.push({ name });
      names.push(OUT.gateGrad(stack));
    }
  }
  appendGradients(g, target, wrt).forEach((v, i) => g.output(v, names[i]!));
}

/** The stacks whose gates the graph declared (any of the four names). */
function ctxStacks(ctx: BuildContext): Record<StackName, true> {
  const out = {} as Record<StackName, true>;
  for (const s of ['self', 'encoder', 'decoder', 'cross'] as const) if (ctx.g.describeValue(`head_gates.${s}`)) out[s] = true;
  return out;
}

/** A path point of a stage: α and its coefficient c (the stage's integral is Σ c·∂T/∂X over all points so far / divisor). */
interface StagePoint {
  alpha: number;
  c: number;
}

/** First steps and refinement factor of 'auto' per rule (midpoint triples so old points stay midpoints; trapezoid doubles). */
const AUTO_FIRST: Record<IntegrationRule, number> = { midpoint: 16, trapezoid: 16, 'gauss-legendre': 8 };
const AUTO_FACTOR: Record<IntegrationRule, number> = { midpoint: 3, trapezoid: 2, 'gauss-legendre': 2 };

/**
 * The points a rule with `steps` adds to one with `prev` steps (null: all of them). Midpoint
 * (k + ½)/steps, c = 1, divisor steps: from prev = steps/3 only the k with k mod 3 ≠ 1 are new.
 * Trapezoid k/steps, c = ½ at the ends, divisor steps: from prev = steps/2 the odd k are new.
 * Gauss–Legendre: not nested, all nodes anew (reset), c = the weight, divisor 1.
 */
export function stagePoints(rule: IntegrationRule, steps: number, prev: number | null): { points: StagePoint[]; divisor: number; reset: boolean } {
  if (rule === 'midpoint') {
    const nested = prev !== null && prev * 3 === steps;
    const points: StagePoint[] = [];
    for (let k = 0; k < steps; k++) if (!nested || k % 3 !== 1) points.push({ alpha: (k + 0.5) / steps, c: 1 });
    return { points, divisor: steps, reset: !nested };
  }
  if (rule === 'trapezoid') {
    const nested = prev !== null && prev * 2 === steps;
    const points: StagePoint[] = [];
    for (let k = 0; k <= steps; k++) if (!nested || k % 2 === 1) points.push({ alpha: k / steps, c: k === 0 || k === steps ? 0.5 : 1 });
    return { points, divisor: steps, reset: !nested };
  }
  return { points: integrationPoints(rule, steps).map((p) => ({ alpha: p.alpha, c: p.weight })), divisor: 1, reset: true };
}

const TAPS: Record<Variant, TapRequest> = {
  full: { attention: true, qk: false, lastHiddenState: false, logits: true, headGates: true, decomposedAttention: true },
  embeddings: { attention: false, qk: false, lastHiddenState: false, logits: true, headGates: true, decomposedAttention: true },
};
const EXTENSIONS: Record<Variant, GraphExtension> = {
  full: { key: 'gradients-full', extend: (ctx) => gradientGraph(ctx, 'full') },
  embeddings: { key: 'gradients-embeddings', extend: (ctx) => gradientGraph(ctx, 'embeddings') },
};

/**
 * Families whose embedding output adds position or type embeddings to E before any normalisation,
 * so the zero baseline is well-behaved (see the file header). Every other family takes a token baseline.
 */
const ZERO_BASELINE_FAMILIES = new Set([
  'bert', 'roberta', 'xlm-roberta', 'camembert', 'electra', 'distilbert', 'albert', 'mpnet', 'gpt2', 'opt', 'marian', 'pegasus',
]);

/**
 * Families whose integrated gradients need more than 50 midpoint steps for completeness within 1%
 * with the default baseline (measured on the fixtures' first input), and why. The error is reported
 * with every result; steps 'auto' (the default) takes the steps a path needs (figures below: the
 * midpoint stages 16, 48, 144, 432), except for mixture-of-experts routing, where it stops as
 * 'stalled' and says so. Measured along the path with 201 points of one batched run: T(α), dT/dα,
 * total variation Σ|ΔT| and the largest step of T that the trapezoid of dT/dα does not explain.
 */
export const HARD_PATHS: Readonly<Record<string, string>> = {
  t5: 'ReLU feed-forward layers make the path piecewise smooth: 1.7% at 50 steps; auto: 0.28% at 144',
  mt5: 'a swinging path: T rises from −2.58 at the baseline to ≈ 0 at α ≈ 0.4, falls to −48.5 at α ≈ 0.7 and climbs back to −0.001 at the input (total variation 122 against a net change of 2.58), so the quadrature error of the swings counts about 47-fold against T(x) − T(baseline): 249% at 50 steps; auto: 0.26% at 432',
  umt5: 'a swinging path (total variation 229 against a net change of 39): 8.3% at 50 steps; auto: 0.26% at 432',
  m2m_100: 'ReLU feed-forward layers: 4.3% at 50 steps; auto: 0.10% at 144',
  stablelm: 'a steep path: 1.3% at 50 midpoint steps; auto: 0.16% at 144 (0.001% with 50 gauss-legendre nodes)',
  mixtral: 'top-k expert routing makes T jump where the chosen experts change (one step of T unexplained by dT/dα: 6.8% of T(x) − T(baseline)); gradients do not see jumps, so completeness does not converge: 15% at 50 and at 144 steps (auto: stalled)',
  qwen2_moe: 'top-k expert routing makes T jump where the chosen experts change (a jump of 5% of T(x) − T(baseline)): 9% at 50 and 144 steps, not converging (auto: stalled)',
};

/** Token baselines for normalisation-first families, in order of preference. */
const TOKEN_BASELINES: readonly Exclude<BaselineKind, 'zero'>[] = ['bos', 'eos', 'pad', 'mask'];

/** The token id a baseline kind puts at every position (null: the model has no such token). */
export function baselineTokenId(model: Model, kind: Exclude<BaselineKind, 'zero'>): number | null {
  const pick = (...vals: unknown[]): number | null => {
    for (const v of vals) {
      const x = Array.isArray(v) ? v[0] : v;
      if (typeof x === 'number' && Number.isInteger(x) && x >= 0) return x;
    }
    return null;
  };
  const raw = model.config.raw;
  const gen = model.generationConfig;
  let id: number | null;
  if (kind === 'pad') id = pick(raw.pad_token_id, gen.pad_token_id);
  else if (kind === 'bos') id = pick(raw.bos_token_id, gen.bos_token_id);
  else if (kind === 'eos') id = pick(raw.eos_token_id, gen.eos_token_id);
  else id = pick(model.tokenizer?.mask?.id ?? null, raw.mask_token_id);
  const vocab = model.config.has('vocab_size') ? model.config.int('vocab_size') : Infinity;
  return id !== null && id < vocab ? id : null;
}

/**
 * The integrated-gradients baseline a family gets by default: 'zero' for families that add
 * position/type embeddings to E first, else the first of 'bos', 'eos', 'pad', 'mask' the checkpoint
 * has (an all-zero embedding row is skipped when `attribute` runs).
 */
export function defaultBaseline(model: Model): BaselineKind {
  if (ZERO_BASELINE_FAMILIES.has(model.config.modelType)) return 'zero';
  return TOKEN_BASELINES.find((k) => baselineTokenId(model, k) !== null) ?? 'zero';
}

interface Plan {
  kind: TargetSpec['kind'];
  name: string;
  stack: StackName;
  /** tokenId −1: the argmax at that position, resolved by the graph. */
  terms: { position: number; tokenId: number; weight: number }[];
  versusId?: number;
}

function checkPosition(p: number, n: number, what: string): number {
  if (!Number.isInteger(p) || p < 0 || p >= n) throw new AttnscopeError(`${what}: position ${p} is out of range; allowed: 0 to ${n - 1}`);
  return p;
}

function planTarget(model: Model, inputs: ModelInputs, spec: TargetSpec | undefined): Plan {
  const kind = model.architectureInfo.kind;
  const seq = kind === 'encoder-decoder' ? inputs.decoderInputIds ?? [] : inputs.inputIds;
  const n = seq.length;
  const stack: StackName = kind === 'encoder-decoder' ? 'decoder' : 'self';
  const vocab = model.config.has('vocab_size') ? model.config.int('vocab_size') : Infinity;
  const checkToken = (t: number, what: string): number => {
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new AttnscopeError(`${what}: token id ${t} is out of range; allowed: 0 to ${vocab - 1} (${model.name}'s vocab_size)`);
    return t;
  };
  const maskId = model.tokenizer?.mask?.id ?? null;
  const defaultPosition = (what: string): number => {
    if (kind !== 'encoder') return n - 1;
    const p = maskId === null ? -1 : seq.indexOf(maskId);
    if (p < 0) throw new AttnscopeError(`${what}: ${model.name} is an encoder and the input has no mask token; give the target position (0 to ${n - 1})`);
    return p;
  };
  const s = spec ?? { kind: 'token' };
  switch (s.kind) {
    case 'token': {
      const position = s.position === undefined ? defaultPosition('target') : checkPosition(s.position, n, 'target');
      let tokenId = s.tokenId === undefined ? -1 : checkToken(s.tokenId, 'target');
      if (s.tokenId === undefined && kind === 'encoder' && seq[position] !== maskId) tokenId = seq[position]!;
      const name = tokenId >= 0
        ? (kind === 'encoder' && s.tokenId === undefined ? 'masked_lm_input_token_logprob' : 'token_logprob')
        : kind === 'encoder-decoder' ? 'seq2seq_argmax_logprob' : kind === 'decoder' ? 'causal_lm_argmax_logprob' : 'masked_lm_argmax_logprob';
      return { kind: 'token', name, stack, terms: [{ position, tokenId, weight: 1 }] };
    }
    case 'logit': {
      const position = s.position === undefined ? defaultPosition('target') : checkPosition(s.position, n, 'target');
      return { kind: 'logit', name: 'discriminator_logit', stack, terms: [{ position, tokenId: 0, weight: 1 }] };
    }
    case 'contrast': {
      const position = s.position === undefined ? defaultPosition('target') : checkPosition(s.position, n, 'target');
      return {
        kind: 'contrast', name: 'contrast_logprob', stack, versusId: checkToken(s.versusId, 'contrast'),
        terms: [{ position, tokenId: checkToken(s.tokenId, 'target'), weight: 1 }, { position, tokenId: s.versusId, weight: -1 }],
      };
    }
    case 'continuation': {
      if (kind === 'encoder') throw new AttnscopeError(`continuation target: ${model.name} is an encoder (masked LM); a continuation's log-probability needs a causal LM or a decoder`);
      if (!Number.isInteger(s.from) || s.from < 1 || s.from >= n) throw new AttnscopeError(`continuation target: from ${s.from} is out of range; allowed: 1 to ${n - 1} (the first token of the continuation)`);
      const terms = [];
      for (let i = s.from; i < n; i++) terms.push({ position: i - 1, tokenId: seq[i]!, weight: 1 });
      return { kind: 'continuation', name: 'continuation_logprob', stack, terms };
    }
  }
}

function targetFeeds(terms: readonly { position: number; tokenId: number; weight: number }[]): Record<string, RuntimeTensor> {
  return {
    [IN.positions]: int64Tensor(terms.map((t) => t.position), [terms.length]),
    [IN.tokens]: int64Tensor(terms.map((t) => t.tokenId), [terms.length]),
    [IN.weights]: { type: 'float32', dims: [terms.length], data: Float32Array.from(terms, (t) => t.weight) },
  };
}

function scalar(v: number): RuntimeTensor {
  return { type: 'float32', dims: [], data: Float32Array.of(v) };
}

function f32(t: RuntimeTensor | undefined, name: string): Float32Array {
  if (!t) throw new Error(`graph output ${name} missing`);
  return toFloat32(t);
}

/** Per-stack gate feeds from the caller's gates (checked against the stack's layers × heads). */
function gateFeeds(model: Model, gates: AttributeOptions['headGates']): Record<string, RuntimeTensor> {
  const out: Record<string, RuntimeTensor> = {};
  const info = model.architectureInfo;
  for (const [stack, data] of Object.entries(gates ?? {}) as [StackName, Float32Array | undefined][]) {
    if (!data) continue;
    const layers = info.stacks[stack];
    if (layers === undefined) throw new AttnscopeError(`head gates: ${model.name} has no '${stack}' stack; it has ${Object.keys(info.stacks).join(', ')}`);
    const heads = info.stackHeads?.[stack] ?? info.numHeads;
    if (data.length !== layers * heads) throw new AttnscopeError(`head gates of '${stack}': ${data.length} values, expected layers × heads = ${layers} × ${heads}`);
    out[`head_gates.${stack}`] = { type: 'float32', dims: [layers, heads], data };
  }
  return out;
}

/**
 * Attributes a target T of `model` on `inputs` with gradient methods (see the file header): all
 * but integrated gradients come from one forward and backward pass; integrated gradients run
 * `steps` more passes (plus one at the baseline).
 */
export async function attribute(model: Model, inputs: ModelInputs, options: AttributeOptions = {}): Promise<AttributionResult> {
  const methods = new Set(options.methods ?? ATTRIBUTION_METHODS);
  for (const m of methods) {
    if (!ATTRIBUTION_METHODS.includes(m)) throw new AttnscopeError(`attribution method '${String(m)}' is unknown; allowed: ${ATTRIBUTION_METHODS.join(', ')}`);
  }
  const steps = options.steps ?? 'auto';
  if (steps !== 'auto' && (!Number.isInteger(steps) || steps < 1 || steps > 100_000)) throw new AttnscopeError(`integrated gradients: steps ${String(steps)} is out of range; allowed: an integer from 1 to 100000, or 'auto'`);
  const tolerance = options.tolerance ?? 0.01;
  if (!(tolerance > 0 && tolerance < 1)) throw new AttnscopeError(`integrated gradients: tolerance ${tolerance} is out of range; allowed: above 0 and below 1`);
  const maxSteps = options.maxSteps ?? 512;
  if (!Number.isInteger(maxSteps) || maxSteps < 1 || maxSteps > 100_000) throw new AttnscopeError(`integrated gradients: maxSteps ${maxSteps} is out of range; allowed: an integer from 1 to 100000`);
  if (options.batchSize !== undefined && (!Number.isInteger(options.batchSize) || options.batchSize < 1 || options.batchSize > 4096)) {
    throw new AttnscopeError(`integrated gradients: batchSize ${options.batchSize} is out of range; allowed: an integer from 1 to 4096`);
  }
  const memoryMB = options.memoryMB ?? DEFAULT_BATCH_MEMORY_MB;
  if (!(memoryMB >= 1 && memoryMB <= 1 << 20)) throw new AttnscopeError(`integrated gradients: memoryMB ${memoryMB} is out of range; allowed: 1 to 1048576`);
  const rule = options.rule ?? 'midpoint';
  if (!INTEGRATION_RULES.includes(rule)) throw new AttnscopeError(`integrated gradients: rule '${String(rule)}' is unknown; allowed: ${INTEGRATION_RULES.join(', ')}`);
  if (options.baseline !== undefined && !BASELINE_KINDS.includes(options.baseline)) {
    throw new AttnscopeError(`integrated gradients: baseline '${String(options.baseline)}' is unknown; allowed: ${BASELINE_KINDS.join(', ')}`);
  }
  const info = model.architectureInfo;
  if (info.kind === 'encoder-decoder' && !inputs.decoderInputIds?.length) {
    throw new AttnscopeError(`${model.name} is an encoder-decoder: attribution needs decoder input ids (the target is a decoder position)`);
  }
  const plan = planTarget(model, inputs, options.target);
  const gates = gateFeeds(model, options.headGates);
  const n = inputs.inputIds.length;

  // Baseline: the requested one, else the family default (token baselines with an all-zero row skipped below).
  const explicitBaseline = options.baseline;
  const baselineCandidates: BaselineKind[] = explicitBaseline
    ? [explicitBaseline]
    : defaultBaseline(model) === 'zero' ? ['zero'] : [...TOKEN_BASELINES.filter((k) => baselineTokenId(model, k) !== null), 'zero'];
  const baselineFeeds = (kind: BaselineKind): { feeds: Record<string, RuntimeTensor>; tokenId: number | null } => {
    if (kind === 'zero') return { feeds: { [IN.baselineIds]: int64Tensor(inputs.inputIds), [IN.baselineScale]: scalar(0) }, tokenId: null };
    const id = baselineTokenId(model, kind);
    if (id === null) throw new AttnscopeError(`integrated gradients: baseline '${kind}': ${model.name} has no ${kind} token (config.json / the tokenizer); use another baseline (${BASELINE_KINDS.join(', ')})`);
    return { feeds: { [IN.baselineIds]: int64Tensor(new Array<number>(n).fill(id)), [IN.baselineScale]: scalar(1) }, tokenId: id };
  };

  const needFull = methods.has('attentionGrad') || methods.has('headImportance');
  const variant: Variant = needFull ? 'full' : 'embeddings';
  const run = (v: Variant, alpha: number | readonly number[], terms: Plan['terms'], base: Record<string, RuntimeTensor>): Promise<Record<string, RuntimeTensor>> => {
    const alphas = typeof alpha === 'number' ? [alpha] : alpha;
    const a: RuntimeTensor = { type: 'float32', dims: [alphas.length], data: Float32Array.from(alphas) };
    return model.runExtended(TAPS[v], EXTENSIONS[v], inputs, { ...gates, ...base, ...targetFeeds(terms), [IN.alpha]: a });
  };

  // One forward + backward pass at the input (α = 1).
  let chosen = baselineFeeds(baselineCandidates[0]!);
  const out = await run(variant, 1, plan.terms, chosen.feeds);
  const discriminator = !(OUT.resolvedTokens in out);
  if (discriminator && plan.kind !== 'logit') {
    if (plan.kind === 'token' && options.target?.kind !== 'token') plan.kind = 'logit';
    else throw new AttnscopeError(`${model.name}'s head scores each position with one logit (${String(model.config.raw.architectures ?? 'a discriminator')}); the only target is a position's logit ({kind: 'logit', position})`);
  }
  if (!discriminator && plan.kind === 'logit') throw new AttnscopeError(`target kind 'logit' is for heads that score each position with one number (ELECTRA's discriminator); ${model.name} predicts tokens: use 'token'`);
  const resolved = discriminator ? plan.terms.map(() => 0) : Array.from(out[OUT.resolvedTokens]!.data as BigInt64Array, Number);
  const terms = plan.terms.map((t, i) => ({ ...t, tokenId: resolved[i]! }));
  const value = f32(out[OUT.target], OUT.target)[0]!;
  const target: ResolvedTarget = {
    kind: plan.kind,
    name: discriminator ? 'discriminator_logit' : plan.name,
    position: terms[terms.length - 1]!.position,
    tokenId: discriminator ? null : terms[0]!.tokenId,
    ...(plan.versusId !== undefined ? { versusId: plan.versusId } : {}),
    stack: plan.stack,
    terms: terms.map((t) => ({ position: t.position, tokenId: discriminator ? null : t.tokenId, weight: t.weight })),
    value,
  };
  const E = f32(out[OUT.embeddings], OUT.embeddings);
  const grad = f32(out[OUT.embeddingGrad], OUT.embeddingGrad);
  const d = E.length / n;
  const result: AttributionResult = { target, tokens: 'tokens', embeddingWidth: d };

  if (methods.has('gradient')) {
    result.embeddingGrad = { dims: [n, d], data: grad };
    result.gradientNorm = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += grad[i * d + j]! ** 2;
      result.gradientNorm[i] = Math.sqrt(s);
    }
  }
  if (methods.has('gradXInput')) {
    result.gradXInput = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += E[i * d + j]! * grad[i * d + j]!;
      result.gradXInput[i] = s;
    }
  }
  if (methods.has('attentionGrad')) {
    result.attention = {};
    result.attentionGrad = {};
    for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
      const probs: Float32Array[] = [];
      const grads: Float32Array[] = [];
      let dims: readonly number[] = [];
      for (let l = 0; l < layers; l++) {
        const a = out[`attention.${stack}.${l}`];
        dims = a!.dims;
        probs.push(f32(a, `attention.${stack}.${l}`));
        grads.push(f32(out[OUT.attentionGrad(stack, l)], OUT.attentionGrad(stack, l)));
      }
      const stackDims = dims.slice(1) as [number, number, number];
      result.attention[stack] = { dims: stackDims, layers: probs } satisfies LayerStack;
      result.attentionGrad[stack] = { dims: stackDims, layers: grads } satisfies LayerStack;
    }
  }
  if (methods.has('headImportance')) {
    result.headImportance = {};
    for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
      const heads = info.stackHeads?.[stack] ?? info.numHeads;
      const raw = f32(out[OUT.gateGrad(stack)], OUT.gateGrad(stack));
      const normalized = new Float32Array(raw.length);
      for (let l = 0; l < layers; l++) {
        let s = 0;
        for (let h = 0; h < heads; h++) s += raw[l * heads + h]! ** 2;
        const norm = Math.sqrt(s);
        for (let h = 0; h < heads; h++) normalized[l * heads + h] = norm > 0 ? Math.abs(raw[l * heads + h]!) / norm : 0;
      }
      result.headImportance[stack] = { raw: { dims: [layers, heads], data: raw }, normalized: { dims: [layers, heads], data: normalized } };
    }
  }
  if (methods.has('integratedGradients')) {
    // T at the baseline; a token baseline whose embedding row is all zeros is the zero baseline in disguise: try the next.
    let atBaseline = await run('embeddings', 0, terms, chosen.feeds);
    let kind = baselineCandidates[0]!;
    for (let c = 1; !explicitBaseline && kind !== 'zero' && f32(atBaseline[OUT.baselineEmbeddings], OUT.baselineEmbeddings).every((x) => x === 0) && c < baselineCandidates.length; c++) {
      kind = baselineCandidates[c]!;
      chosen = baselineFeeds(kind);
      atBaseline = await run('embeddings', 0, terms, chosen.feeds);
    }
    const base = f32(atBaseline[OUT.baselineEmbeddings], OUT.baselineEmbeddings);
    const targetBaseline = f32(atBaseline[OUT.target], OUT.target)[0]!;
    const delta = value - targetBaseline;
    // Path points per run: the caller's, else what the memory budget allows (each item keeps its forward for the backward).
    const tokens = n + (inputs.decoderInputIds?.length ?? 0);
    const perRun = options.batchSize ?? itemsPerRun(backwardItemBytes(memoryShape(model), tokens), memoryMB, 64);
    let runs = 0;
    // acc = Σ c_k ∂T/∂X(α_k) over the points so far; the integral is acc / divisor (see stagePoints).
    const acc = new Float64Array(n * d);
    const addPoints = async (points: readonly StagePoint[], stageSteps: number): Promise<void> => {
      const pending: StagePoint[] = [];
      for (const p of points) {
        // The end points come from the passes already made: α = 0 at the baseline, α = 1 at the input (X = E whatever the baseline).
        const known = p.alpha === 0 ? f32(atBaseline[OUT.embeddingGrad], OUT.embeddingGrad) : p.alpha === 1 ? grad : null;
        if (known) for (let j = 0; j < known.length; j++) acc[j] = acc[j]! + p.c * known[j]!;
        else pending.push(p);
      }
      for (let i = 0; i < pending.length; i += perRun) {
        const chunk = pending.slice(i, i + perRun);
        options.signal?.throwIfAborted();
        const step = await run('embeddings', chunk.map((p) => p.alpha), terms, chosen.feeds);
        runs++;
        options.onProgress?.({ steps: stageSteps, done: i + chunk.length, total: pending.length });
        const gk = f32(step[OUT.embeddingGrad], OUT.embeddingGrad); // [chunk, n, d]
        for (let b = 0; b < chunk.length; b++) {
          const c = chunk[b]!.c;
          for (let j = 0, o = b * n * d; j < n * d; j++, o++) acc[j] = acc[j]! + c * gk[o]!;
        }
      }
    };
    const evaluate = (divisor: number): { scores: Float32Array; total: number; error: number; relativeError: number } => {
      const scores = new Float32Array(n);
      let total = 0;
      for (let i = 0; i < n; i++) {
        let sc = 0;
        for (let j = 0; j < d; j++) sc += (E[i * d + j]! - base[i * d + j]!) * (acc[i * d + j]! / divisor);
        scores[i] = sc;
        total += sc;
      }
      const error = total - delta;
      return { scores, total, error, relativeError: Math.abs(error) / Math.abs(delta) };
    };

    let used: number;
    let final: ReturnType<typeof evaluate>;
    let auto: AutoSteps | undefined;
    if (steps !== 'auto') {
      const stage = stagePoints(rule, steps, null);
      await addPoints(stage.points, steps);
      used = steps;
      final = evaluate(stage.divisor);
    } else {
      const stages: AutoSteps['stages'] = [];
      // |T(x) − T(x′)| within float32 noise of T: no relative error to reach.
      const degenerate = Math.abs(delta) <= 1e-5 * Math.max(1, Math.abs(value), Math.abs(targetBaseline));
      let stepsNow = Math.min(AUTO_FIRST[rule], maxSteps);
      let prev: number | null = null;
      let stopped: AutoSteps['stopped'];
      for (;;) {
        const stage = stagePoints(rule, stepsNow, prev);
        if (stage.reset) acc.fill(0);
        await addPoints(stage.points, stepsNow);
        final = evaluate(stage.divisor);
        stages.push({ steps: stepsNow, relativeError: final.relativeError });
        if (degenerate) { stopped = 'degenerate'; break; }
        if (final.relativeError <= tolerance) { stopped = 'tolerance'; break; }
        const k = stages.length;
        if (k >= 3 && stages[k - 1]!.relativeError > 0.5 * stages[k - 2]!.relativeError && stages[k - 2]!.relativeError > 0.5 * stages[k - 3]!.relativeError) { stopped = 'stalled'; break; }
        const next = stepsNow * AUTO_FACTOR[rule];
        if (next > maxSteps) { stopped = 'max-steps'; break; }
        prev = stepsNow;
        stepsNow = next;
      }
      used = stepsNow;
      auto = { tolerance, maxSteps, converged: stopped === 'tolerance', stopped, stages };
    }
    result.integratedGradients = {
      scores: final.scores, baseline: kind, baselineTokenId: chosen.tokenId, steps: used, rule,
      completeness: { sumAttributions: final.total, targetInput: value, targetBaseline, error: final.error, relativeError: final.relativeError },
      batch: { size: perRun, runs },
      ...(auto ? { auto } : {}),
    };
  }
  return result;
}
