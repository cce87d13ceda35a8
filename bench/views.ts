/**
 * Standalone HTML views: file size and render time, side by side with BertViz's approach, for a
 * BERT-base-shaped trace (12 layers × 12 heads, head dim 64) at 128 and 512 tokens.
 *
 *   npm run build && npx tsx bench/views.ts [--tokens 128,512] [--timeout 180]
 *
 * "BertViz-style" is a minimal reimplementation of BertViz's approach, for measurement only (no
 * BertViz code): every attention value as JSON text in the page (Python's float repr, `, `
 * separators, as `json.dumps(tensor.tolist())` writes it), and a model view that draws one SVG
 * `<line>` per (layer, head, query, key). attnscope: `renderStandaloneHtml` (binary, deflated,
 * base64; canvas model view). Both pages open from disk in Chromium with the network blocked.
 * "page ready": from navigation until the page's data is parsed and decoded (in-page clock);
 * "model view drawn": until every layer × head cell is drawn (attnscope: from the click on its
 * tab); "click → cell open": a click on a cell until it is shown large with token labels.
 *
 * Exports (`--only exports` skips the browser): `attnscope export` of the head view (default: the
 * strongest 1,000 lines; and with allLines) and the heatmap (one head; every head as small
 * multiples) of layer 0 of the same traces, as SVG (renderSvg) and as PNG (resvg at scale 2), each
 * timed from the Trace in memory to the bytes; median of 3 runs, wall clock and this process's CPU
 * time (user + system; resvg runs in-process), since wall time on a shared machine varies with load.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import type { Trace } from '../src/core/trace.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { svgToPng } from '../src/views/png.js';
import { type AnyViewOptions, renderSvg } from '../src/views/svg/index.js';
import { syntheticTrace } from './synthetic-trace.js';

const CHROMIUM = process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium';
/** V8's longest string (2^29 − 24 characters): a page longer than this cannot even be built in Node. */
const MAX_STRING = 2 ** 29 - 24;

interface Row {
  approach: string;
  tokens: number;
  bytes: number;
  write: string;
  ready: string;
  modelView: string;
  click: string;
}

/** Python's repr of a float32 value widened to a double (what `tensor.tolist()` + `json.dumps` print). */
function pyFloat(x: number): string {
  if (x === 0) return '0.0';
  const s = String(x);
  return /[.e]/.test(s) ? s.replace(/e-(\d)$/, 'e-0$1') : `${s}.0`;
}

/** Length of the BertViz-style JSON of the attention, without building it (for sizes V8 cannot hold). */
function bertvizJsonLength(trace: Trace): number {
  const s = trace.attention.self!;
  const [H, T] = s.dims;
  let n = 0;
  for (const layer of s.layers) for (let i = 0; i < layer.length; i++) n += pyFloat(layer[i]!).length + 2;
  n += s.layers.length * (H * (T * 2 + 2) + 2) + 2;
  return n;
}

function bertvizPage(trace: Trace): string {
  const s = trace.attention.self!;
  const [H, T] = s.dims;
  const layers: string[] = [];
  for (const layer of s.layers) {
    const heads: string[] = [];
    for (let h = 0; h < H; h++) {
      const rows: string[] = [];
      for (let q = 0; q < T; q++) {
        const row: string[] = new Array<string>(T);
        for (let k = 0; k < T; k++) row[k] = pyFloat(layer[(h * T + q) * T + k]!);
        rows.push(`[${row.join(', ')}]`);
      }
      heads.push(`[${rows.join(', ')}]`);
    }
    layers.push(`[${heads.join(', ')}]`);
  }
  const tokens = JSON.stringify(trace.tokens.map((t) => t.text)).replace(/</g, '\\u003c');
  // The model view: a small head-view diagram per (layer, head), one <line> per edge.
  const script = `
const params = {"attention": [${layers.join(', ')}], "tokens": ${tokens}};
document.body.dataset.ready = 'true';
document.body.dataset.readyAt = performance.now().toFixed(1);
setTimeout(() => {
  const NS = 'http://www.w3.org/2000/svg';
  const att = params.attention, T = params.tokens.length, box = 80;
  const root = document.getElementById('vis');
  for (let l = 0; l < att.length; l++) for (let h = 0; h < att[l].length; h++) {
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('width', box); svg.setAttribute('height', box);
    for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {
      const line = document.createElementNS(NS, 'line');
      line.setAttribute('x1', 10); line.setAttribute('y1', q * box / T);
      line.setAttribute('x2', box - 10); line.setAttribute('y2', k * box / T);
      line.setAttribute('stroke', 'blue'); line.setAttribute('stroke-opacity', att[l][h][q][k]);
      svg.appendChild(line);
    }
    root.appendChild(svg);
  }
  requestAnimationFrame(() => setTimeout(() => { document.body.dataset.drawnAt = performance.now().toFixed(1); document.body.dataset.drawn = 'true'; }, 0));
}, 0);`;
  return `<!doctype html><html><head><meta charset="utf-8"><title>bertviz-style</title></head><body><div id="vis"></div><script>${script}</script></body></html>`;
}

function fmtBytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`;
}

function fmtMs(ms: number | null, note = 'n/a'): string {
  return ms === null ? note : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Export timings: SVG and PNG of the head view and the heatmap at each length. */
function exportTimings(lengths: number[], runs: number): void {
  const cases: { name: string; view: 'head' | 'heatmap'; options: AnyViewOptions }[] = [
    { name: 'head view (strongest 1,000 lines)', view: 'head', options: { layer: 0 } },
    { name: 'head view, allLines', view: 'head', options: { layer: 0, allLines: true } },
    { name: 'heatmap, one head', view: 'heatmap', options: { layer: 0, head: 0 } },
    { name: 'heatmap, 12 heads', view: 'heatmap', options: { layer: 0 } },
  ];
  const rows: string[][] = [];
  for (const T of lengths) {
    const trace = syntheticTrace({ tokens: T, qk: false, layers: 1 });
    for (const c of cases) {
      // Every line of a 512-token layer (3.1 M) makes a ~500 MB SVG: measured at 128 only.
      if (c.options.allLines && T > 128) {
        rows.push([c.name, String(T), 'not run (3.1 M lines, ~0.5 GB of SVG)', '', '', '']);
        continue;
      }
      const svgMs: number[] = [];
      const pngMs: number[] = [];
      const svgCpu: number[] = [];
      const pngCpu: number[] = [];
      const cpu = (since: NodeJS.CpuUsage) => {
        const u = process.cpuUsage(since);
        return (u.user + u.system) / 1000;
      };
      let svg = '';
      let png: Uint8Array = new Uint8Array(0);
      for (let r = 0; r < runs; r++) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        svg = renderSvg(c.view, trace, c.options);
        const t1 = performance.now();
        svgCpu.push(cpu(c0));
        png = c.options.allLines ? png : svgToPng(svg);
        svgMs.push(t1 - t0);
        pngMs.push(performance.now() - t0);
        pngCpu.push(cpu(c0));
        if (c.options.allLines) break;
      }
      const both = (wall: number[], cpuMs: number[]) => `${fmtMs(median(wall))} (CPU ${fmtMs(median(cpuMs))})`;
      rows.push([c.name, String(T), both(svgMs, svgCpu), fmtBytes(svg.length), c.options.allLines ? 'not run' : both(pngMs, pngCpu), c.options.allLines ? '' : fmtBytes(png.length)]);
      process.stderr.write(`${c.name} at ${T}: ${rows[rows.length - 1]!.join(' · ')}\n`);
    }
  }
  console.log('Exports: synthetic BERT-base-shaped layer (12 heads), from the Trace in memory; PNG = SVG + resvg at scale 2\n');
  const header = ['export', 'tokens', 'SVG', 'SVG size', 'SVG + PNG', 'PNG size'];
  console.log(`| ${header.join(' | ')} |`);
  console.log(`| ${header.map(() => '---').join(' | ')} |`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  console.log('');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { tokens: { type: 'string', default: '128,512' }, timeout: { type: 'string', default: '180' }, only: { type: 'string' } } });
  const lengths = values.tokens.split(',').map(Number);
  exportTimings(lengths, 3);
  if (values.only === 'exports') return;
  const timeout = Number(values.timeout) * 1000;
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bench-views-'));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
  const version = browser.version();
  const rows: Row[] = [];
  const bundle = await loadViewBundle();
  try {
    for (const T of lengths) {
      process.stderr.write(`building a ${T}-token BERT-base-shaped trace…\n`);
      const trace = syntheticTrace({ tokens: T });

      // attnscope.
      let t0 = performance.now();
      const ours = await renderStandaloneHtml(trace, { bundle, deflate: (d) => deflateRawSync(d, { level: 6 }) });
      const write = performance.now() - t0;
      const file = join(tmp, `attnscope-${T}.html`);
      writeFileSync(file, ours.html);
      {
        const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
        await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
        const page = await context.newPage();
        t0 = performance.now();
        await page.goto(pathToFileURL(file).href, { timeout });
        await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout });
        const ready = Number(await page.evaluate(() => document.body.dataset.readyAt));
        t0 = performance.now();
        await page.click('[data-testid=tab-model]');
        await page.waitForFunction(() => document.querySelector('[data-testid=model-canvas]')?.getAttribute('data-drawn') === 'true', null, { timeout });
        const drawn = performance.now() - t0;
        const g = await page.$eval('[data-testid=model-canvas]', (el) => ({ ...(el as HTMLElement).dataset }));
        t0 = performance.now();
        await page.locator('[data-testid=model-canvas]').click({ position: { x: Number(g.gridX) + 5 * (Number(g.cw) + Number(g.gap)) + 5, y: Number(g.gridY) + 5 } });
        await page.waitForSelector('[data-testid=model-detail-canvas]', { state: 'visible', timeout });
        const click = performance.now() - t0;
        await context.close();
        const p = ours.precision;
        rows.push({
          approach: `attnscope (attention ${p.attention}, q/k ${p.qk})`,
          tokens: T,
          bytes: ours.bytes,
          write: fmtMs(write),
          ready: fmtMs(ready),
          modelView: fmtMs(drawn),
          click: fmtMs(click),
        });
      }

      // BertViz-style.
      const jsonLength = bertvizJsonLength(trace);
      if (jsonLength > MAX_STRING / 2) {
        rows.push({ approach: 'BertViz-style (JSON text, SVG line per edge)', tokens: T, bytes: jsonLength, write: 'too large for one JS string', ready: 'not run', modelView: 'not run', click: 'n/a' });
        continue;
      }
      t0 = performance.now();
      const html = bertvizPage(trace);
      const bwrite = performance.now() - t0;
      const bfile = join(tmp, `bertviz-${T}.html`);
      writeFileSync(bfile, html);
      const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
      const page = await context.newPage();
      let ready: number | null = null;
      let drawn: number | null = null;
      let note = 'n/a';
      t0 = performance.now();
      try {
        await page.goto(pathToFileURL(bfile).href, { timeout });
        await page.waitForFunction(() => document.body.dataset.drawn === 'true', null, { timeout, polling: 1000 });
        const at = await page.evaluate(() => [Number(document.body.dataset.readyAt), Number(document.body.dataset.drawnAt)]);
        ready = at[0]!;
        drawn = at[1]! - at[0]!;
      } catch (e) {
        note = /crash|closed/i.test((e as Error).message) ? 'page crashed' : `> ${timeout / 1000} s (gave up)`;
      }
      await context.close().catch(() => undefined);
      rows.push({
        approach: 'BertViz-style (JSON text, SVG line per edge)',
        tokens: T,
        bytes: Buffer.byteLength(html),
        write: fmtMs(bwrite),
        ready: fmtMs(ready, note),
        modelView: fmtMs(drawn, note),
        click: 'n/a',
      });
    }
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }

  const header = ['approach', 'tokens', 'file size', 'write (Node)', 'page ready', 'model view drawn', 'click → cell open'];
  const lines = rows.map((r) => [r.approach, String(r.tokens), fmtBytes(r.bytes), r.write, r.ready, r.modelView, r.click]);
  console.log(`BERT-base shape (12 layers × 12 heads, head dim 64), Chromium ${version} headless, software rendering\n`);
  console.log(`| ${header.join(' | ')} |`);
  console.log(`| ${header.map(() => '---').join(' | ')} |`);
  for (const l of lines) console.log(`| ${l.join(' | ')} |`);
}

await main();
