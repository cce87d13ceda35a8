/**
 * Taps inside every layer, shared by all families (TapRequest.embeddings, residuals,
 * mlpActivations, logitLens): each family calls `tapEmbeddings` once per stack, `tapLayer` once
 * per block, `tapMlp` around its MLP's hidden activation and `tapLogitLens` with its final norm and
 * head. Every helper builds nothing when its tap is not requested, so the graph is the same as
 * without them.
 */
import type { StackName } from '../core/trace.js';
import type { Value } from '../graph/builder.js';
import { tapName, type BuildContext } from './architecture.js';

/** Parts of the input embedding a stack can tap. */
export type EmbeddingPart = 'token' | 'position' | 'segment';

/** Graph output name of an embedding part: `embedding_<part>.<stack>`. */
export function embeddingTapName(part: EmbeddingPart, stack: StackName): string {
  return `embedding_${part}.${stack}`;
}

/** Graph output name of logit-lens row `row` (0 = embedding output, l + 1 = after layer l). */
export function lensTapName(kind: 'lens_ids' | 'lens_probabilities', stack: StackName, row: number): string {
  return tapName(kind, stack, row);
}

/** Taps the parts of a stack's input embedding as looked up (`embeddings`); absent parts are skipped. */
export function tapEmbeddings(ctx: BuildContext, stack: StackName, parts: Partial<Record<EmbeddingPart, Value | null>>): void {
  if (!ctx.taps.embeddings) return;
  for (const part of ['token', 'position', 'segment'] as const) {
    const v = parts[part];
    if (v) ctx.g.output(v, embeddingTapName(part, stack), 'float32');
  }
}

/** The residual stream around one block (see Residuals in core/trace.ts). */
export interface BlockStates {
  /** What the block reads. */
  input: Value;
  /**
   * The stream after self-attention (post-LN: after its norm; parallel blocks: x + attn(norm(x)),
   * which they may give as a function, called only when the residuals are tapped).
   */
  attention: Value | (() => Value);
  /** Decoders of encoder-decoders: the stream after cross attention. */
  cross?: Value;
  /** What the block hands on. */
  output: Value;
}

/** Residual states of each stack, per builder, for the logit lens: [0] = layer 0's input, [l + 1] = layer l's output. */
const lensStates = new WeakMap<BuildContext, Map<StackName, Value[]>>();

/** Taps the residual stream of one block (`residuals`) and keeps it for the logit lens. */
export function tapLayer(ctx: BuildContext, stack: StackName, layer: number, s: BlockStates): void {
  const { g, taps } = ctx;
  if (taps.residuals) {
    g.output(s.input, tapName('resid_input', stack, layer), 'float32');
    g.output(typeof s.attention === 'function' ? s.attention() : s.attention, tapName('resid_attention', stack, layer), 'float32');
    if (s.cross) g.output(s.cross, tapName('resid_cross', stack, layer), 'float32');
    g.output(s.output, tapName('resid_output', stack, layer), 'float32');
  }
  if (taps.logitLens) {
    let byStack = lensStates.get(ctx);
    if (!byStack) lensStates.set(ctx, (byStack = new Map()));
    let states = byStack.get(stack);
    if (!states) byStack.set(stack, (states = []));
    if (layer === 0) states[0] = s.input;
    states[layer + 1] = s.output;
  }
}

/** Taps an MLP's hidden activation (`mlpActivations`) and returns it unchanged, to wrap where it is computed. */
export function tapMlp(ctx: BuildContext, stack: StackName, layer: number, activation: Value): Value {
  if (ctx.taps.mlpActivations) ctx.g.output(activation, tapName('mlp_activation', stack, layer), 'float32');
  return activation;
}

/**
 * With `logitLens` = k, reads every residual state the stack's `tapLayer` calls kept through
 * `readout` (the model's final norm and prediction head, [1, seq, hidden] → [1, seq, vocab]), then
 * softmax and TopK inside the graph: only [seq, k] ids and probabilities per row leave it. One
 * readout per row, so onnxruntime holds one row's logits at a time.
 */
export async function tapLogitLens(ctx: BuildContext, stack: StackName, readout: (h: Value) => Promise<Value>): Promise<void> {
  const k = ctx.taps.logitLens;
  if (!k) return;
  const { g } = ctx;
  const states = lensStates.get(ctx)?.get(stack);
  if (!states || states.length === 0) throw new Error(`logit lens: no residual states were kept for the ${stack} stack`);
  for (let row = 0; row < states.length; row++) {
    const h = states[row];
    if (!h) throw new Error(`logit lens: residual state ${row} of the ${stack} stack missing`);
    const probs = g.softmax(await readout(h), -1);
    const [values, indices] = g.node('TopK', [probs, g.ints([k])], { axis: -1, largest: 1, sorted: 1 }, 2) as [Value, Value];
    g.output(indices, lensTapName('lens_ids', stack, row), 'int64');
    g.output(values, lensTapName('lens_probabilities', stack, row), 'float32');
  }
}
