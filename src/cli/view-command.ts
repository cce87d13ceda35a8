/**
 * `attnscope view [model] --text ... [--out view.html]` and `attnscope view trace.json|trace.safetensors`:
 * writes one self-contained HTML file with the interactive head, model, neuron and heatmap views.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { openTraceFile, writeFileAtomically } from '../io/trace-file.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { DEFAULT_MAX_BYTES, renderStandaloneHtml } from '../views/html/standalone.js';
import { analysisViewData } from '../views/analysis-data.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, SAMPLING_HELP, SAMPLING_OPTIONS, parseIdList, parseLoadOptions, parseModelInput, parsePositiveInt, parseSampling } from './args.js';
import { checkModelArg, checkOut, isCheckpointFile, parseCommandArgs, reportWrote, UsageError } from './parse.js';

export const VIEW_USAGE = `attnscope view [model] (--text "..." [--pair "..."] | --ids 1,2,3 [--type-ids 0,0,1])
                [--decoder-text "..." | --decoder-ids 0,5,6] [--src-lang CODE] [--tgt-lang CODE]
                [--top-k N] [--logit-lens K] [--truncate] [--out view.html]
                [--view head|model|neuron|heatmap|words|sentences|flow|influence|clusters|types|saliency|importance|lens]
                [--theme light|dark] [--max-size MB | --exact]
                [--revision REV] [--offline] [--threads N]
  attnscope view [model] (--text "..." | --ids 1,2,3) --generate N
                [--sample [--temperature T] [--sample-top-k K] [--top-p P] [--seed S]] [--out view.html] [...]
  attnscope view trace.json|trace.safetensors [--out view.html] [...]

  Writes ONE self-contained HTML file (no network needed, opens from disk in any modern browser)
  with the head view, model view, neuron view and heatmaps.
  model        a local checkpoint directory or a Hub id; the embedded stories260k model when omitted
  trace        an existing .json or .safetensors trace file (from 'attnscope trace', 'attnscope generate'
               or PyTorch)
  --text       the text to trace;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text (bypass the tokenizer); --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models (t5, bart): the decoder input (generated
               when neither is given)
  --top-k N    add the head's N most likely tokens (at each [MASK], or the next token)
  --logit-lens K   add the Logit lens tab: every layer's top K tokens at every position
  --truncate   cut inputs longer than the model's maximum positions
  --generate   generate up to N tokens after the text (greedy unless --sample; for encoder-decoders the
               text is the encoder input) and view the generation: generated tokens are marked, and a
               step control (slider, ◀ ▶, ←/→) steps through it token by token
${SAMPLING_HELP}
${LANGUAGE_HELP}
  --out        the HTML file to write (default attnscope-view.html; written atomically)
               (a trace file's attributions and logit lens get their tabs: Saliency, Head importance, Logit lens)
  --view       the view the page opens with (default head);  --theme  light or dark (default: the system's)
  --max-size   size the file aims for in MB (default 8): values stay exact when they fit, otherwise
               attention is kept to 5 decimals and queries/keys to 4, 3 or 2 decimals
  --exact      keep every value exact whatever the size
${MODEL_HELP}`;

export const VIEW_OPTIONS = {
  ...INPUT_OPTIONS,
  'top-k': { type: 'string' },
  'logit-lens': { type: 'string' },
  out: { type: 'string' },
  view: { type: 'string' },
  theme: { type: 'string' },
  'max-size': { type: 'string' },
  exact: { type: 'boolean' },
  generate: { type: 'string' },
  ...SAMPLING_OPTIONS,
  ...MODEL_OPTIONS,
} as const;

const VIEWS = ['head', 'model', 'neuron', 'heatmap', 'words', 'sentences', 'flow', 'influence', 'clusters', 'types', 'saliency', 'importance', 'lens'] as const;

/** A positional that names an existing trace file (rather than a model). */
export function isTraceFile(arg: string): boolean {
  const lower = arg.toLowerCase();
  if (!lower.endsWith('.json') && !lower.endsWith('.safetensors')) return false;
  try {
    return statSync(arg).isFile();
  } catch {
    return false;
  }
}

export async function viewCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, VIEW_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`view: expected at most one model or trace file, got ${positionals.join(' ')}`);
  const view = values.view;
  if (view !== undefined && !(VIEWS as readonly string[]).includes(view)) throw new UsageError(`--view: expected ${VIEWS.join(', ')}, got '${view}'`);
  const theme = values.theme;
  if (theme !== undefined && theme !== 'light' && theme !== 'dark') throw new UsageError(`--theme: expected light or dark, got '${theme}'`);
  let maxBytes = DEFAULT_MAX_BYTES;
  if (values['max-size'] !== undefined) {
    const mb = Number(values['max-size']);
    if (!(mb > 0 && Number.isFinite(mb))) throw new UsageError(`--max-size: expected a size in MB, got '${values['max-size']}'`);
    maxBytes = mb * 1e6;
  }
  const out = values.out ?? 'attnscope-view.html';
  checkOut(out, ['.html', '.htm'], 'view');

  const source = positionals[0];
  const ids = parseIdList(values.ids, '--ids');
  let trace: Trace;
  let text: string | undefined;
  const generate = parsePositiveInt(values.generate, '--generate');
  const topK = parsePositiveInt(values['top-k'], '--top-k');
  const logitLens = parsePositiveInt(values['logit-lens'], '--logit-lens');
  const samplingFlags = (['sample', 'temperature', 'sample-top-k', 'top-p', 'seed'] as const).filter((f) => values[f] !== undefined);
  if (source !== undefined && isCheckpointFile(source)) checkModelArg(source);
  if (source !== undefined && isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'ids', 'type-ids', 'decoder-text', 'decoder-ids', 'src-lang', 'tgt-lang', 'top-k', 'logit-lens', 'generate', ...samplingFlags] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`view: --${flag} does not apply to a trace file (${source})`);
    }
    const opened = await openTraceFile(source);
    trace = opened.trace;
    // Values that are not probabilities still open, with one line saying where they are.
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
  } else if (generate !== undefined) {
    for (const flag of ['pair', 'type-ids', 'decoder-text', 'decoder-ids', 'truncate', 'top-k', 'logit-lens'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`view: --${flag} does not apply to --generate`);
    }
    if (source !== undefined && /\.(json|safetensors)$/i.test(source) && !existsSync(source)) {
      throw new AttnscopeError(`${source}: no such trace file`);
    }
    if (values.text === undefined && ids === undefined) throw new AttnscopeError('view --generate: give the prompt with --text "..." (or --ids 1,2,3)');
    if (values.text !== undefined && ids !== undefined) throw new AttnscopeError('view: give either --text or --ids, not both');
    if (ids !== undefined && values['src-lang'] !== undefined) throw new UsageError('view: --src-lang applies to --text (token ids already hold their language code)');
    const sampling = parseSampling(values);
    text = values.text;
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      trace = await model.generate(values.text ?? null, { ids, maxNewTokens: generate, ...sampling, qk: true, srcLang: values['src-lang'], tgtLang: values['tgt-lang'] });
      const generated = (trace.decoderTokens ?? trace.tokens).filter((t) => t.generated).map((t) => t.id);
      process.stderr.write(
        `generated: ${JSON.stringify(model.tokenizer?.decode(generated) ?? generated.join(' '))} (${generated.length} token${generated.length === 1 ? '' : 's'}, stopped by ${trace.generation?.stoppedBy})\n`,
      );
    } finally {
      await model.dispose();
    }
  } else {
    if (samplingFlags.length > 0) throw new UsageError(`view: --${samplingFlags[0]} applies to generation: add --generate N`);
    if (source !== undefined && /\.(json|safetensors)$/i.test(source) && !existsSync(source)) {
      throw new AttnscopeError(`${source}: no such trace file`);
    }
    const input = parseModelInput(values, 'view', 'view: give --text "..." (or --ids 1,2,3), or a trace file');
    text = values.text !== undefined ? (values.pair ? `${values.text} | ${values.pair}` : values.text) : undefined;
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      trace = await model.trace(input.text, { ...input.options, qk: true, topK, ...(logitLens ? { logitLens } : {}) });
    } finally {
      await model.dispose();
    }
  }

  // An analysis view opens only when the trace holds its data.
  if (view === 'saliency' || view === 'importance' || view === 'lens') {
    const data = analysisViewData(trace);
    if (!data[view]) throw new AttnscopeError(`--view ${view}: the trace has no ${view === 'lens' ? 'logit lens (add --logit-lens K)' : view === 'saliency' ? "token attributions (a trace from 'attnscope attribute --out')" : "head importance (a trace from 'attnscope attribute --out')"}`);
  }
  const bundle = await loadViewBundle();
  const result = await renderStandaloneHtml(trace, {
    bundle,
    text,
    maxBytes,
    precision: values.exact ? 'exact' : 'auto',
    view: view as (typeof VIEWS)[number] | undefined,
    theme: theme as 'light' | 'dark' | undefined,
    deflate: (data) => deflateRawSync(data, { level: 6 }),
  });
  await writeFileAtomically(out, async (stream) => {
    stream.write(result.html);
  });
  const p = result.precision;
  const precision =
    p.attention === 'f32' && (p.qk === null || p.qk === 'f32')
      ? 'all values exact'
      : `attention ${p.attention === 'f32' ? 'exact' : `to ${p.attention.slice(5)} decimals`}${p.qk ? `, queries/keys ${p.qk === 'f32' ? 'exact' : `to ${p.qk.slice(5)} decimals`}` : ''}`;
  const shape = `${trace.tokens.length}${trace.decoderTokens ? `+${trace.decoderTokens.length}` : ''} tokens, ${trace.model.numLayers} layers × ${trace.model.numHeads} heads`;
  process.stdout.write(`${resolve(out)}\n`);
  reportWrote(out, `${shape}; ${precision}`, 'open it in a browser');
}
