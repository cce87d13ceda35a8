/**
 * What decoding needs from a model, and nothing more: `Model` (src/engine/model.ts) implements
 * it, so generation never depends on the engine.
 */
import type { Token, Trace } from '../core/trace.js';
import type { ArchitectureInfo, BuildContext, ModelInputs, TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { LanguageCodes } from '../tokenizer/language-codes.js';

export interface DecodingModel {
  /** Display name, for messages. */
  readonly name: string;
  /** The architecture's description of the checkpoint: kind, stacks, heads, positions, scoring. */
  readonly architectureInfo: ArchitectureInfo;
  /** Runs the graph for a set of taps on prepared inputs plus extra feeds (past keys/values, encoder states). */
  run(taps: TapRequest, inputs: ModelInputs, extra?: Readonly<Record<string, RuntimeTensor>>): Promise<Record<string, RuntimeTensor>>;
  /** Like `run`, on the graph of `taps` grown by `extension` (e.g. last-position.ts: the last position's logits only). */
  runExtended(taps: TapRequest, extension: DecodingExtension | undefined, inputs: ModelInputs, extra?: Readonly<Record<string, RuntimeTensor>>): Promise<Record<string, RuntimeTensor>>;
  /**
   * A Trace from graph outputs named as a full run names them (`tapName(kind, stack, layer)`,
   * [1, d0, rows, cols] each): attention, queries, keys and score terms of every stack present.
   */
  assemble(tokens: Token[], outputs: Readonly<Record<string, RuntimeTensor>>): Trace;
  /** The tokenizer's tokens for a text (with the special tokens it adds; `srcLang`: the source language code of translation tokenizers). */
  tokenize(text: string, pair?: string, maxLength?: number, srcLang?: string): Promise<Token[]>;
  /** Tokens for ids given directly. */
  tokensFromIds(ids: readonly number[]): Token[];
  /** Ids that end generation. */
  eosIds(): ReadonlySet<number>;
  /** Encoder-decoders: the id the decoder starts from. */
  readonly decoderStartId: number;
  /** forced_bos_token_id of the checkpoint's generation config, if any. */
  readonly forcedBosId?: number | undefined;
  /** forced_eos_token_id of the checkpoint's generation config, if any: the last token when generation reaches its length limit. */
  readonly forcedEosId?: number | undefined;
  /** Translation tokenizers (mBART, M2M100, NLLB): their language codes. */
  readonly languages?: LanguageCodes | undefined;
}

/** A graph grown after the architecture built it (the engine's GraphExtension), its sessions cached under `key`. */
export interface DecodingExtension {
  readonly key: string;
  extend(ctx: BuildContext): void | Promise<void>;
}
