/**
 * Adjusts tokenizer.json the way transformers' fast tokenizers do before encoding:
 *
 * - truncation and padding stored in tokenizer.json are switched off (transformers disables them
 *   for a call without `truncation` / `padding`);
 * - `add_bos_token` / `add_eos_token` in tokenizer_config.json (and, for the Llama, CodeLlama and
 *   Gemma classes, their defaults true / false) replace the post-processor with
 *   `[bos] $A [eos]` / `[bos] $A [eos] [bos]:1 $B:1 [eos]:1`, as `update_post_processor` does
 *   (LlamaTokenizerFast in transformers 4, every TokenizersBackend in transformers 5). A ByteLevel
 *   or RobertaProcessing offset trimmer of the original post-processor is kept in front of it.
 */
import { replaceValues } from './json-scan.js';
import type { TokenizerSettings } from './special-tokens.js';
import type { TokenizerJsonInfo } from './tokenizer-json.js';

type Json = Record<string, unknown>;

/** Classes whose fast tokenizer always rebuilds its template, with add_bos_token defaulting to true. */
const BOS_BY_DEFAULT = /^(Llama|CodeLlama|Gemma)Tokenizer(Fast)?$/;

export interface TemplateFlags {
  addBos: boolean;
  addEos: boolean;
}

/** The add_bos/add_eos flags transformers would apply, or undefined to keep tokenizer.json's post-processor. */
export function templateFlags(settings: TokenizerSettings): TemplateFlags | undefined {
  const bosDefault = settings.tokenizerClass !== undefined && BOS_BY_DEFAULT.test(settings.tokenizerClass);
  if (!bosDefault && settings.addBosToken === undefined && settings.addEosToken === undefined) return undefined;
  return { addBos: settings.addBosToken ?? bosDefault, addEos: settings.addEosToken ?? false };
}

function templateProcessor(flags: TemplateFlags, bos: [string, number] | null, eos: [string, number] | null): Json {
  const special = (tok: [string, number], typeId: number) => ({ SpecialToken: { id: tok[0], type_id: typeId } });
  const seq = (id: 'A' | 'B', typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const part = (id: 'A' | 'B', typeId: number) => [
    ...(flags.addBos && bos ? [special(bos, typeId)] : []),
    seq(id, typeId),
    ...(flags.addEos && eos ? [special(eos, typeId)] : []),
  ];
  const specialTokens: Json = {};
  for (const tok of [flags.addBos ? bos : null, flags.addEos ? eos : null]) {
    if (tok) specialTokens[tok[0]] = { id: tok[0], ids: [tok[1]], tokens: [tok[0]] };
  }
  return {
    type: 'TemplateProcessing',
    single: part('A', 0),
    pair: [...part('A', 0), ...part('B', 1)],
    special_tokens: specialTokens,
  };
}

/** The offset-trimming ByteLevel step of a post-processor, if it has one. */
function offsetTrimmer(pp: unknown): Json | undefined {
  if (pp === null || typeof pp !== 'object') return undefined;
  const p = pp as Json;
  if ((p['type'] === 'ByteLevel' || p['type'] === 'RobertaProcessing') && p['trim_offsets'] === true) {
    return { type: 'ByteLevel', add_prefix_space: p['add_prefix_space'] !== false, trim_offsets: true, use_regex: true };
  }
  if (p['type'] === 'Sequence' && Array.isArray(p['processors'])) {
    for (const inner of p['processors'] as unknown[]) {
      const t = offsetTrimmer(inner);
      if (t) return t;
    }
  }
  return undefined;
}

export interface PreparedTokenizerJson {
  /** The JSON text to load (the original text when nothing had to change). */
  text: string;
  /** The template flags applied, if the post-processor was rebuilt. */
  template?: TemplateFlags;
}

/**
 * Applies the adjustments described above. A flag whose token (bos / eos in the settings) is
 * missing or not in the vocabulary is dropped, as transformers 5 does.
 */
export function prepareTokenizerJson(info: TokenizerJsonInfo, settings: TokenizerSettings): PreparedTokenizerJson {
  const { scan } = info;
  const replace = new Map<string, unknown>();
  for (const key of ['truncation', 'padding']) {
    const span = scan.spans.get(key);
    if (span && scan.text.slice(span[0], span[1]) !== 'null') replace.set(key, null);
  }
  let template: TemplateFlags | undefined;
  const flags = templateFlags(settings);
  if (flags) {
    const lookup = (text: string | undefined): [string, number] | null => {
      if (text === undefined) return null;
      const id = info.idOf(text);
      return id === null ? null : [text, id];
    };
    const bos = lookup(settings.roles.bos);
    const eos = lookup(settings.roles.eos);
    template = { addBos: flags.addBos && bos !== null, addEos: flags.addEos && eos !== null };
    const processor = templateProcessor(template, bos, eos);
    const trimmer = offsetTrimmer(info.postProcessor);
    replace.set('post_processor', trimmer ? { type: 'Sequence', processors: [trimmer, processor] } : processor);
  }
  const prepared: PreparedTokenizerJson = { text: replace.size > 0 ? replaceValues(scan, replace) : scan.text };
  if (template) prepared.template = template;
  return prepared;
}
