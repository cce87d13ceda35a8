/**
 * Plausibility of a trace's numbers. A trace file may come from anywhere (an older tool, a
 * PyTorch script, a damaged download): attention probabilities outside [0, 1] or not numbers at
 * all still open, but with a warning naming where they are, instead of being drawn as if real.
 */
import type { LayerStack, StackMap, Trace } from './trace.js';

/** Rounding in float32 softmax can overshoot 1 or undershoot 0 by a few ulps. */
const TOLERANCE = 1e-4;

interface Count {
  nan: number;
  infinite: number;
  negative: number;
  aboveOne: number;
  first?: { layer: number; index: number; value: number };
}

function countStack(stack: LayerStack): Count {
  const c: Count = { nan: 0, infinite: 0, negative: 0, aboveOne: 0 };
  stack.layers.forEach((data, layer) => {
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      if (v >= -TOLERANCE && v <= 1 + TOLERANCE) continue;
      if (Number.isNaN(v)) c.nan++;
      else if (!Number.isFinite(v)) c.infinite++;
      else if (v < 0) c.negative++;
      else c.aboveOne++;
      c.first ??= { layer, index: i, value: v };
    }
  });
  return c;
}

/**
 * One message per attention stack holding values that are not probabilities (NaN, infinite,
 * negative, above 1): how many of each, and where the first one is. Empty for a sound trace.
 */
export function attentionWarnings(trace: Trace): string[] {
  const out: string[] = [];
  const stacks: StackMap = trace.attention;
  for (const [name, stack] of Object.entries(stacks)) {
    if (!stack) continue;
    const c = countStack(stack);
    if (!c.first) continue;
    const kinds = [
      c.nan ? `${c.nan} NaN` : '',
      c.infinite ? `${c.infinite} infinite` : '',
      c.negative ? `${c.negative} negative` : '',
      c.aboveOne ? `${c.aboveOne} above 1` : '',
    ].filter((s) => s !== '');
    const [, rows, cols] = stack.dims;
    const { layer, index, value } = c.first;
    const head = Math.floor(index / (rows * cols));
    const row = Math.floor(index / cols) % rows;
    const col = index % cols;
    out.push(
      `attention.${name} holds ${kinds.join(', ')} value${c.nan + c.infinite + c.negative + c.aboveOne > 1 ? 's' : ''} ` +
        `(first: layer ${layer}, head ${head}, row ${row}, column ${col} = ${value}); probabilities lie in [0, 1]`,
    );
  }
  return out;
}
