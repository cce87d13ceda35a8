/**
 * The head view of a long input (thousands of tokens): a strip of token rows that scrolls (only the
 * rows in view exist in the page), queries on the left and keys on the right, and for each query in
 * view its top-k keys per head as lines (keys out of view: a line to the strip's edge, toward them).
 * Hovering or pinning a query lists its top-k keys with their exact weights, each a jump to that key.
 * The search box finds tokens by their text (or #position) and jumps to them. Top-k keys are
 * computed from the attention source a band of rows at a time and cached; attention computed on
 * demand is computed in a Web Worker (input.worker, web/long-worker.ts): lines and lists show the
 * bands that have arrived and fill in as the others do.
 */
import type { AttentionSource } from '../../src/core/attention-source.js';
import { headColors } from '../../src/views/colors.js';
import { STRIP_ROW, TOPK_CHUNK, TOPK_MAX, scrollToRow, searchTokens, stripRange, topKeys } from '../../src/views/layout/head-long.js';
import type { Theme } from '../../src/views/theme.js';
import { button, h, replaceChildren, select, sizeCanvas } from '../dom.js';
import { type LongWorker, longWorker } from '../long-worker.js';

export interface LongHeadInput {
  source: AttentionSource;
  layer: number;
  heads: number[];
  theme: Theme;
  queryLabels: string[];
  keyLabels: string[];
  querySpecial: boolean[];
  keySpecial: boolean[];
  fmtWeight(v: number): string;
  height: number;
  /** Computes top-k bands off the page's thread, or null: computed here when drawn (default: the source's worker, web/long-worker.ts). */
  worker?: LongWorker | null;
}

interface Chunk {
  index: Int32Array;
  value: Float32Array;
}

const LABEL_W = 170;
const GAP = 260;
const CACHE_CHUNKS = 512;

export class LongHeadStrip {
  readonly el = h('div', { class: 'head-long', testid: 'head-long' });
  private readonly bar = h('div', { class: 'toolbar' });
  private readonly search = h('input', { type: 'search', testid: 'head-search', placeholder: 'find a token (text or #position)', size: 28 });
  private readonly matches = h('span', { class: 'muted', testid: 'head-search-count' });
  private readonly body = h('div', { style: 'display:flex;gap:16px;align-items:flex-start' });
  private readonly wrap = h('div', { style: 'position:relative;flex:0 0 auto' });
  private readonly scroller = h('div', { testid: 'head-long-scroll', style: 'overflow-y:auto;overflow-x:hidden;position:relative' });
  private readonly spacer = h('div', { style: 'position:relative' });
  private readonly canvas = h('canvas', { testid: 'head-long-lines', style: 'position:absolute;top:0;pointer-events:none' });
  private readonly panel = h('div', { class: 'readout', testid: 'head-topk-list', style: 'flex:1 1 auto;max-height:100%;overflow:auto;font-size:12px' });
  private input: LongHeadInput | null = null;
  private chunks = new Map<string, Chunk>();
  /** Bands asked of the worker and not arrived yet (key → ticket). */
  private asked = new Map<string, { worker: LongWorker; id: number }>();
  private k = 3;
  private hits: number[] = [];
  private hit = -1;
  private hoverQ: number | null = null;
  private pinned: number | null = null;
  private scheduled = false;
  private dataKey = '';

  constructor() {
    this.search.addEventListener('input', () => this.find(0));
    this.search.addEventListener('keydown', (e) => {
      if (e.key === 'Enter') this.find(e.shiftKey ? -1 : 1);
    });
    this.scroller.addEventListener('scroll', () => this.schedule());
    this.scroller.append(this.spacer);
    this.wrap.append(this.scroller, this.canvas);
    this.body.append(this.wrap, this.panel);
    this.el.append(this.bar, this.body);
    this.spacer.addEventListener('pointerover', (e) => {
      const row = (e.target as Element).closest('[data-side=query]');
      if (!row) return;
      this.hoverQ = Number(row.getAttribute('data-index'));
      this.schedule();
    });
    this.spacer.addEventListener('pointerleave', () => {
      this.hoverQ = null;
      this.schedule();
    });
    this.spacer.addEventListener('click', (e) => {
      const row = (e.target as Element).closest('[data-side]');
      if (!row) return;
      const i = Number(row.getAttribute('data-index'));
      this.pinned = this.pinned === i ? null : i;
      this.schedule();
    });
  }

  set(input: LongHeadInput): void {
    const s = input.source;
    const key = [s.stack, s.numQueries, s.numKeys, input.layer].join('|');
    if (key !== this.dataKey || this.input?.source !== s) {
      this.dataKey = key;
      this.chunks.clear();
      for (const t of this.asked.values()) t.worker.cancel([t.id]);
      this.asked.clear();
      if (this.input?.source !== s) {
        this.pinned = null;
        this.hoverQ = null;
      }
    }
    this.input = input.worker === undefined ? { ...input, worker: longWorker(s) } : input;
    const n = s.numQueries;
    replaceChildren(
      this.bar,
      h('label', {}, 'find ', this.search),
      button('head-search-prev', '▲', () => this.find(-1), 'Previous match (shift + Enter)'),
      button('head-search-next', '▼', () => this.find(1), 'Next match (Enter)'),
      this.matches,
      select('head-topk', 'lines per token and head', [1, 3, 5, 10, TOPK_MAX].map((v) => ({ value: v, label: `top ${v}` })), this.k, (k) => {
        this.k = k;
        this.schedule();
      }),
    );
    this.spacer.style.height = `${n * STRIP_ROW}px`;
    this.spacer.style.width = `${2 * LABEL_W + GAP}px`;
    this.scroller.style.height = `${Math.max(240, input.height)}px`;
    this.scroller.style.width = `${2 * LABEL_W + GAP + 18}px`;
    this.canvas.style.left = `${LABEL_W}px`;
    this.panel.style.maxHeight = `${Math.max(240, input.height)}px`;
    this.paint();
  }

  /** Scrolls query row i to the centre of the strip and pins it. */
  jumpTo(i: number): void {
    const input = this.input;
    if (!input) return;
    this.scroller.scrollTop = scrollToRow(i, this.scroller.clientHeight || input.height, input.source.numQueries);
    this.pinned = i;
    this.paint();
  }

  private find(step: number): void {
    const input = this.input;
    if (!input) return;
    const q = this.search.value;
    if (step === 0) this.hits = searchTokens(input.queryLabels, q);
    if (this.hits.length === 0) {
      this.hit = -1;
      this.matches.textContent = q.trim() ? 'no match' : '';
      this.search.dataset.matches = '0';
      return;
    }
    this.hit = step === 0 ? 0 : (this.hit + step + this.hits.length) % this.hits.length;
    this.matches.textContent = `${this.hit + 1} of ${this.hits.length}`;
    this.search.dataset.matches = String(this.hits.length);
    this.jumpTo(this.hits[this.hit]!);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.paint();
    });
  }

  /**
   * Top-k keys of query q in head hd: computing its band of rows when missing (here), or asking the
   * worker for it (null until it arrives; the strip is painted again then).
   */
  private top(hd: number, q: number): { index: Int32Array; value: Float32Array; offset: number } | null {
    const input = this.input!;
    const c = Math.floor(q / TOPK_CHUNK);
    const key = `${input.layer}|${hd}|${c}`;
    let chunk = this.chunks.get(key);
    if (!chunk) {
      const s = input.source;
      const r0 = c * TOPK_CHUNK;
      const r1 = Math.min(s.numQueries, r0 + TOPK_CHUNK);
      const worker = input.worker ?? null;
      if (worker) {
        if (!this.asked.has(key)) {
          const t = worker.submit<{ topk: Chunk }>({ what: 'topk', layer: input.layer, head: hd, r0, r1, k: TOPK_MAX });
          this.asked.set(key, { worker, id: t.id });
          const dataKey = this.dataKey;
          t.result.then(
            (r) => {
              if (this.asked.get(key)?.id === t.id) this.asked.delete(key);
              if (!r || dataKey !== this.dataKey) return;
              this.keep(key, r.topk);
              delete this.panel.dataset.query;
              this.schedule();
            },
            () => {
              // The worker failed: compute the bands here from now on.
              this.asked.delete(key);
              if (this.input && dataKey === this.dataKey) this.input = { ...this.input, worker: null };
              this.schedule();
            },
          );
        }
        return null;
      }
      chunk = topKeys(s.block(input.layer, hd, r0, r1, 0, s.numKeys), r1 - r0, s.numKeys, TOPK_MAX);
      this.keep(key, chunk);
    }
    return { ...chunk, offset: (q - c * TOPK_CHUNK) * TOPK_MAX };
  }

  private keep(key: string, chunk: Chunk): void {
    this.chunks.set(key, chunk);
    if (this.chunks.size > CACHE_CHUNKS) this.chunks.delete(this.chunks.keys().next().value!);
  }

  private paint(): void {
    const input = this.input;
    if (!input) return;
    const s = input.source;
    const n = s.numQueries;
    const height = this.scroller.clientHeight || input.height;
    const top = this.scroller.scrollTop;
    const { first, last } = stripRange(top, height, n);
    const theme = input.theme;
    // The rows in view (and a few either side): query label, key label.
    const rows: HTMLElement[] = [];
    const focus = this.hoverQ ?? this.pinned;
    for (let i = first; i < last; i++) {
      const y = i * STRIP_ROW;
      const qStyle = `position:absolute;left:0;top:${y}px;width:${LABEL_W - 8}px;height:${STRIP_ROW}px;line-height:${STRIP_ROW}px;text-align:right;white-space:nowrap;overflow:hidden;cursor:pointer;font-size:12px;color:${input.querySpecial[i] ? theme.special : theme.text}${i === focus ? ';font-weight:bold;background:' + theme.highlight : ''}`;
      rows.push(h('div', { 'data-side': 'query', 'data-index': i, testid: `head-long-query-${i}`, style: qStyle, title: `query ${i}` }, `${input.queryLabels[i]} ${i}`));
      const kStyle = `position:absolute;left:${LABEL_W + GAP}px;top:${y}px;width:${LABEL_W - 8}px;height:${STRIP_ROW}px;line-height:${STRIP_ROW}px;white-space:nowrap;overflow:hidden;font-size:12px;color:${input.keySpecial[i] ? theme.special : theme.text}`;
      rows.push(h('div', { 'data-side': 'key', 'data-index': i, style: kStyle, title: `key ${i}` }, `${i} ${input.keyLabels[i]}`));
    }
    replaceChildren(this.spacer, ...rows);
    Object.assign(this.scroller.dataset, { first: String(first), last: String(last), rows: String(last - first), n: String(n) });
    // Lines: every query in view to its top-k keys per head (the focused query alone when there is one).
    const c = sizeCanvas(this.canvas, GAP, height);
    c.clearRect(0, 0, GAP, height);
    const colors = headColors(s.numHeads);
    const queries: number[] = [];
    if (focus !== null) queries.push(focus);
    else for (let i = Math.max(first, Math.floor(top / STRIP_ROW)); i < Math.min(last, Math.ceil((top + height) / STRIP_ROW)); i++) queries.push(i);
    let count = 0;
    c.lineWidth = focus !== null ? 2 : 1.25;
    for (const q of queries) {
      const yq = (q + 0.5) * STRIP_ROW - top;
      input.heads.forEach((hd, j) => {
        const t = this.top(hd, q);
        if (!t) return;
        const dy = (j - (input.heads.length - 1) / 2) * 1.5;
        for (let r = 0; r < this.k; r++) {
          const key = t.index[t.offset + r]!;
          if (key < 0) break;
          const w = t.value[t.offset + r]!;
          let yk = (key + 0.5) * STRIP_ROW - top;
          const off = yk < 0 || yk > height;
          if (off) yk = yk < 0 ? 2 : height - 2;
          c.strokeStyle = colors[hd]!;
          c.globalAlpha = Math.max(0.08, Math.min(1, w * (focus !== null ? 1.5 : 1)));
          c.setLineDash(off ? [4, 3] : []);
          c.beginPath();
          c.moveTo(2, yq + dy);
          c.bezierCurveTo(GAP * 0.45, yq + dy, GAP * 0.55, yk + dy, GAP - 2, yk + dy);
          c.stroke();
          count++;
        }
      });
    }
    c.globalAlpha = 1;
    c.setLineDash([]);
    this.canvas.dataset.count = String(count);
    this.canvas.dataset.pending = String(this.asked.size);
    this.canvas.dataset.compute = input.worker ? 'worker' : 'page';
    this.panelFor(focus);
  }

  /** The focused query's top-k keys per head, each a jump to its key. */
  private panelFor(q: number | null): void {
    const input = this.input!;
    if (q === null) {
      delete this.panel.dataset.query;
      replaceChildren(this.panel, h('span', { class: 'muted' }, `lines: each query in view to its top ${this.k} key${this.k > 1 ? 's' : ''} per head (dashed: the key is out of view) · hover or click a query for its strongest keys with their weights`));
      return;
    }
    if (this.panel.dataset.query === String(q) && this.panel.dataset.k === String(this.k) && this.panel.dataset.heads === input.heads.join(',')) return;
    this.panel.dataset.query = String(q);
    this.panel.dataset.k = String(this.k);
    this.panel.dataset.heads = input.heads.join(',');
    const colors = headColors(input.source.numHeads);
    let waiting = false;
    const blocks = input.heads.map((hd) => {
      const t = this.top(hd, q);
      const items: HTMLElement[] = [];
      if (!t) {
        waiting = true;
        items.push(h('span', { class: 'muted' }, 'computing…'));
      }
      for (let r = 0; t && r < this.k; r++) {
        const key = t.index[t.offset + r]!;
        if (key < 0) break;
        const w = t.value[t.offset + r]!;
        const b = h('button', { type: 'button', class: 'chip', testid: `head-topk-${hd}-${r}`, 'data-head': hd, 'data-key': key, 'data-value': String(w), title: `jump to key ${key}` }, `${key} “${input.keyLabels[key]}” ${input.fmtWeight(w)}`);
        b.addEventListener('click', () => {
          this.scroller.scrollTop = scrollToRow(key, this.scroller.clientHeight || input.height, input.source.numQueries);
          this.schedule();
        });
        items.push(b);
      }
      const sw = h('span', { style: `display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px;background:${colors[hd]}` });
      return h('div', { style: 'margin:2px 0' }, sw, h('b', {}, `head ${hd}: `), ...items);
    });
    replaceChildren(this.panel, h('div', { testid: 'head-topk-title' }, `query ${q} “${input.queryLabels[q]}” · top ${this.k} keys per head (click one to scroll to it)`), ...blocks);
    this.panel.dataset.waiting = waiting ? 'true' : 'false';
  }
}
