/**
 * Export buttons: the current view as SVG (the same renderer as `attnscope export`) and as PNG
 * (that SVG drawn on a canvas). Nothing leaves the page: the file is a local download.
 */
import type { Ctx } from './context.js';
import { isAnalysisViewName } from '../src/views/layout/analysis-views.js';
import { button, h } from './dom.js';

export function download(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function svgSize(svg: string): { width: number; height: number } {
  const m = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg);
  return { width: m ? Number(m[1]) : 800, height: m ? Number(m[2]) : 600 };
}

let pngScale = 2;

/** Pixels per SVG unit of the PNG exports that do not name a scale (the app's PNG scale control). */
export function setPngScale(scale: number): void {
  if (Number.isFinite(scale) && scale > 0 && scale <= 8) pngScale = scale;
}

export function getPngScale(): number {
  return pngScale;
}

/** Rasterises an SVG document to PNG (default scale: setPngScale's, 2 unless set). */
export async function svgToPng(svg: string, scale = pngScale): Promise<Blob> {
  const { width, height } = svgSize(svg);
  const url = URL.createObjectURL(new Blob([svg], { type: 'image/svg+xml' }));
  try {
    const img = new Image();
    img.decoding = 'sync';
    await new Promise<void>((resolve, reject) => {
      img.onload = () => resolve();
      img.onerror = () => reject(new Error('the browser could not draw the SVG'));
      img.src = url;
    });
    const canvas = h('canvas');
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    const c = canvas.getContext('2d')!;
    c.scale(scale, scale);
    c.drawImage(img, 0, 0, width, height);
    return await new Promise<Blob>((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error('PNG encoding failed'))), 'image/png'));
  } finally {
    URL.revokeObjectURL(url);
  }
}

/** "attnscope-<model>-<view>-<stack>-<what the view shows>[-step<s>].<ext>": the model view shows every layer, the neuron view one head. */
export function exportName(ctx: Ctx, view: string, ext: string): string {
  const { state } = ctx;
  const what = view === 'model' ? 'layers' : view === 'neuron' ? `layer${state.layer}-head${state.neuronHead}` : `layer${state.layer}`;
  const step = ctx.step();
  // The analysis views show their own data, not a stack's layer: "attnscope-<model>-<view>.<ext>".
  if (isAnalysisViewName(view)) return `attnscope-${`${ctx.trace.model.name}-${view}`.replace(/[^A-Za-z0-9._-]+/g, '_')}.${ext}`;
  const base = `${ctx.trace.model.name}-${view}-${state.stack}-${what}${step !== undefined ? `-step${step}` : ''}`.replace(/[^A-Za-z0-9._-]+/g, '_');
  return `attnscope-${base}.${ext}`;
}

/** "SVG" and "PNG" buttons for a view; `svg()` renders its current state. */
export function exportButtons(ctx: Ctx, view: string, svg: () => string | Promise<string>): HTMLElement {
  const status = h('span', { class: 'export-status muted', testid: `${view}-export-status` });
  const run = async (kind: 'svg' | 'png') => {
    try {
      status.textContent = '';
      const doc = await svg();
      const blob = kind === 'svg' ? new Blob([doc], { type: 'image/svg+xml' }) : await svgToPng(doc);
      download(blob, exportName(ctx, view, kind));
    } catch (e) {
      status.textContent = `export failed: ${(e as Error).message}`;
    }
  };
  return h(
    'span',
    { class: 'export' },
    status,
    button(`${view}-export-svg`, 'SVG', () => void run('svg'), 'Download this view as SVG'),
    button(`${view}-export-png`, 'PNG', () => void run('png'), 'Download this view as PNG'),
  );
}
