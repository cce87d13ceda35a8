/**
 * The contract between the engine and an architecture family. An architecture builds the
 * forward pass as a graph (declaring inputs and outputs by the names below) and prepares the
 * feeds for one input.
 *
 * Graph inputs: `input_ids` int64 [1, seq], and whatever `feeds` adds (`token_type_ids`,
 * `position_ids`, `attention_bias`, `rope_cos`/`rope_sin`, `decoder_input_ids`, ...).
 * Graph outputs (only those requested by the taps):
 *   `attention.<stack>.<layer>`  [1, heads, queries, keys]
 *   `queries.<stack>.<layer>`    [1, heads, positions, headDim]
 *   `keys.<stack>.<layer>`       [1, kvHeads, positions, headDim]
 *   `last_hidden_state`          [1, positions, hidden]   (of the decoder for encoder-decoders)
 *   `encoder_last_hidden_state`  [1, positions, hidden]   (encoder-decoders, with lastHiddenState)
 *   `logits`                     [1, positions, vocab]    (prediction head, when present)
 *   `score_bias.<stack>.<layer>` [1, heads, queries, keys] (with qk, for stacks whose scoring has a bias)
 *   `router_probabilities.<stack>.<layer>` [1, positions, experts] (with routing, mixture-of-experts layers:
 *                                the router softmax), `router_selected...` int64 [1, positions, topK] (the
 *                                top-k experts, by decreasing probability), `router_weights...` [1, positions,
 *                                topK] (their weights as combined); `router_input...` [1, positions, hidden]
 *                                (with routerInput: the hidden state the router reads)
 *   `transformed_values.<stack>.<layer>` [1, heads, keys, hidden] (with contributions: v·W_O per head),
 *                                `layer_input...` / `residual_sum...` [1, positions, hidden], `output_bias...`
 *                                [hidden] (when W_O has a bias), post-LN blocks `norm_weight...` / `norm_bias...`
 *                                [hidden] (see ContributionTaps in core/trace.ts)
 * Per-layer names are made by `tapName` only.
 */
import type { StackName } from '../core/trace.js';
import type { GraphBuilder, Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { ModelConfig } from './config.js';

/** Kinds of per-layer graph inputs and outputs. */
export type TapKind = 'attention' | 'queries' | 'keys' | 'score_bias' | 'past_key' | 'past_value' | 'present_key' | 'present_value'
  | 'router_probabilities' | 'router_selected' | 'router_weights' | 'router_input'
  // `contributions` taps (norm-based attention, ALTI): see ContributionTaps in core/trace.ts.
  | 'transformed_values' | 'layer_input' | 'residual_sum' | 'output_bias' | 'norm_weight' | 'norm_bias'
  // Inside every layer (see layer-taps.ts): value vectors, the residual stream, MLP activations, the logit lens.
  | 'values' | 'resid_input' | 'resid_attention' | 'resid_cross' | 'resid_output' | 'mlp_activation' | 'lens_ids' | 'lens_probabilities';

/** The one place per-layer graph input/output names are made: `<kind>.<stack>.<layer>`. */
export function tapName(kind: TapKind, stack: StackName, layer: number): string {
  return `${kind}.${stack}.${layer}`;
}

/**
 * How one stack scores q·k (see ScoreTerms in core/trace.ts): the values the engine records in
 * the Trace next to the queries and keys. The bias values come from the graph as
 * `score_bias.<stack>.<layer>` outputs (tapped with `qk`).
 */
export interface StackScoring {
  scale: number[];
  causal: boolean;
  window: (number | null)[];
  /** No additive term; one output per layer; or one for all layers (layer 0's output). */
  bias: 'none' | 'per-layer' | 'shared';
  biasKind?: string;
}

export interface TapRequest {
  /** Attention probabilities of every layer. */
  attention: boolean;
  /** Per-head queries and keys as they enter q·k, and the additive score terms (`score_bias`). */
  qk: boolean;
  /** The final hidden state. */
  lastHiddenState: boolean;
  /** The prediction head's logits. */
  logits: boolean;
  /**
   * Incremental decoding: self-attention of decoders reads past keys/values from inputs
   * `past_key.<stack>.<layer>` / `past_value.<stack>.<layer>` [1, kvHeads, past, headDim] and
   * returns the extended ones as `present_key.<stack>.<layer>` / `present_value...`; feeds
   * place the new tokens at positions pastLength, pastLength + 1, ...
   */
  cache?: boolean;
  /**
   * With `cache` and queries/keys tapped without probabilities: attention still runs in bands of
   * query rows (models/attention.ts queryBands), so a long prompt's scores are never held whole.
   */
  queryBands?: boolean;
  /**
   * How many bands of query rows banded attention uses (default models/attention.ts QUERY_BANDS,
   * 16); the engine sets more for long inputs (queryBandCount), one graph per count.
   */
  queryBandCount?: number;
  /**
   * Attention as separate ops (MatMul, Softmax, MatMul) everywhere, never onnxruntime's fused
   * `Attention` op (models/attention.ts fusedAttention): for graphs that graph/autodiff.ts
   * differentiates through attention (the fused op has no gradient rule), and for graphs whose
   * inputs are batched afterwards (GraphBuilder.batchInputs: the op does not broadcast queries of
   * a batch over keys fed once).
   */
  decomposedAttention?: boolean;
  /** Mixture-of-experts layers: what the router did (`router_probabilities/selected/weights`). */
  routing?: boolean;
  /** Mixture-of-experts layers: the hidden state the router reads (`router_input`), to check the routing against the gate weights. */
  routerInput?: boolean;
  /**
   * Norm-based attention and ALTI: per layer `transformed_values` [1, heads, keys, hidden]
   * (v·W_O per head), `layer_input` and `residual_sum` [1, seq, hidden], `output_bias` [hidden]
   * (when the projection has one) and, for post-LN blocks, `norm_weight`/`norm_bias` [hidden].
   * Only families whose ArchitectureInfo has `contributions` build them.
   */
  contributions?: boolean;
  /**
   * Head gates: each attention stack reads a graph input `head_gates.<stack>` float32 [layers, heads]
   * (1 = the head as trained, 0 = removed) that multiplies each head's context (softmax(·)·V, before
   * the heads are merged and go through the output projection), as transformers' `head_mask` does;
   * ALBERT's gates are per depth (layer i of the shared layer). Ones give the ungated model exactly.
   */
  headGates?: boolean;
  /** Per-head value vectors `values.<stack>.<layer>` [1, kvHeads, positions, headDim], as they enter attention·V. */
  values?: boolean;
  /**
   * The parts of each stack's input embedding, `embedding_token.<stack>`, `embedding_position.<stack>`,
   * `embedding_segment.<stack>` [1, seq, width] (those the family has), as looked up.
   */
  embeddings?: boolean;
  /**
   * The residual stream per layer, [1, seq, hidden]: `resid_input` (the layer's input),
   * `resid_attention` (after self-attention), `resid_cross` (after cross attention, decoders of
   * encoder-decoders) and `resid_output` (see Residuals in core/trace.ts).
   */
  residuals?: boolean;
  /** MLP activations `mlp_activation.<stack>.<layer>` [1, seq, inner]: the input of the MLP's output projection (dense MLPs only). */
  mlpActivations?: boolean;
  /**
   * Logit lens with this many top tokens: for row r = 0 (embedding output) … layers (output of the
   * last layer), `lens_ids.<stack>.<r>` int64 and `lens_probabilities.<stack>.<r>` [1, seq, k]: the
   * row's residual through the final norm and prediction head, softmax, TopK inside the graph.
   */
  logitLens?: number;
}

/** The mixture-of-experts layers of a model, as transformers routes them. */
export interface RoutingInfo {
  /** Experts of each mixture-of-experts layer. */
  experts: number;
  /** Experts each token is routed to (the top-k of the router softmax). */
  topK: number;
  /** The top-k weights are divided by their sum (Mixtral always, Qwen2-MoE with norm_topk_prob). */
  normalized: boolean;
  /** Indices of the layers with a router (Qwen2-MoE's mlp_only_layers have none). */
  layers: number[];
}

export interface ArchitectureInfo {
  kind: 'encoder' | 'decoder' | 'encoder-decoder';
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  /** Query heads per stack where a stack has other than numHeads (BART-likes with encoder_attention_heads ≠ decoder_attention_heads). */
  stackHeads?: Partial<Record<StackName, number>>;
  headDim: number;
  /** Longest input (and decoder input) the model accepts (max_position_embeddings); Infinity when unbounded. */
  maxPositions: number;
  /** Stacks the model produces attention for, with their layer counts. */
  stacks: Partial<Record<StackName, number>>;
  /** How each stack scores q·k (scale, masks, additive terms). */
  scoring: Partial<Record<StackName, StackScoring>>;
  /** Mixture-of-experts models: their routed layers (absent for dense models). */
  routing?: RoutingInfo;
  /**
   * Present when the family builds the `contributions` taps (self-attention): where its blocks
   * normalise ('post': LN(x + attn(x)), BERT; 'pre': x + attn(norm(x)), GPT-2, Llama) and the
   * post-LN epsilon.
   */
  contributions?: { norm: 'post' | 'pre'; eps?: number };
}

export interface ModelInputs {
  inputIds: readonly number[];
  /** Tokens already in the key/value cache before `inputIds` (incremental decoding). */
  pastLength?: number;
  typeIds?: readonly number[];
  decoderInputIds?: readonly number[];
}

export interface BuildContext {
  readonly g: GraphBuilder;
  readonly config: ModelConfig;
  readonly taps: TapRequest;
  /** Adds a checkpoint tensor as an initializer (same name → same value). */
  weight(name: string): Promise<Value>;
  /** Like `weight`, or null when the checkpoint lacks the tensor. */
  optionalWeight(name: string): Promise<Value | null>;
  hasWeight(name: string): boolean;
  /** The first prefix p such that `p + probe` is a tensor of the checkpoint (e.g. 'bert.' or ''). */
  findPrefix(prefixes: readonly string[], probe: string): string;
}

export interface Architecture {
  /** config.json `model_type` values this family handles. */
  readonly modelTypes: readonly string[];
  describe(config: ModelConfig): ArchitectureInfo;
  build(ctx: BuildContext): Promise<void>;
  feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor>;
}
