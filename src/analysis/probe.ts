/**
 * The standard induction / duplicate-token probe (as TransformerLens' demos run it): a sequence
 * of `seqLen` random tokens repeated once after the model's first token (BOS; [CLS] for
 * encoders), `[BOS, r1 … rL, r1 … rL]`, traced `samples` times with different random tokens; the
 * head table of every trace (head-types.ts with `repeat`) is averaged over the samples.
 *
 * Defaults: 4 samples of 50 tokens (the sequence length of TransformerLens' induction demo), seed 0.
 * Random tokens are drawn uniformly from 0 … vocabSize − 1 leaving out the tokenizer's special
 * ids (and the prefix ids), with mulberry32 — a 32-bit seeded PRNG (Tommy Ettinger's constants),
 * the same stream for the same seed on every platform.
 *
 * Isomorphic: the model comes in through the narrow `ProbeTracer` interface (the engine's Model satisfies it).
 */
import { AttnscopeError } from '../core/errors.js';
import { mulberry32 } from '../core/random.js';
import type { StackName, Trace } from '../core/trace.js';
import { averageHeadTables, headTable, type HeadTableRow } from './head-types.js';
import { defaultStack } from './head-metrics.js';

/** What the probe needs of a model: tracing token ids as given. */
export interface ProbeTracer {
  trace(text: null, options: { ids: readonly number[] }): Promise<Trace>;
}

/** Which ids a probe draws and puts first. */
export interface ProbeVocabulary {
  /** Ids before the random sequence (BOS, or [CLS]); may be empty. */
  prefix: readonly number[];
  /** Ids are drawn from 0 … size − 1. */
  size: number;
  /** Ids never drawn (special tokens). */
  exclude: ReadonlySet<number>;
}

export interface ProbeOptions {
  samples?: number;
  seqLen?: number;
  seed?: number;
  excludeFirstToken?: boolean;
  /** The stack to measure (default: the trace's `defaultStack`). */
  stack?: StackName;
}

export const PROBE_DEFAULTS = { samples: 4, seqLen: 50, seed: 0 } as const;


/** The id sequences of a probe: `samples` arrays of prefix + r + r, r of length seqLen. */
export function probeSequences(vocab: ProbeVocabulary, options: ProbeOptions = {}): number[][] {
  const samples = options.samples ?? PROBE_DEFAULTS.samples;
  const seqLen = options.seqLen ?? PROBE_DEFAULTS.seqLen;
  const rand = mulberry32(options.seed ?? PROBE_DEFAULTS.seed);
  const excluded = new Set([...vocab.exclude, ...vocab.prefix]);
  if (vocab.size - [...excluded].filter((id) => id >= 0 && id < vocab.size).length < 2) {
    throw new AttnscopeError(`the probe needs at least 2 ordinary token ids; the vocabulary has ${vocab.size}`);
  }
  const out: number[][] = [];
  for (let s = 0; s < samples; s++) {
    const r: number[] = [];
    while (r.length < seqLen) {
      const id = Math.floor(rand() * vocab.size);
      if (!excluded.has(id)) r.push(id);
    }
    out.push([...vocab.prefix, ...r, ...r]);
  }
  return out;
}

export interface ProbeResult {
  /** The averaged head table. */
  table: HeadTableRow[];
  /** The id sequences run. */
  sequences: number[][];
  stack: StackName;
}

/** Runs the probe and averages the head tables of its traces. */
export async function runProbe(tracer: ProbeTracer, vocab: ProbeVocabulary, options: ProbeOptions = {}): Promise<ProbeResult> {
  const seqLen = options.seqLen ?? PROBE_DEFAULTS.seqLen;
  const sequences = probeSequences(vocab, options);
  const tables: HeadTableRow[][] = [];
  let stack = options.stack;
  for (const ids of sequences) {
    const trace = await tracer.trace(null, { ids });
    stack ??= defaultStack(trace);
    tables.push(headTable(trace, stack, { excludeFirstToken: options.excludeFirstToken, repeat: { prefix: vocab.prefix.length, length: seqLen } }));
  }
  return { table: averageHeadTables(tables), sequences, stack: stack ?? 'self' };
}

/**
 * The probe vocabulary of a model: config.json's vocab_size (or the tokenizer's size), the
 * tokenizer's special ids left out, and the prefix: the BOS id (tokenizer, else config.json's
 * bos_token_id), or [CLS] for models without one; empty when there is neither.
 */
export function probeVocabularyOf(model: {
  readonly config: { has(key: string): boolean; int(key: string): number };
  readonly tokenizer: {
    readonly vocabSize?: number;
    readonly specialIds?: ReadonlySet<number>;
    readonly bos?: { readonly id: number | null };
    readonly cls?: { readonly id: number | null };
  } | null;
}): ProbeVocabulary {
  const tk = model.tokenizer;
  const size = model.config.has('vocab_size') ? model.config.int('vocab_size') : (tk?.vocabSize ?? 0);
  const bos = tk?.bos?.id ?? (model.config.has('bos_token_id') ? model.config.int('bos_token_id') : null) ?? tk?.cls?.id ?? null;
  const prefix = bos !== null && bos >= 0 && bos < size ? [bos] : [];
  return { prefix, size, exclude: new Set(tk?.specialIds ?? []) };
}
