/**
 * `attnscope ablate [model] (--text … | --ids …) --heads L:H,… [--mode zero|mean]
 *  [--target-position P] [--target-token ID] [--top-k K] [--json | --csv] [--out FILE] [--trace FILE]`: what removing
 * heads does to the model's prediction (engine/ablation.ts): the target before and after, KL of the
 * next-token/[MASK] distributions, cosine of the last hidden states, the top candidates before/after.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { ABLATION_MODES, type AblationMode, parseHeadList } from '../analysis/ablation.js';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { StackName } from '../core/trace.js';
import { ablateHeads, type AblationResult } from '../engine/ablation.js';
import { loadModel } from '../engine/load.js';
import { writeFileAtomically, writeTraceFile } from '../io/trace-file.js';
import { ablationViewData } from '../views/analysis-data.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { renderStandaloneHtml } from '../views/html/standalone.js';
import type { ModelInputs } from '../models/architecture.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, parseIndex, parseLoadOptions, parseModelInput, parsePositiveInt } from './args.js';
import { csvField } from './flow-command.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote, UsageError } from './parse.js';

export const ABLATE_USAGE = `attnscope ablate [model] (--text "..." | --ids 1,2,3) --heads L:H,... [--mode zero|mean]
                [--target-position P] [--target-token ID] [--top-k K]
                [--pair "..."] [--type-ids 0,0,1] [--decoder-text "..." | --decoder-ids 0,5,6]
                [--src-lang CODE] [--tgt-lang CODE] [--truncate]
                [--json | --csv] [--out FILE | page.html] [--theme light|dark] [--trace FILE.json|FILE.safetensors]
                [--revision REV] [--offline] [--threads N]

  What removing heads does: the model runs as trained and with the heads' gates at 0 (each head's
  context times its gate before the output projection, as transformers' head_mask), on the same input.
  model        a model directory or Hub id (the embedded stories260k model when omitted)
  --text       the text the model runs on;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text; --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models: the decoder input (required)
  --truncate   cut inputs longer than the model's maximum positions
${LANGUAGE_HELP}
  --heads      the heads removed: LAYER:HEAD, comma-separated; LAYER:* every head of a layer;
               encoder-decoders: encoder/L:H, decoder/L:H, cross/L:H (default stack: the encoder's)
  --mode       zero (default): the heads' gates are 0; mean: each head's context (α·V, before the
               output projection) replaced at every position by its mean over the positions of this input
  --target-position P   where the distribution is read (default: the last position for causal LMs
               and decoders, the first [MASK] for masked LMs)
  --target-token ID     the token whose log-probability is the target (default: the top prediction;
               masked LMs: the input token)
  --top-k      candidates listed before/after (the union of both top K; default 10)
  --json / --csv   the output format (default: a table; from --out's extension when given)
  --out        the file to write (.json, .csv or .txt; written atomically); stdout otherwise. page.html:
               the standalone page of the input (every view of the model as trained) opening on the
               ablation view (distribution before/after, target change, KL, cosine);  --theme  its theme
  --trace      also write the trace of the ablated run (.json or .safetensors; written atomically): the
               attention (and in .json the logits and top-5 predictions) of the model with the heads
               removed — a removed head's own attention weights stay, its output is what is removed, so
               the layers after it differ — its model name saying which heads and how; open it with
               attnscope view, or beside a trace of the model as trained with attnscope compare
${MODEL_HELP}`;

export const ABLATE_OPTIONS = {
  ...INPUT_OPTIONS,
  heads: { type: 'string' },
  mode: { type: 'string' },
  'target-position': { type: 'string' },
  'target-token': { type: 'string' },
  'top-k': { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  trace: { type: 'string' },
  theme: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

const headName = (h: { stack: StackName; layer: number; head: number }, stacks: number): string => `${stacks > 1 ? `${h.stack}/` : ''}${h.layer}:${h.head}`;

/** The effect as one JSON object. */
export function ablationJson(model: string, r: AblationResult): Record<string, unknown> {
  return {
    model,
    mode: r.mode,
    heads: r.heads,
    target: { kind: r.target.kind, stack: r.target.stack, position: r.target.position, token_id: r.target.tokenId, before: r.target.before, after: r.target.after, change: r.target.after - r.target.before },
    kl: r.kl,
    cosine: r.cosine,
    cosineMean: r.cosineMean,
    candidates: r.candidates,
  };
}

/** The effect as CSV: one row per candidate, the measures repeated on every row. */
export function ablationCsv(r: AblationResult): string {
  const head = ['token_id', 'token', 'before', 'after', 'target_before', 'target_after', 'kl', 'cosine', 'cosine_mean'];
  const measures = [r.target.before, r.target.after, r.kl ?? '', r.cosine, r.cosineMean].map(String);
  const rows = r.candidates.length > 0
    ? r.candidates.map((c) => [String(c.id), csvField(c.token), String(c.before), String(c.after), ...measures].join(','))
    : [['', '', '', '', ...measures].join(',')];
  return `${[head.join(','), ...rows].join('\n')}\n`;
}

function ablationTable(model: string, r: AblationResult, stacks: number): string {
  const t = r.target;
  const lines = [
    `# ${model} · ${r.mode} ablation of ${r.heads.map((h) => headName(h, stacks)).join(', ')} · position ${t.position}${t.stack === 'decoder' ? ' (decoder)' : ''}`,
    `target ${t.kind === 'logit' ? 'logit' : `log p(${t.tokenId})`}: ${t.before.toFixed(4)} → ${t.after.toFixed(4)} (${t.after - t.before >= 0 ? '+' : ''}${(t.after - t.before).toFixed(4)})`,
    `KL(before ‖ after): ${r.kl === null ? '– (the head scores tokens; no distribution)' : `${r.kl.toFixed(6)} nats`}`,
    `cosine of the last hidden state: ${r.cosine.toFixed(6)} at the position, ${r.cosineMean.toFixed(6)} mean over positions`,
  ];
  if (r.candidates.length > 0) {
    lines.push('', 'token                 before    after');
    for (const c of r.candidates) lines.push(`${sanitize(c.token, 20).padEnd(20)}  ${c.before.toFixed(4).padStart(7)}  ${c.after.toFixed(4).padStart(7)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** --trace's file: .json or .safetensors in an existing directory, not --out's file. */
function checkTracePath(path: string, out: string | undefined): void {
  const ext = extname(path).toLowerCase();
  if (path.trim() === '' || (ext !== '.json' && ext !== '.safetensors')) throw new UsageError(`--trace ${path}: the ablated trace is written as .json or .safetensors${ext ? `, not ${ext}` : ''}`);
  const dir = dirname(path);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new AttnscopeError(`--trace ${path}: cannot write (no such directory: ${dir})`);
  if (out !== undefined && resolve(out) === resolve(path)) throw new UsageError(`--trace ${path}: the same file as --out`);
}

/** The removed heads as the trace's model name shows them: L:H per stack. */
function headsText(result: AblationResult): string {
  return result.heads.map((h) => `${h.stack === 'self' ? '' : `${h.stack}/`}${h.layer}:${h.head}`).join(', ');
}

export async function ablateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, ABLATE_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`ablate: expected at most one model, got ${positionals.join(' ')}`);
  if (values.heads === undefined) throw new UsageError('ablate: give --heads L:H,... (the heads to remove)');
  const mode = values.mode ?? 'zero';
  if (!ABLATION_MODES.includes(mode as AblationMode)) throw new UsageError(`--mode: expected ${ABLATION_MODES.join(' or ')}, got '${mode}'`);
  if (values.json && values.csv) throw new UsageError('ablate: give --json or --csv, not both');
  let format: 'json' | 'csv' | 'table' | 'html' = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) {
    checkOut(values.out, ['.json', '.csv', '.txt', '.html'], 'ablate');
    const out = values.out.toLowerCase();
    if (out.endsWith('.html')) {
      if (format !== 'table') throw new UsageError(`ablate: --${format} does not apply to --out ${values.out} (a page)`);
      format = 'html';
    } else if (format === 'table') format = out.endsWith('.json') ? 'json' : out.endsWith('.csv') ? 'csv' : 'table';
  }
  const tracePath = values.trace;
  if (tracePath !== undefined) checkTracePath(tracePath, values.out);
  const theme = values.theme;
  if (theme !== undefined && theme !== 'light' && theme !== 'dark') throw new UsageError(`--theme: expected light or dark, got '${theme}'`);
  if (theme !== undefined && format !== 'html') throw new UsageError('ablate: --theme applies to --out page.html only');
  const position = parseIndex(values['target-position'], '--target-position');
  const tokenId = parseIndex(values['target-token'], '--target-token');
  const topK = parsePositiveInt(values['top-k'], '--top-k');
  const source = positionals[0];
  checkModelArg(source);
  const input = parseModelInput(values, 'ablate', 'ablate: give --text "..." (or --ids 1,2,3)');
  const model = await loadModel(source, parseLoadOptions(values));
  try {
    const info = model.architectureInfo;
    if (info.kind === 'encoder-decoder' && input.options.decoderIds === undefined && input.options.decoderText === undefined) {
      throw new UsageError(`ablate: ${model.name} is an encoder-decoder; give --decoder-text "..." or --decoder-ids`);
    }
    const heads = parseHeadList(values.heads, info.stacks, info.numHeads, info.stacks.self !== undefined ? 'self' : 'encoder');
    const trace = await model.trace(input.text, { ...input.options, attention: format === 'html', hidden: true });
    // --trace: the ablated run is a trace's run (its taps, tokens and assembly) with the heads' gates set.
    const traceOptions = { ...input.options, attention: true, logits: true, topK: 5 };
    const prepared = tracePath !== undefined ? await model.prepareRun(input.text, traceOptions) : null;
    const inputs: ModelInputs = prepared ? prepared.inputs : {
      inputIds: trace.tokens.map((t) => t.id),
      ...(trace.tokens.some((t) => t.segment !== 0) ? { typeIds: trace.tokens.map((t) => t.segment) } : {}),
      ...(trace.decoderTokens ? { decoderInputIds: trace.decoderTokens.map((t) => t.id) } : {}),
    };
    const result = await ablateHeads(model, inputs, {
      heads, mode: mode as AblationMode,
      ...(position !== undefined ? { position } : {}),
      ...(tokenId !== undefined ? { tokenId } : {}),
      ...(topK !== undefined ? { topK } : {}),
      ...(prepared ? { taps: prepared.taps } : {}),
    });
    if (prepared && tracePath !== undefined) {
      const ablated = model.traceOf(prepared, result.ablatedOutputs!, traceOptions);
      ablated.model.name = `${ablated.model.name} · ${mode} ablation of ${headsText(result)}`;
      await writeTraceFile(tracePath, ablated);
      reportWrote(tracePath, `trace of the ${mode} ablation of ${heads.length} head${heads.length === 1 ? '' : 's'} (attention, logits, predictions of the ablated model)`, `open it with attnscope view ${tracePath}`);
    }
    if (format === 'html') {
      const page = await renderStandaloneHtml(trace, {
        bundle: await loadViewBundle(),
        ...(input.text !== null ? { text: input.text } : {}),
        analysis: { ablation: ablationViewData(trace, result, { tokenText: (id) => model.tokenizer?.idToToken(id) ?? null }) },
        view: 'ablation',
        ...(theme ? { theme } : {}),
        deflate: (data) => deflateRawSync(data, { level: 6 }),
      });
      await writeFileAtomically(values.out!, async (stream) => {
        stream.write(page.html);
      });
      reportWrote(values.out!, `${mode} ablation of ${heads.length} head${heads.length === 1 ? '' : 's'}, with every view of the input`, 'open it in a browser');
      return;
    }
    const stacks = Object.keys(info.stacks).length;
    const text = format === 'json' ? `${JSON.stringify(ablationJson(model.name, result))}\n` : format === 'csv' ? ablationCsv(result) : ablationTable(model.name, result, stacks);
    if (values.out !== undefined) {
      await writeFileAtomically(values.out, async (stream) => {
        stream.write(text);
      });
      reportWrote(values.out, `${mode} ablation of ${heads.length} head${heads.length === 1 ? '' : 's'}`);
    } else process.stdout.write(text);
  } finally {
    await model.dispose();
  }
}
