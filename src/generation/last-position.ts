/**
 * Only the last position's logits: a decoding step chooses the next token from the last row of
 * logits alone, yet a prompt pass of n tokens would compute and return [n, vocab] (a Qwen2.5-sized
 * vocabulary at 4,096 tokens: 2.5 GB of float32). This graph extension cuts the final hidden state
 * the prediction head reads to its last position before the head (the head works position by
 * position, so the row is the one the whole head computes), or, where that hidden state is not
 * found, the logits themselves. The logits output keeps its name, [1, 1, vocab].
 *
 * Isomorphic: imports nothing from Node.
 */
import type { BuildContext } from '../models/architecture.js';
import { headInput } from '../models/head-input.js';
import type { DecodingExtension } from './decoding-model.js';

/** The largest int64 end index of a Slice ("to the end"). */
const TO_END = Number.MAX_SAFE_INTEGER;

function lastPositionLogits(ctx: BuildContext): void {
  const { g } = ctx;
  const last = (v: { name: string }) => g.slice(v, [-1], [TO_END], [1]);
  // The value the last_hidden_state tap reads (it is requested with this extension), if the head reads it.
  const hidden = headInput(g);
  if (hidden !== undefined) {
    g.intercept({ name: hidden }, (h) => last(h));
  } else {
    // The value the logits output reads (its Identity's input): every reader after it reads its last row.
    const head = g.graphNodes.find((n) => n.outputs[0] === 'logits')?.inputs[0];
    if (head !== undefined) g.intercept({ name: head }, (v) => last(v));
  }
  if (g.graphNodes.some((n) => n.outputs[0] === 'last_hidden_state')) g.dropOutput('last_hidden_state');
}

/** The extension: logits of the last fed position only (with taps asking for `lastHiddenState` and `logits`). */
export const LAST_POSITION_LOGITS: DecodingExtension = { key: 'last-position-logits', extend: lastPositionLogits };
