/** `attnscope generate [model] --text "..." --max-new-tokens N [--sample ...] [--out trace.json]`. */
import { parseArgs } from 'node:util';
import { AttnscopeError } from '../core/errors.js';
import { loadModel } from '../engine/load.js';
import { writeTraceFile, writeTraceJsonTo } from '../io/trace-file.js';
import { MODEL_OPTIONS, SAMPLING_OPTIONS, parseIdList, parsePositiveInt, parseSampling, parseThreads } from './args.js';

export const GENERATE_USAGE = `attnscope generate [model] (--text "..." | --ids 1,2,3) [--max-new-tokens N]
                [--sample [--temperature T] [--top-k K] [--top-p P] [--seed S]]
                [--qk] [--out trace.json|trace.safetensors] [--revision REV] [--offline] [--threads N]

  Generates up to N tokens (default 20; greedy unless --sample) with a key/value cache and writes
  the trace of prompt + generated tokens: every generated token's attention row over all earlier
  tokens, every layer and head. Decoder-only and encoder-decoder models (for those, --text is the
  encoder input and the decoder starts from decoder_start_token_id).`;

export async function generateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      text: { type: 'string' },
      ids: { type: 'string' },
      'max-new-tokens': { type: 'string' },
      ...SAMPLING_OPTIONS,
      qk: { type: 'boolean' },
      out: { type: 'string' },
      ...MODEL_OPTIONS,
    },
  });
  if (positionals.length > 1) throw new AttnscopeError(`generate: expected at most one model, got ${positionals.join(' ')}`);
  const ids = parseIdList(values.ids, '--ids');
  if (values.text === undefined && ids === undefined) throw new AttnscopeError('generate: give --text "..." or --ids 1,2,3');
  if (values.text !== undefined && ids !== undefined) throw new AttnscopeError('generate: give either --text or --ids, not both');
  const sampling = parseSampling(values);
  const model = await loadModel(positionals[0], { revision: values.revision, offline: values.offline, threads: parseThreads(values.threads) });
  try {
    const trace = await model.generate(values.text ?? null, {
      ids,
      maxNewTokens: parsePositiveInt(values['max-new-tokens'], '--max-new-tokens') ?? 20,
      ...sampling,
      qk: values.qk ?? false,
    });
    const generated = (trace.decoderTokens ?? trace.tokens).filter((t) => t.generated).map((t) => t.id);
    process.stderr.write(`generated: ${JSON.stringify(model.tokenizer?.decode(generated) ?? generated.join(' '))} (${generated.length} tokens, stopped by ${trace.generation?.stoppedBy})\n`);
    if (values.out) {
      await writeTraceFile(values.out, trace);
      process.stderr.write(`wrote ${values.out}\n`);
    } else {
      await writeTraceJsonTo(process.stdout, trace);
    }
  } finally {
    await model.dispose();
  }
}
