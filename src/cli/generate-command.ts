/** `attnscope generate [model] --text "..." --max-new-tokens N [--sample ...] [--out trace.json]`. */
import { AttnscopeError } from '../core/errors.js';
import { checkAttentionMode } from '../engine/attention-mode.js';
import { loadModel } from '../engine/load.js';
import { writeTraceFile, writeTraceJsonTo } from '../io/trace-file.js';
import { LANGUAGE_HELP, LANGUAGE_OPTIONS, MODEL_HELP, MODEL_OPTIONS, SAMPLING_HELP, SAMPLING_OPTIONS, SAMPLING_RENAMED, parseIdList, parseLoadOptions, parsePositiveInt, parseSampling } from './args.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote, UsageError } from './parse.js';
import { parseNonNegativeInt, TRACE_EXTENSIONS } from './trace-command.js';

export const GENERATE_USAGE = `attnscope generate [model] (--text "..." | --ids 1,2,3) [--max-new-tokens N]
                [--sample [--temperature T] [--sample-top-k K] [--top-p P] [--seed S]]
                [--src-lang CODE] [--tgt-lang CODE]
                [--qk] [--attention dense|on-demand|auto] [--on-demand-above N]
                [--out trace.json|trace.safetensors] [--revision REV] [--offline] [--threads N]

  Generates up to N tokens (default 20; greedy unless --sample) with a key/value cache and writes
  the trace of prompt + generated tokens: every generated token's attention row over all earlier
  tokens, every layer and head. Decoder-only and encoder-decoder models (for those, --text is the
  encoder input and the decoder starts from decoder_start_token_id).
  model        a local checkpoint directory or a Hub id; the embedded stories260k model when omitted
  --text       the prompt;  --ids  the prompt as token ids
  --max-new-tokens   most tokens to generate (default 20; fewer when the model ends the text)
${SAMPLING_HELP}
${LANGUAGE_HELP}
  --qk         include per-head queries and keys
  --attention  how attention is recorded: dense (every probability), on-demand (queries, keys and
               score terms: the prompt runs in bands of query rows, each new token keeps its queries
               and its attention row is computed exactly when read; time and memory per token do
               not grow with the tokens generated), or auto (default: on demand above
               --on-demand-above tokens, prompt and new tokens together)
  --on-demand-above N   auto: the most tokens generated densely (default: as many as keep every
               probability within 1 GiB, e.g. 1,365 tokens for 12 layers × 12 heads)
  --out        the trace file: .json or .safetensors (written atomically); JSON to stdout otherwise
${MODEL_HELP}`;

export const GENERATE_OPTIONS = {
  text: { type: 'string' },
  ids: { type: 'string' },
  'max-new-tokens': { type: 'string' },
  ...SAMPLING_OPTIONS,
  ...LANGUAGE_OPTIONS,
  qk: { type: 'boolean' },
  attention: { type: 'string' },
  'on-demand-above': { type: 'string' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

export async function generateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, GENERATE_OPTIONS, SAMPLING_RENAMED);
  if (positionals.length > 1) throw new AttnscopeError(`generate: expected at most one model, got ${positionals.join(' ')}`);
  if (values.out !== undefined) checkOut(values.out, TRACE_EXTENSIONS, 'generate');
  const ids = parseIdList(values.ids, '--ids');
  if (values.text === undefined && ids === undefined) throw new UsageError('generate: give --text "..." or --ids 1,2,3');
  if (values.text !== undefined && ids !== undefined) throw new UsageError('generate: give either --text or --ids, not both');
  if (ids !== undefined && values['src-lang'] !== undefined) throw new UsageError('generate: --src-lang applies to --text (token ids already hold their language code)');
  const sampling = parseSampling(values);
  const maxNewTokens = parsePositiveInt(values['max-new-tokens'], '--max-new-tokens') ?? 20;
  const attention = checkAttentionMode(values.attention ?? 'auto', '--attention');
  if (typeof attention === 'boolean') throw new UsageError('--attention: expected dense, on-demand or auto');
  const onDemandAbove = values['on-demand-above'] === undefined ? undefined : parseNonNegativeInt(values['on-demand-above'], '--on-demand-above');
  if (onDemandAbove !== undefined && attention !== 'auto') throw new AttnscopeError(`--on-demand-above applies to --attention auto (not ${attention})`);
  const loadOptions = parseLoadOptions(values);
  checkModelArg(positionals[0]);
  const model = await loadModel(positionals[0], loadOptions);
  try {
    const trace = await model.generate(values.text ?? null, { ids, maxNewTokens, ...sampling, qk: values.qk ?? false, attention, onDemandAbove, srcLang: values['src-lang'], tgtLang: values['tgt-lang'] });
    const generated = (trace.decoderTokens ?? trace.tokens).filter((t) => t.generated).map((t) => t.id);
    process.stderr.write(`generated: ${JSON.stringify(model.tokenizer?.decode(generated) ?? generated.join(' '))} (${generated.length} token${generated.length === 1 ? '' : 's'}, stopped by ${trace.generation?.stoppedBy})\n`);
    if (values.out) {
      await writeTraceFile(values.out, trace);
      reportWrote(values.out, `${trace.tokens.length}${trace.decoderTokens ? `+${trace.decoderTokens.length}` : ''} tokens, ${trace.model.numLayers} layers × ${trace.model.numHeads} heads${Object.keys(trace.attention).length === 0 && trace.queries ? ', attention on demand (queries, keys and score terms)' : ''}`);
    } else {
      await writeTraceJsonTo(process.stdout, trace);
    }
  } finally {
    await model.dispose();
  }
}
