/**
 * `attnscope export [model|trace.json|trace.safetensors] --text "..." --view head|model|neuron|heatmap
 *  ... --format svg|png [--scale 3] --out file`: renders a view server-side as an image.
 */
import { existsSync, statSync } from 'node:fs';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { readTraceFile } from '../io/trace-file.js';
import { svgToPng } from '../views/png.js';
import { type AnyViewOptions, VIEW_NAMES, type ViewName, renderSvg } from '../views/svg/index.js';
import { THEME_NAMES, type ThemeName } from '../views/theme.js';
import { parsePairFilter } from '../views/tokens.js';
import { MODEL_OPTIONS, parseIdList, parseThreads } from './args.js';

export const EXPORT_USAGE = `attnscope export [model | trace.json | trace.safetensors] --view head|model|neuron|heatmap --out FILE
                [--text "..." [--pair "..."] [--decoder-text "..."]]
                [--layer L] [--head H | --heads 0,1,2] [--layers 0,1] [--query I] [--stack encoder|decoder|cross]
                [--aggregate mean|max|all] [--log] [--pair-filter all|A→B|B→A|A→A|B→B]
                [--step N] [--theme light|dark] [--hide-special] [--merge-subwords] [--title "..."]
                [--format svg|png] [--scale 3] [--revision REV] [--offline] [--threads N]

  source       a trace file (.json or .safetensors), or a model directory / Hub id to run on --text;
               the embedded stories260k model when omitted
  --view       head: lines between query and key tokens, one colour per head (--layer, --heads, --query, --pair-filter)
               model: every layer × head as small images (--layers, --heads)
               neuron: query/key vectors, products, scores and softmax (--layer, --head, --query; needs q/k)
               heatmap: query × key matrix of a head (--head), the --aggregate mean|max over heads,
               or all heads as small multiples (the default); --log for a log colour scale
  --query      index of a query token as displayed (after --hide-special / --merge-subwords)
  --stack      encoder-decoder traces: encoder, decoder or cross attention (default encoder)
  --step       generation traces (attnscope generate --out): the sequence as it was at generated token N
               (0 = the prompt alone), the newest token's row highlighted (head view: its lines;
               heatmap and model view: its row outlined; neuron view: it is the query)
  --format     svg or png (default: from --out's extension); --scale  PNG pixels per unit (default 2)
  --out        the image file (written atomically)`;

function parseIndex(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) throw new AttnscopeError(`${flag}: expected a non-negative integer, got '${value}'`);
  return Number(value);
}

function parseScale(value: string | undefined): number {
  if (value === undefined) return 2;
  const s = Number(value);
  if (!Number.isFinite(s) || s <= 0 || s > 16) throw new AttnscopeError(`--scale: expected a number in (0, 16], got '${value}'`);
  return s;
}

function isTraceFile(source: string | undefined): boolean {
  if (!source) return false;
  const lower = source.toLowerCase();
  if (!lower.endsWith('.json') && !lower.endsWith('.safetensors')) return false;
  if (!existsSync(source)) throw new AttnscopeError(`${source}: no such trace file`);
  return statSync(source).isFile();
}

async function writeAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new AttnscopeError(`${path}: cannot write (no such directory: ${dirname(path)})`);
    throw err;
  }
}

export async function exportCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      text: { type: 'string' },
      pair: { type: 'string' },
      'decoder-text': { type: 'string' },
      view: { type: 'string' },
      layer: { type: 'string' },
      head: { type: 'string' },
      heads: { type: 'string' },
      layers: { type: 'string' },
      query: { type: 'string' },
      stack: { type: 'string' },
      theme: { type: 'string' },
      'hide-special': { type: 'boolean' },
      'merge-subwords': { type: 'boolean' },
      aggregate: { type: 'string' },
      log: { type: 'boolean' },
      'pair-filter': { type: 'string' },
      title: { type: 'string' },
      format: { type: 'string' },
      scale: { type: 'string' },
      step: { type: 'string' },
      out: { type: 'string' },
      ...MODEL_OPTIONS,
    },
  });
  if (positionals.length > 1) throw new AttnscopeError(`export: expected at most one model or trace file, got ${positionals.join(' ')}`);
  const view = values.view;
  if (!view) throw new AttnscopeError(`export: give --view ${VIEW_NAMES.join('|')}`);
  if (!VIEW_NAMES.includes(view as ViewName)) throw new AttnscopeError(`unknown view '${view}' (expected ${VIEW_NAMES.join(', ')})`);
  if (!values.out) throw new AttnscopeError('export: give --out FILE');
  const ext = extname(values.out).slice(1).toLowerCase();
  const format = (values.format ?? (ext === 'svg' || ext === 'png' ? ext : undefined))?.toLowerCase();
  if (format === undefined) throw new AttnscopeError(`export: give --format svg|png (or an --out ending in .svg or .png)`);
  if (format !== 'svg' && format !== 'png') throw new AttnscopeError(`unknown format '${values.format}' (expected svg or png)`);
  const scale = parseScale(values.scale);
  if (values.theme !== undefined && !THEME_NAMES.includes(values.theme as ThemeName)) {
    throw new AttnscopeError(`unknown theme '${values.theme}' (expected ${THEME_NAMES.join(' or ')})`);
  }
  const stacks: StackName[] = ['self', 'encoder', 'decoder', 'cross'];
  if (values.stack !== undefined && !stacks.includes(values.stack as StackName)) {
    throw new AttnscopeError(`unknown stack '${values.stack}' (expected ${stacks.join(', ')})`);
  }
  if (values.aggregate !== undefined && !['mean', 'max', 'all'].includes(values.aggregate)) {
    throw new AttnscopeError(`unknown aggregate '${values.aggregate}' (expected mean, max or all)`);
  }
  const head = parseIndex(values.head, '--head');
  const heads = parseIdList(values.heads, '--heads');
  if (head !== undefined && heads !== undefined) throw new AttnscopeError('export: give --head or --heads, not both');

  const options: AnyViewOptions = {
    stack: values.stack as StackName | undefined,
    theme: values.theme as ThemeName | undefined,
    hideSpecial: values['hide-special'] ?? false,
    mergeSubwords: values['merge-subwords'] ?? false,
    layer: parseIndex(values.layer, '--layer'),
    query: parseIndex(values.query, '--query'),
    log: values.log ?? false,
    title: values.title,
    step: parseIndex(values.step, '--step'),
  };
  if (view === 'heatmap' || view === 'neuron') {
    if (heads !== undefined) {
      if (heads.length !== 1) throw new AttnscopeError(`the ${view} view shows one head: give --head H`);
      options.head = heads[0];
    } else options.head = head;
    if (values.aggregate !== undefined) options.aggregate = values.aggregate as AnyViewOptions['aggregate'];
  } else {
    options.heads = heads ?? (head === undefined ? undefined : [head]);
  }
  if (view === 'model') options.layers = parseIdList(values.layers, '--layers');
  if (values['pair-filter'] !== undefined) options.pair = parsePairFilter(values['pair-filter']);
  const unused = (flag: string, views: string[]) => {
    const given = values[flag as keyof typeof values] !== undefined;
    if (given && !views.includes(view)) throw new AttnscopeError(`--${flag} does not apply to the ${view} view`);
  };
  unused('aggregate', ['heatmap']);
  unused('pair-filter', ['head']);
  unused('layers', ['model']);
  unused('query', ['head', 'neuron']);
  unused('layer', ['head', 'neuron', 'heatmap']);
  unused('log', ['heatmap', 'model']);

  const source = positionals[0];
  let trace: Trace;
  if (isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'decoder-text'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`--${flag} does not apply to a trace file (it already holds its tokens)`);
    }
    trace = await readTraceFile(source!);
  } else {
    if (values.text === undefined) throw new AttnscopeError('export: give --text "..." to run the model on (or a trace file)');
    const model = await loadModel(source, { revision: values.revision, offline: values.offline, threads: parseThreads(values.threads) });
    try {
      trace = await model.trace(values.text, { pair: values.pair, decoderText: values['decoder-text'], qk: view === 'neuron' });
    } finally {
      await model.dispose();
    }
  }

  const svg = renderSvg(view, trace, options);
  if (format === 'svg') await writeAtomic(values.out, svg);
  else await writeAtomic(values.out, svgToPng(svg, { scale }));
  process.stderr.write(`wrote ${values.out} (${view} view, ${format}${format === 'png' ? ` ×${scale}` : ''})\n`);
}
