/**
 * How many batch items one session run may take (batched integrated gradients, batched logits):
 * a per-item estimate of the run's working memory from the model's shape, against a budget.
 * Browser-safe: imports nothing from Node.
 *
 * The estimate counts float32 tensors, per item of `tokens` positions:
 * - forward only, what is live at the peak (onnxruntime reuses buffers between layers): the
 *   scores and probabilities of one attention [heads, n, n] twice, the MLP's inner activations
 *   [n, inner] twice, four hidden states [n, hidden] and the logits [n, vocab];
 * - forward and backward, what the backward pass keeps from every layer and its gradients' buffers
 *   (eighteen [n, hidden] values, five [n, inner], six [heads, n, n]) plus five [n, vocab] (logits,
 *   their log-softmax, the gradients); fitted to the peak RSS bench/gradients.ts --ig measured
 *   (gpt2-small at 32 tokens: 74 MiB a point measured, 80 estimated).
 * Mixture-of-experts layers run every expert on every token (inner · experts). bench/gradients.ts
 * prints the estimate beside the measured peak RSS.
 */
import type { Model } from './model.js';

/** Default working-memory budget of one batched run (MiB). */
export const DEFAULT_BATCH_MEMORY_MB = 1024;

/** The widths that set a run's memory. */
export interface MemoryShape {
  /** Layers over all stacks (a decoder's cross attention counts again). */
  layers: number;
  heads: number;
  hidden: number;
  /** MLP width (times the experts for mixture-of-experts layers). */
  inner: number;
  vocab: number;
}

function firstInt(model: Model, keys: readonly string[]): number | null {
  for (const k of keys) {
    const v = model.config.raw[k];
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v;
  }
  return null;
}

/** The model's MemoryShape from its architecture description and config.json. */
export function memoryShape(model: Model): MemoryShape {
  const info = model.architectureInfo;
  const layers = Object.values(info.stacks).reduce((a: number, b) => a + (b ?? 0), 0);
  const heads = info.numHeads;
  const hidden = firstInt(model, ['hidden_size', 'n_embd', 'd_model', 'dim']) ?? info.numHeads * info.headDim;
  const dense = firstInt(model, ['intermediate_size', 'n_inner', 'd_ff', 'encoder_ffn_dim', 'ffn_dim', 'hidden_dim']) ?? 4 * hidden;
  const experts = firstInt(model, ['num_local_experts', 'num_experts']) ?? 1;
  const expertInner = firstInt(model, ['moe_intermediate_size']) ?? dense;
  const shared = firstInt(model, ['shared_expert_intermediate_size']) ?? 0;
  const inner = experts > 1 ? Math.max(dense, experts * expertInner + shared) : dense;
  const vocab = firstInt(model, ['vocab_size']) ?? 32_000;
  return { layers: Math.max(1, layers), heads, hidden, inner, vocab };
}

/** Estimated bytes one batch item of `tokens` positions adds to a forward run. */
export function forwardItemBytes(s: MemoryShape, tokens: number): number {
  const n = tokens;
  return 4 * (2 * s.heads * n * n + 2 * n * s.inner + 4 * n * s.hidden + n * s.vocab);
}

/** Estimated bytes one batch item of `tokens` positions adds to a forward and backward run. */
export function backwardItemBytes(s: MemoryShape, tokens: number): number {
  const n = tokens;
  return 4 * (s.layers * (18 * n * s.hidden + 5 * n * s.inner + 6 * s.heads * n * n) + 5 * n * s.vocab);
}

/** Items per run: as many as fit `budgetMB` (at least 1, at most `cap`). */
export function itemsPerRun(itemBytes: number, budgetMB: number, cap: number): number {
  const fit = Math.floor((budgetMB * 1024 * 1024) / Math.max(1, itemBytes));
  return Math.max(1, Math.min(cap, fit));
}
