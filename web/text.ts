/** Text measurement and token labels shared by the views. */
import { FONT_FAMILY, LAYOUT } from '../src/views/theme.js';
import type { Trace, Token } from '../src/core/trace.js';
import type { StackName } from '../src/core/trace.js';
import type { DisplayToken } from '../src/views/tokens.js';

let measureCtx: CanvasRenderingContext2D | null = null;

export function font(size: number = LAYOUT.fontSize, weight = ''): string {
  return `${weight ? `${weight} ` : ''}${size}px ${FONT_FAMILY}`;
}

/** Rendered width of a text in the views' font. */
export function measure(text: string, size: number = LAYOUT.fontSize, weight = ''): number {
  measureCtx ??= document.createElement('canvas').getContext('2d')!;
  measureCtx.font = font(size, weight);
  return measureCtx.measureText(text).width;
}

/** Cuts a label to `max` code points with an ellipsis. */
export function truncate(label: string, max: number = LAYOUT.maxLabelChars): string {
  const chars = [...label];
  return chars.length <= max ? label : `${chars.slice(0, max - 1).join('')}…`;
}

/**
 * Whether a display token stands for generated tokens (issue 4: generation traces mark the tokens
 * the model produced with `generated: true`).
 */
export function isGenerated(trace: Trace, stack: StackName, side: 'query' | 'key', t: DisplayToken): boolean {
  const tokens: Token[] | undefined = stack === 'self' || stack === 'encoder' || (stack === 'cross' && side === 'key') ? trace.tokens : trace.decoderTokens;
  return t.positions.some((p) => (tokens?.[p] as (Token & { generated?: boolean }) | undefined)?.generated === true);
}
