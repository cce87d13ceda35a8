/**
 * Generation traces in the views: which tokens the model generated, and "steps" — the sequence as
 * it was when generated token s was produced (the prompt plus the first s generated tokens), with
 * the newest token's attention row over every earlier token.
 *
 * Decoder-only traces generate into `tokens` (stack `self`); encoder-decoder traces into
 * `decoderTokens` (stacks `decoder` and `cross`; the encoder ran once, before generation, so its
 * stack does not change with the step).
 *
 * Isomorphic: imports nothing from Node.
 */
import { attentionSource } from '../core/attention-on-demand.js';
import { AttnscopeError } from '../core/errors.js';
import type { GenerationInfo, Prediction, StackName, Trace } from '../core/trace.js';

export interface TraceGeneration {
  /** The token list the model generated into. */
  sequence: 'tokens' | 'decoderTokens';
  /** Tokens of the given prompt (for encoder-decoders: the decoder's start token). */
  promptLength: number;
  /** Generated tokens the trace holds: steps 1…steps exist (step 0 is the prompt alone). */
  steps: number;
  /** The trace's generation record, when it has one. */
  info: GenerationInfo | null;
}

/**
 * The generation of a trace: from its `generation` record, or, for traces written without one,
 * from the tokens' `generated` flags (the prompt ends at the first generated token). Null for
 * traces that are not generations.
 */
export function traceGeneration(trace: Trace): TraceGeneration | null {
  const sequence = trace.decoderTokens ? 'decoderTokens' : 'tokens';
  const tokens = trace[sequence] ?? [];
  const info = trace.generation ?? null;
  let promptLength: number;
  if (info && Number.isInteger(info.promptLength) && info.promptLength >= 0 && info.promptLength <= tokens.length) {
    promptLength = info.promptLength;
  } else {
    const first = tokens.findIndex((t) => t.generated === true);
    if (first < 0) return null;
    promptLength = first;
  }
  const steps = tokens.length - promptLength;
  if (steps <= 0 && !info) return null;
  return { sequence, promptLength, steps, info };
}

/** Whether the stack's attention changes as the generation proceeds (not the encoder's). */
export function stackFollowsSteps(stack: StackName): boolean {
  return stack !== 'encoder';
}

/** A step checked against the trace: an integer in 0…steps, else an AttnscopeError. */
export function checkStep(trace: Trace, step: number): { gen: TraceGeneration; step: number } {
  const gen = traceGeneration(trace);
  if (!gen) throw new AttnscopeError('--step applies to generation traces (from attnscope generate, or attnscope view --generate); this trace is not one');
  if (!Number.isInteger(step) || step < 0 || step > gen.steps) {
    throw new AttnscopeError(`step ${step} is out of range (the generation has ${gen.steps} generated token${gen.steps === 1 ? '' : 's'}: steps 0–${gen.steps}, 0 = the prompt)`);
  }
  return { gen, step };
}

export interface StepWindow {
  /** Query and key positions of the stack shown at this step (a prefix of each). */
  queries: number;
  keys: number;
  /** Query position of the newest token (the generated token `step`, or the prompt's last at step 0), or null for the encoder. */
  newest: number | null;
}

/**
 * What a stack shows at a step: the first promptLength + step query positions (and key
 * positions, except for cross attention, whose keys are the encoder's), newest last.
 */
export function stepWindow(trace: Trace, stack: StackName, step: number): StepWindow {
  const { gen } = checkStep(trace, step);
  // Dense probabilities, or queries and keys they are computed from (a generation on demand).
  const dense = trace.attention[stack];
  const { numQueries: nq, numKeys: nk } = dense ? { numQueries: dense.dims[1], numKeys: dense.dims[2] } : attentionSource(trace, stack);
  if (!stackFollowsSteps(stack)) return { queries: nq, keys: nk, newest: null };
  const n = Math.min(nq, gen.promptLength + step);
  if (n < 1) throw new AttnscopeError(`step ${step} shows no tokens (the prompt is empty)`);
  return { queries: n, keys: stack === 'cross' ? nk : Math.min(nk, n), newest: n - 1 };
}

/**
 * The attention row of the newest token at `step` (generated token `step`; the prompt's last token
 * at step 0) over the keys it saw, for one layer and head: read from the dense probabilities, or
 * computed exactly from the trace's queries, keys and score terms (a generation on demand).
 * Null for the encoder, whose rows do not follow the steps.
 */
export function stepAttentionRow(trace: Trace, stack: StackName, step: number, layer: number, head: number): Float32Array | null {
  const w = stepWindow(trace, stack, step);
  if (w.newest === null) return null;
  return attentionSource(trace, stack).block(layer, head, w.newest, w.newest + 1, 0, w.keys);
}

/** Probability the generated token at a sequence position was chosen with, when the trace records it. */
export function probabilityAt(trace: Trace, position: number): number | undefined {
  const gen = traceGeneration(trace);
  if (!gen?.info) return undefined;
  return gen.info.steps[position - gen.promptLength]?.probability;
}

/** The token list a stack's queries or keys come from. */
export function sideSequence(stack: StackName, side: 'query' | 'key'): 'tokens' | 'decoderTokens' {
  return stack === 'self' || stack === 'encoder' || (stack === 'cross' && side === 'key') ? 'tokens' : 'decoderTokens';
}

/** "p = 0.9688" for each generated position among `positions` of a stack's side ('' when none). */
export function probabilityNote(trace: Trace, stack: StackName, side: 'query' | 'key', positions: readonly number[]): string {
  const gen = traceGeneration(trace);
  if (!gen || sideSequence(stack, side) !== gen.sequence) return '';
  const parts = positions.flatMap((p) => {
    const prob = probabilityAt(trace, p);
    return p >= gen.promptLength && prob !== undefined ? [`generated token ${p - gen.promptLength + 1}, p = ${formatProbability(prob)}`] : [];
  });
  return parts.join('; ');
}

export function formatProbability(p: number): string {
  if (p >= 0.9999 && p < 1) return p.toFixed(5);
  return p >= 0.001 ? p.toFixed(4) : p.toExponential(2);
}

/** "greedy · 12 new tokens · stopped by length" (sampling: its temperature, top-k, top-p and seed). */
export function describeGeneration(gen: TraceGeneration): string {
  const info = gen.info;
  const parts: string[] = [];
  if (info) {
    if (info.strategy === 'sample') {
      const opts = [
        info.temperature !== undefined ? `temperature ${info.temperature}` : '',
        info.topK ? `top-k ${info.topK}` : '',
        info.topP !== undefined && info.topP < 1 ? `top-p ${info.topP}` : '',
        info.seed !== undefined ? `seed ${info.seed}` : '',
      ].filter(Boolean);
      parts.push(`sampled${opts.length ? ` (${opts.join(', ')})` : ''}`);
    } else parts.push('greedy');
  }
  const prompt = gen.sequence === 'decoderTokens' && gen.promptLength === 1 ? 'decoder start token' : `${gen.promptLength} prompt token${gen.promptLength === 1 ? '' : 's'}`;
  parts.push(`${prompt} + ${gen.steps} new token${gen.steps === 1 ? '' : 's'}`);
  if (info) parts.push(info.stoppedBy === 'eos' ? 'stopped by end of sequence' : 'stopped by length');
  return parts.join(' · ');
}

// --- predictions (`--top-k`) ------------------------------------------------------------------------

/** The token list predictions index into: `decoderTokens` for encoder-decoders, else `tokens`. */
export function predictionSequence(trace: Trace): 'tokens' | 'decoderTokens' {
  return trace.decoderTokens ? 'decoderTokens' : 'tokens';
}

/** The model head's prediction at a position of its sequence, when the trace has one. */
export function predictionAt(trace: Trace, position: number): Prediction | undefined {
  return trace.predictions?.find((p) => p.position === position);
}

/** "predicts next" / "fills the mask with" — what a prediction is, for people. */
export function predictionVerb(p: Prediction): string {
  return p.kind === 'masked' ? 'fills the mask with' : 'predicts next';
}

/** A candidate probability as text: 3 decimals, or an exponent below 0.001. */
export function formatCandidate(p: number): string {
  return p >= 0.001 ? p.toFixed(3) : p.toExponential(1);
}

/**
 * "predicts next: “there” 0.412 · “a” 0.120 · “the” 0.050" for the prediction at each of
 * `positions` (a stack side's token positions), candidate tokens shown through `show` (e.g.
 * prettified); '' when none is predicted there.
 */
export function predictionNote(trace: Trace, stack: StackName, side: 'query' | 'key', positions: readonly number[], show: (token: string) => string = (t) => t): string {
  if (!trace.predictions?.length || sideSequence(stack, side) !== predictionSequence(trace)) return '';
  return positions
    .flatMap((pos) => {
      const p = predictionAt(trace, pos);
      if (!p || p.candidates.length === 0) return [];
      return [`${predictionVerb(p)}: ${p.candidates.map((c) => `“${show(c.token)}” ${formatCandidate(c.probability)}`).join(' · ')}`];
    })
    .join('; ');
}

/**
 * What a token's tooltip adds to its raw text: for a generated token which one it is and its
 * probability, and the head's predictions at its position ('' when neither applies).
 */
export function tokenNote(trace: Trace, stack: StackName, side: 'query' | 'key', positions: readonly number[], show?: (token: string) => string): string {
  return [probabilityNote(trace, stack, side, positions), predictionNote(trace, stack, side, positions, show)].filter(Boolean).join('; ');
}

/**
 * A token's tooltip in the exports — `raw: note` with tokenNote's note (generated token and its
 * probability, the head's predictions at its position) — or undefined when there is nothing to say.
 * `show` displays predicted candidates (e.g. prettified).
 */
export function tokenTipText(trace: Trace, stack: StackName, side: 'query' | 'key', t: { raw: string; positions: readonly number[] }, show?: (token: string) => string): string | undefined {
  const note = tokenNote(trace, stack, side, t.positions, show);
  return note ? `${t.raw}: ${note}` : undefined;
}
