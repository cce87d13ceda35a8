/** Shared command-line parsing helpers. */
import { graphCacheMax } from '../io/graph-cache.js';
import { UsageError } from './parse.js';
import type { LoadOptions } from '../engine/load.js';
import type { TraceOptions } from '../engine/model.js';

/** Parses "1,2,3" (spaces allowed) into integers, naming the flag on error. */
export function parseIdList(value: string | undefined, flag: string): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(/[\s,]+/).filter((p) => p !== '');
  if (parts.length === 0) throw new UsageError(`${flag}: expected a comma-separated list of integers`);
  return parts.map((p) => {
    if (!/^-?\d+$/.test(p)) throw new UsageError(`${flag}: '${p}' is not an integer`);
    const n = Number(p);
    if (n < 0) throw new UsageError(`${flag}: '${p}' is negative`);
    return n;
  });
}

export const MODEL_OPTIONS = {
  revision: { type: 'string' },
  offline: { type: 'boolean' },
  threads: { type: 'string' },
} as const;

/** --help lines of MODEL_OPTIONS. */
export const MODEL_HELP = `  --revision   the Hub revision (branch, tag or commit) of a Hub id (default main)
  --offline    use only what is already in the Hugging Face cache (as HF_HUB_OFFLINE=1 does)
  --threads    onnxruntime threads (default: one per core)`;

/** loadModel options from MODEL_OPTIONS flags. */
export function parseLoadOptions(values: { revision?: string; offline?: boolean; threads?: string }): LoadOptions {
  graphCacheMax(); // a malformed $ATTNSCOPE_CACHE_MAX is an error now, not a silently unbounded cache later
  return { revision: values.revision, offline: values.offline, threads: parseThreads(values.threads) };
}

/** Translation models (mBART, M2M100, NLLB): the source and target language codes. */
export const LANGUAGE_OPTIONS = {
  'src-lang': { type: 'string' },
  'tgt-lang': { type: 'string' },
} as const;

/** --help lines of LANGUAGE_OPTIONS. */
export const LANGUAGE_HELP = `  --src-lang   translation models (mBART, M2M100, NLLB): the source language code the tokenizer adds
               (e.g. en_XX, en, eng_Latn; default: tokenizer_config.json's src_lang)
  --tgt-lang   the target language: generation starts the decoder with its code (mBART) or forces it
               as the first token (M2M100, NLLB, mBART-50); --decoder-text is encoded with it`;

/** What a model runs on: text (and a pair) or token ids, and for encoder-decoders the decoder input. */
export const INPUT_OPTIONS = {
  text: { type: 'string' },
  pair: { type: 'string' },
  ids: { type: 'string' },
  'type-ids': { type: 'string' },
  'decoder-text': { type: 'string' },
  'decoder-ids': { type: 'string' },
  truncate: { type: 'boolean' },
  ...LANGUAGE_OPTIONS,
} as const;

export interface InputValues {
  text?: string;
  pair?: string;
  ids?: string;
  'type-ids'?: string;
  'decoder-text'?: string;
  'decoder-ids'?: string;
  truncate?: boolean;
  'src-lang'?: string;
  'tgt-lang'?: string;
}

/**
 * The text (or null with ids) and trace options from INPUT_OPTIONS flags: exactly one of --text
 * and --ids (a text that gives no tokens is refused by the model). `missing` is the error when neither is given.
 */
export function parseModelInput(values: InputValues, command: string, missing: string): { text: string | null; options: TraceOptions } {
  const ids = parseIdList(values.ids, '--ids');
  if (values.text === undefined && ids === undefined) throw new UsageError(missing);
  if (values.text !== undefined && ids !== undefined) throw new UsageError(`${command}: give either --text or --ids, not both`);
  if (ids !== undefined && values['src-lang'] !== undefined) throw new UsageError(`${command}: --src-lang applies to --text (token ids already hold their language code)`);
  return {
    text: values.text ?? null,
    options: {
      pair: values.pair,
      ids,
      typeIds: parseIdList(values['type-ids'], '--type-ids'),
      decoderText: values['decoder-text'],
      decoderIds: parseIdList(values['decoder-ids'], '--decoder-ids'),
      truncate: values.truncate ?? false,
      ...(values['src-lang'] !== undefined ? { srcLang: values['src-lang'] } : {}),
      ...(values['tgt-lang'] !== undefined ? { tgtLang: values['tgt-lang'] } : {}),
    },
  };
}

export function parsePositiveInt(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new UsageError(`${flag}: expected a positive integer, got '${value}'`);
  return n;
}

/** A position, layer or token id: 0 or more (a safe integer). */
export function parseIndex(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n)) throw new UsageError(`${flag}: expected a non-negative integer, got '${value}'`);
  return n;
}

/** Most intra-op threads accepted (onnxruntime fails far below absurd counts). */
export const MAX_THREADS = 256;

export function parseThreads(value: string | undefined): number | undefined {
  const n = parsePositiveInt(value, '--threads');
  if (n !== undefined && n > MAX_THREADS) throw new UsageError(`--threads: expected 1 to ${MAX_THREADS}, got ${n}`);
  return n;
}

export function parseNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new UsageError(`${flag}: expected a number, got '${value}'`);
  return n;
}

/** Sampling flags shared by \`generate\` and \`view --generate\`. */
export const SAMPLING_OPTIONS = {
  sample: { type: 'boolean' },
  temperature: { type: 'string' },
  'sample-top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
} as const;

/** --help lines of SAMPLING_OPTIONS. */
export const SAMPLING_HELP = `  --sample     sample the next token instead of taking the most likely one (greedy); then:
  --temperature  divide the logits by T (default 1);  --seed  the random seed (default 0)
  --sample-top-k  sample among the K most likely tokens only;  --top-p  among the fewest whose
               probabilities add up to P`;

/** Options renamed or misplaced, to suggest in "unknown option" errors. */
export const SAMPLING_RENAMED = { 'top-k': 'sample-top-k' } as const;

export interface SamplingValues {
  sample?: boolean;
  temperature?: string;
  'sample-top-k'?: string;
  'top-p'?: string;
  seed?: string;
}

/** Strategy and sampling parameters from the flags; temperature, sample-top-k, top-p and seed need --sample. */
export function parseSampling(values: SamplingValues): {
  strategy: 'greedy' | 'sample';
  temperature?: number;
  sampleTopK?: number;
  topP?: number;
  seed?: number;
} {
  const sampling = values.sample ?? false;
  if (!sampling && (values.temperature || values['sample-top-k'] || values['top-p'] || values.seed)) {
    throw new UsageError('--temperature, --sample-top-k, --top-p and --seed apply to sampling: add --sample');
  }
  return {
    strategy: sampling ? 'sample' : 'greedy',
    temperature: parseNumber(values.temperature, '--temperature'),
    sampleTopK: parsePositiveInt(values['sample-top-k'], '--sample-top-k'),
    topP: parseNumber(values['top-p'], '--top-p'),
    seed: parseNumber(values.seed, '--seed'),
  };
}
