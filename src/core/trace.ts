/**
 * The Trace: tokens plus attention (and optional taps) for every layer of a model run.
 * Everything downstream of the engine (analyses, views, exports) reads a Trace and nothing else.
 */

export interface Token {
  /** Vocabulary id. */
  id: number;
  /** Display text of the token as the tokenizer names it (e.g. `Ġthe`, `##ing`, `▁the`). */
  text: string;
  /** Character offsets (JavaScript string indices) into the text of its segment; 0,0 for template specials. */
  start: number;
  end: number;
  /** True for special tokens added by the tokenizer's template ([CLS], <s>, ...). */
  special: boolean;
  /** 0 for the first text (sentence A), 1 for the pair (sentence B). */
  segment: number;
  /** Index of the word the token belongs to within its segment, or null for specials. */
  word: number | null;
  /** True for tokens the model generated (generation traces); absent for the given input. */
  generated?: boolean;
}

/** How a generation trace was produced. */
export interface GenerationInfo {
  /** Tokens of the given prompt (the first ones of `tokens`, or of `decoderTokens` for encoder-decoders). */
  promptLength: number;
  strategy: 'greedy' | 'sample';
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  /** Why generation ended: the end-of-sequence token, or the requested number of new tokens. */
  stoppedBy: 'eos' | 'length';
  /** Each generated token with its probability when it was chosen. */
  steps: { id: number; probability: number }[];
}

export type StackName = 'self' | 'encoder' | 'decoder' | 'cross';

export interface ModelInfo {
  name: string;
  modelType: string;
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
}

/**
 * Per-layer tensors of one attention stack. `layers[l]` is row-major with shape
 * `[dim0, rows, cols]`: [heads, queries, keys] for attention, [heads, positions, headDim]
 * for queries and [kvHeads, positions, headDim] for keys.
 */
export interface LayerStack {
  readonly dims: readonly [number, number, number];
  readonly layers: readonly Float32Array[];
}

/** A row-major float matrix [rows, cols]. */
export interface Matrix {
  readonly dims: readonly [number, number];
  readonly data: Float32Array;
}

/** One candidate token of a prediction. */
export interface Candidate {
  id: number;
  /** Token text as the vocabulary names it. */
  token: string;
  probability: number;
}

/**
 * What the model's head predicts at one position: for masked LMs the token at a [MASK], for
 * causal LMs and decoders the next token after `position`.
 */
export interface Prediction {
  /** Index into `tokens` (or `decoderTokens` for encoder-decoders). */
  position: number;
  kind: 'masked' | 'next';
  candidates: Candidate[];
}

export type StackMap = Partial<Record<StackName, LayerStack>>;

/**
 * How a stack turned q·k into the scores its softmax reads, as the model computed them:
 *   scores[h, i, j] = (q_i · k_j) · scale[l] + bias[l][h, i, j]   (bias absent: 0)
 *   masked (probability exactly 0) when causal and j > i, or when window[l] and i − j ≥ window[l].
 * Recorded by each architecture, so views and analyses recompute attention exactly without
 * knowing model families. Query i and key j are positions in the stack's query/key tokens.
 */
export interface ScoreTerms {
  /** Multiplier of q·k per layer (1/√headDim for most models; GPT-2 with scale_attn_by_inverse_layer_idx: 1/(√d·(l+1)); T5: 1). */
  scale: number[];
  /** Keys after the query are masked. */
  causal: boolean;
  /** Sliding window per layer (query i sees keys i − window + 1 … i), or null where the layer has none. */
  window: (number | null)[];
  /**
   * Additive per-head terms on the scaled scores (relative position bias, ALiBi, disentangled
   * position terms), [heads, queries, keys] per layer; layers that share one term (T5) share the array.
   * A query axis of 1, [heads, 1, keys], is broadcast over the queries (a term of the key alone:
   * ALiBi, held in O(heads · keys)).
   */
  bias?: LayerStack;
  /**
   * A term that depends on the offset j − i only, kept compactly (instead of `bias`, never with
   * it): T5's, mT5's, umT5's and MPNet's relative position buckets. Read it with core/position-bias.ts.
   */
  positionBias?: PositionBias;
  /** What the bias is, for people: 'relative position bias', 'ALiBi', ... */
  biasKind?: string;
}

/**
 * An additive score term that depends on the offset j − i only, in O(heads · positions) per layer
 * instead of [heads, queries, keys], with the values the model added (bit for bit):
 *   bias[l][h, i, j] = layers[l][h·(queries + keys − 1) + (j − i) + queries − 1]
 */
export interface PositionBias {
  readonly kind: 'relative';
  /** The attention it adds to: [heads, queries, keys]. */
  readonly dims: readonly [number, number, number];
  /** One array per layer, [heads, queries + keys − 1]; layers that share one term share the array. */
  readonly layers: readonly Float32Array[];
}

export type ScoreMap = Partial<Record<StackName, ScoreTerms>>;

/**
 * What the router of one mixture-of-experts layer did with each token (rows follow `tokens`),
 * as transformers routes: the top `topK` experts of the router's softmax, their weights divided
 * by their sum when `Routing.normalized`.
 */
export interface RoutingLayer {
  /** The model layer (0-based) this router belongs to. */
  layer: number;
  /** The router's softmax over the experts, [tokens, experts]. */
  probabilities: Matrix;
  /** The experts each token was routed to, most probable first: [tokens, topK] row-major. */
  selected: Int32Array;
  /** The weights of those experts in the layer's output, [tokens, topK] row-major. */
  weights: Float32Array;
}

/** Mixture-of-experts routing of every routed layer (Mixtral, Qwen2-MoE). */
export interface Routing {
  /** Experts per layer. */
  experts: number;
  /** Experts each token is routed to. */
  topK: number;
  /** The top-k weights were divided by their sum (Mixtral always; Qwen2-MoE with norm_topk_prob). */
  normalized: boolean;
  /** One entry per routed layer, in layer order (layers with a dense MLP have none). */
  layers: RoutingLayer[];
}

export interface Trace {
  model: ModelInfo;
  tokens: Token[];
  /** Decoder tokens of encoder-decoder models. */
  decoderTokens?: Token[];
  attention: StackMap;
  /** Per-head query vectors as they enter q·k (after bias and rotary, before scaling). */
  queries?: StackMap;
  /** Per-key-head key vectors as they enter q·k. */
  keys?: StackMap;
  /** Per stack: the scale, masks and additive terms of the scores (recorded with the queries and keys). */
  scores?: ScoreMap;
  /** Final hidden state [positions][hidden] of the (decoder) stack, when requested. */
  lastHiddenState?: Matrix;
  /** Encoder-decoder models: the encoder's final hidden state, when requested. */
  encoderLastHiddenState?: Matrix;
  /** The prediction head's output [positions][vocab] (or [positions][1] for token scores), when requested. */
  logits?: Matrix;
  /** Top-k predictions of the model's head, when requested. */
  predictions?: Prediction[];
  /** Generation traces: how the generated tokens were chosen. */
  generation?: GenerationInfo;
  /**
   * Norm-based attention and ALTI inputs per stack (TraceOptions.contributions), when requested.
   * In memory only: the trace files (JSON, .safetensors) do not store them (they are
   * heads × hidden times larger than the attention; re-trace to get them).
   */
  contributions?: ContributionMap;
  /** Mixture-of-experts models: what each layer's router did, when requested. */
  routing?: Routing;
  /**
   * Per-head value vectors [kvHeads, positions, headDim] per layer, keyed like `keys` (cross: the
   * encoder positions), as they enter attention·V (after projection and bias), when requested.
   */
  values?: StackMap;
  /** Inside every layer, per stack: embeddings, the residual stream, MLP activations (when requested). */
  layerStates?: LayerStateMap;
  /** Each layer's residual through the model's final norm and head: top tokens per layer and position (when requested). */
  logitLens?: LogitLens;
  /** Gradient-based attributions of one target (attnscope attribute, or written by another tool). */
  attributions?: Attributions;
}

/**
 * The scalar T an attribution explains, e.g. the log-probability of token `tokenId` at
 * `position` (for causal LMs and decoders the prediction of the token after `position`).
 */
export interface AttributionTarget {
  /** What T is (gradients.json's kinds, e.g. 'causal_lm_argmax_logprob', or a producer's own words). */
  kind: string;
  /** Index into `tokens`, or into `decoderTokens` when `stack` is 'decoder'. */
  position: number;
  /** The token whose score T is (null: a score without a token, e.g. a discriminator logit). */
  tokenId: number | null;
  /** Contrastive targets: T = score(tokenId) − score(contrastTokenId). */
  contrastTokenId?: number;
  /** Encoder-decoders: 'decoder' (the position is a decoder position). */
  stack?: StackName;
  /** T at the input. */
  value: number;
}

/** One score per token from one attribution method (Attributions.scores). */
export interface TokenAttribution {
  /** The method: 'gradient', 'gradXInput', 'integratedGradients', 'attentionXGradient', 'gradientRollout', or a producer's own name. */
  method: string;
  /** Which tokens the scores follow (default 'tokens'). */
  tokens?: 'tokens' | 'decoderTokens';
  /** How per-dimension values became one score per token: 'sum' or 'l2' over the embedding (absent: scored per token). */
  reduction?: 'sum' | 'l2';
  /** One score per token. */
  scores: Float32Array;
  /** Integrated gradients: the baseline ('zero', 'pad', 'mask', 'bos' or a producer's word), steps and rule ('midpoint', …). */
  baseline?: string;
  steps?: number;
  rule?: string;
  /** Integrated gradients: Σ scores against T(input) − T(baseline). */
  completeness?: { sumAttributions: number; targetInput: number; targetBaseline: number };
}

/** Gradient-based attributions of one target (see docs/DESIGN.md for the file layout). */
export interface Attributions {
  target: AttributionTarget;
  /** Token-level scores keyed by a name of letters, digits, '_' or '-' (e.g. 'integratedGradients'). */
  scores: Record<string, TokenAttribution>;
  /** ∂T/∂E for the word embeddings E, [positions, embedding width]. */
  embeddingGrad?: Matrix;
  /** ∂T/∂α for every attention probability, keyed and shaped like `attention`. */
  attentionGrad?: StackMap;
  /** ∂T/∂g for a gate g = 1 on each head's context, [layers, heads] per stack (signed, not normalised). */
  headImportance?: Partial<Record<StackName, Matrix>>;
}

/**
 * Per-layer tensors of one attention stack from which norm-based attention (Kobayashi et al.
 * 2020) and ALTI (Ferrando et al. 2022) are computed (analysis/contributions.ts). With x the
 * block's input, α the attention, v_{j,h} head h's value vector of token j (value bias included)
 * and W_O[h] the headDim rows of the output projection that head h's output goes through:
 *   post-LN blocks (BERT):        y = LN(x + Σ_h α_h · V_h · W_O[h] + b_O)
 *   pre-norm blocks (GPT-2, Llama): y = x + Σ_h α_h · V_h · W_O[h] + b_O, with V = norm(x)·W_V + b_V
 */
export interface ContributionTaps {
  /** Where the block's layer norm sits: after the residual sum ('post') or before the attention ('pre'). */
  norm: 'post' | 'pre';
  /** f_h(x_j) = v_{j,h} · W_O[h]: [heads, keys, hidden] per layer (grouped kv heads repeated per query head). */
  transformedValues: LayerStack;
  /**
   * The block input x (residual stream entering the layer), i.e. the residual the block adds to
   * the attention output: [positions, hidden] per layer (BLOOM with
   * apply_residual_connection_post_layernorm adds LN(x) instead, and records that).
   */
  layerInput: Matrix[];
  /**
   * x + attention output (b_O included): [positions, hidden] per layer; the post-LN norm's input.
   * In parallel blocks (GPT-J, Phi, Cohere, Falcon, GPT-NeoX/StableLM with a parallel residual) it is
   * x + attn(norm(x)) alone: the MLP branch added beside it is not part of the attention's mixing.
   */
  residualSum: Matrix[];
  /** The output projection's bias b_O per layer ([hidden]; zeros when it has none). */
  outputBias: Float32Array[];
  /** Post-LN blocks: the LayerNorm applied to residualSum, per layer (γ, β [hidden], ε). */
  layerNorm?: { weight: Float32Array; bias: Float32Array; eps: number }[];
}

export type ContributionMap = Partial<Record<StackName, ContributionTaps>>;

/** Attention weight of `layer`, `head`, query `q`, key `k` in a stack. */
export function attentionAt(stack: LayerStack, layer: number, head: number, q: number, k: number): number {
  const [, rows, cols] = stack.dims;
  return stack.layers[layer]![(head * rows + q) * cols + k]!;
}

/** How many tokens a routed layer sent to each expert (a token counts once for each of its top-k experts). */
export function expertLoad(routing: Routing, layer: RoutingLayer): number[] {
  const counts = new Array<number>(routing.experts).fill(0);
  for (const e of layer.selected) counts[e] = counts[e]! + 1;
  return counts;
}

/** The parts of a stack's input embedding, each [positions, width] as looked up (before any scale, sum, norm or projection). */
export interface EmbeddingParts {
  /** Word (token) embeddings. */
  token: Matrix;
  /** Position embeddings looked up from a table (learned or sinusoidal); absent for rotary, relative and ALiBi schemes. */
  position?: Matrix;
  /** Token type (segment) embeddings, for models with a type table (BERT-like). */
  segment?: Matrix;
}

/**
 * The residual stream of a stack, [positions, hidden] per layer. `input[l]` is what layer l reads
 * (input[0] = the embedding output, PyTorch's hidden_states[0]); `output[l]` what it hands on
 * (= input[l + 1]; the last one before the stack's final norm, if any). `attention[l]` is the stream
 * after the self-attention sub-layer: x + attn(norm(x)) in pre-norm blocks, LN(x + attn(x)) in
 * post-LN blocks (BERT), x + attn(norm(x)) alone in parallel blocks (GPT-J, Phi, Falcon, Cohere,
 * GPT-NeoX), whose output adds the MLP branch to it. Decoders of encoder-decoders also have
 * `cross[l]`, the stream after cross attention. The updates are the differences: attention[l] −
 * input[l], cross[l] − attention[l], output[l] − (cross[l] ?? attention[l]).
 */
export interface Residuals {
  input: Matrix[];
  attention: Matrix[];
  cross?: Matrix[];
  output: Matrix[];
}

/** What was recorded inside the layers of one stack. */
export interface LayerStates {
  embeddings?: EmbeddingParts;
  residuals?: Residuals;
  /**
   * The MLP's hidden activations per layer [positions, inner]: the input of its output projection
   * (act(x·W1); for gated MLPs act(x·W_gate)·(x·W_up)). Null for mixture-of-experts layers.
   */
  mlpActivations?: (Matrix | null)[];
}

export type LayerStateMap = Partial<Record<StackName, LayerStates>>;

/** One row of the logit lens: the top tokens at every position, [positions, topK] row-major, most probable first. */
export interface LogitLensLayer {
  ids: Int32Array;
  probabilities: Float32Array;
  /** Token texts of `ids` as the vocabulary names them. */
  tokens: string[];
}

/**
 * The logit lens (nostalgebraist 2020): each layer's residual stream through the model's final
 * norm and prediction head, softmax, top-k. `layers[0]` reads the embedding output, `layers[l + 1]`
 * the output of layer l, so the last row is the model's own prediction.
 */
export interface LogitLens {
  /** The stack read (the decoder for encoder-decoders). */
  stack: StackName;
  topK: number;
  layers: LogitLensLayer[];
}
