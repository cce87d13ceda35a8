/**
 * The fixtures' gradients.json (PyTorch autograd references; fields described in
 * test/fixtures/README.md): types, the fixtures that have one, and reading it.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FIXTURES } from './reference.js';

type Grid = number[][];
type Grid4 = number[][][][];

/** `ablation`: layer 0 head 0 gated to 0 (one entry per stack for encoder-decoders). */
export interface GradientAblation {
  layer: number;
  head: number;
  target_ablated: number;
  kl: number | null;
}

export interface GradientsInput {
  id: string;
  input_ids: number[];
  decoder_input_ids?: number[];
  target: { kind: string; position: number; token_id: number | null; value: number; stack?: string };
  embedding_grad: Grid;
  grad_x_input: number[];
  integrated_gradients: number[];
  ig_completeness: { sum_attributions: number; target_x: number; target_baseline: number };
  /** [layer][head][query][key], per stack for encoder-decoders; null above 64 tokens. */
  attention_grad: Grid4 | Record<string, Grid4> | null;
  /** [layer][head], per stack for encoder-decoders. */
  head_importance: Grid | Record<string, Grid>;
  ablation: GradientAblation | Record<string, GradientAblation>;
}

export interface GradientsJson {
  inputs: GradientsInput[];
}

/** Every fixture in test/fixtures with a gradients.json. */
export const GRADIENT_FIXTURES: readonly string[] = readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, 'gradients.json'))).sort();

export function readGradients(fixture: string): GradientsJson {
  return JSON.parse(readFileSync(join(FIXTURES, fixture, 'gradients.json'), 'utf8')) as GradientsJson;
}

/** A per-stack field as a map: `{ self: value }` for single-stack models. */
export function byStack<T>(field: T[] | Record<string, T[]>): Record<string, T[]> {
  return Array.isArray(field) ? { self: field } : field;
}
