/**
 * The bias report page (src/views/html/bias-report.ts): the report's panels painted from the
 * layouts the SVG export paints (src/views/layout/bias-report.ts) — CrowS-Pairs scores with
 * bootstrap intervals, the WinoGender occupation plot, the head map, the ablation effect, the
 * propagation through the layers — each with its SVG and PNG download; the probe examples (the
 * text with its group words marked, the counterfactual, the predictions before and after, the
 * most bias-focused heads); and the plain-language notes. Hovering a mark reads it out under its
 * panel. A light/dark switch repaints; the JSON downloads as the command wrote it. Token text
 * only ever goes in as text (textContent), never as markup.
 */
import { type BiasReport, type ReportProbe, biasReportJson } from '../../src/analysis/bias/report.js';
import type { BiasReportHeader } from '../../src/views/html/bias-report.js';
import { BIAS_PANEL_TITLES, biasReportPanels } from '../../src/views/layout/bias-report.js';
import { renderBiasPanel } from '../../src/views/svg/bias-report.js';
import { type ThemeName, getTheme } from '../../src/views/theme.js';
import { appendSvgItems, button, h, replaceChildren, s } from '../dom.js';
import { download, svgToPng } from '../export.js';

const fmt = (v: number | null, d = 3): string => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '–');
const safeName = (s: string): string => s.replace(/[^A-Za-z0-9._-]+/g, '_');

class BiasReportApp {
  private theme: ThemeName;
  private readonly panels = h('div', { class: 'bias-panels', testid: 'bias-panels' });
  private readonly status = h('span', { class: 'muted', testid: 'bias-export-status' });

  constructor(
    private readonly header: BiasReportHeader,
    private readonly mount: HTMLElement,
  ) {
    const dark = window.matchMedia?.('(prefers-color-scheme: dark)').matches;
    this.theme = header.theme ?? (dark ? 'dark' : 'light');
    this.render();
  }

  private get report(): BiasReport {
    return this.header.report;
  }

  private render(): void {
    const r = this.report;
    const theme = getTheme(this.theme);
    document.body.style.background = theme.background;
    document.body.style.color = theme.text;
    const root = h(
      'div',
      { class: 'app bias-report', testid: 'app', style: 'max-width: 1000px; margin: 0 auto; padding: 0 12px 40px' },
      h(
        'header',
        { class: 'topbar' },
        h('span', { class: 'brand' }, 'attnscope'),
        h('span', { class: 'subtitle', testid: 'bias-title' }, `bias report · ${r.model}`),
        h('span', { class: 'text muted' }, `${r.modelType}, ${r.kind === 'masked' ? 'masked LM' : 'causal LM'} · ${r.created}`),
      ),
      h(
        'div',
        { class: 'toolbar', style: 'display: flex; gap: 8px; align-items: center; margin: 8px 0' },
        button('bias-theme', this.theme === 'light' ? 'Dark' : 'Light', () => {
          this.theme = this.theme === 'light' ? 'dark' : 'light';
          this.render();
        }, 'Switch the colour theme'),
        button('bias-json', 'JSON', () => download(new Blob([biasReportJson(r)], { type: 'application/json' }), `attnscope-bias-report-${safeName(r.model)}.json`), 'Download the report’s numbers as JSON'),
        this.status,
      ),
      this.noteSection(),
      this.panels,
      this.probeSection(),
    );
    replaceChildren(this.mount, root);
    this.paintPanels();
  }

  private noteSection(): HTMLElement {
    return h(
      'section',
      { class: 'bias-notes', testid: 'bias-notes' },
      h('h2', {}, 'How to read this report'),
      h('ul', {}, ...this.report.notes.map((n) => h('li', { style: 'margin: 4px 0' }, n))),
    );
  }

  private paintPanels(): void {
    paintBiasPanels(this.panels, this.report, this.theme, (m) => (this.status.textContent = m));
  }

  private probeSection(): HTMLElement {
    return biasProbeSection(this.report, this.theme);
  }
}

/**
 * Paints the report's panels into `into` (replacing what is there): each panel's SVG from the
 * layouts the export writes, its SVG and PNG downloads and the hover read-out. The report page and
 * the app's bias panel (web/app/bias-panel.ts) both paint with it.
 */
export function paintBiasPanels(into: HTMLElement, r: BiasReport, themeName: ThemeName, status: (message: string) => void): void {
  const theme = getTheme(themeName);
  const width = Math.max(480, Math.min(960, into.clientWidth || document.documentElement.clientWidth - 40));
  into.replaceChildren();
  if (!r.crowsPairs && !r.winogender && !r.heads) into.append(h('p', { class: 'muted' }, 'This report has no panels (no benchmark or probe was run).'));
  for (const { name, picture } of biasReportPanels(r, theme, { width })) {
    const readout = h('div', { class: 'readout muted', testid: `bias-readout-${name}`, style: 'min-height: 1.4em' }, 'hover a mark for its numbers');
    const svg = s('svg', { width: Math.ceil(picture.width), height: Math.ceil(picture.height), class: 'bias-panel-svg', testid: `bias-svg-${name}`, style: `background: ${picture.background}` });
    appendSvgItems(svg, picture.items);
    svg.addEventListener('pointermove', (e) => {
      const el = (e.target as Element | null)?.closest('[data-value]');
      const tip = el?.querySelector('title')?.textContent;
      readout.textContent = tip ?? 'hover a mark for its numbers';
      readout.setAttribute('data-hovered', tip ? 'true' : 'false');
    });
    const file = `attnscope-bias-${name}-${safeName(r.model)}`;
    const svgText = () => renderBiasPanel(r, name, { theme: themeName, width })!;
    into.append(
      h(
        'section',
        { class: 'bias-panel', testid: `bias-panel-${name}`, 'data-panel': name, 'aria-label': BIAS_PANEL_TITLES[name], style: 'margin: 18px 0' },
        h(
          'div',
          { style: 'display: flex; gap: 8px; align-items: center; justify-content: flex-end' },
          h('span', { class: 'muted', style: 'flex: 1', 'aria-hidden': 'true' }, ''),
          button(`bias-svg-download-${name}`, 'SVG', () => download(new Blob([svgText()], { type: 'image/svg+xml' }), `${file}.svg`), 'Download this panel as SVG'),
          button(`bias-png-download-${name}`, 'PNG', () => {
            svgToPng(svgText())
              .then((png) => download(png, `${file}.png`))
              .catch((e: unknown) => status(`PNG export failed: ${(e as Error).message}`));
          }, 'Download this panel as PNG'),
        ),
        h('div', { class: 'scroll', style: 'overflow-x: auto' }, svg),
        readout,
      ),
    );
  }
}

/** The probe examples: text, counterfactual, group tokens marked, predictions, top heads (token text as text only). */
export function biasProbeSection(report: BiasReport, themeName: ThemeName): HTMLElement {
  const probes = report.probes;
  return h(
    'section',
    { class: 'bias-probes', testid: 'bias-probes' },
    h('h2', {}, 'Probe examples'),
    probes.length === 0 ? h('p', { class: 'muted' }, 'No probe was run.') : null,
    ...probes.map((p, i) => probeBox(p, i, themeName)),
  );
}

function probeBox(p: ReportProbe, i: number, themeName: ThemeName): HTMLElement {
  const group = new Set(p.groupTokens);
  const theme = getTheme(themeName);
  const strip = h(
    'p',
    { class: 'token-strip', testid: `bias-probe-tokens-${i}`, style: 'font-family: monospace; line-height: 1.9' },
    ...p.tokens.map((t, k) =>
      h('span', { class: group.has(k) ? 'group-token' : 'token', 'data-index': k, style: `padding: 1px 3px; margin: 0 1px; border-radius: 3px; ${group.has(k) ? `background: ${theme.highlight}; font-weight: bold` : `background: ${theme.panel}`}` }, t),
    ),
  );
  const preds = p.predictions.map((c) =>
    h(
      'table',
      { class: 'predictions', testid: `bias-probe-predictions-${i}`, style: 'border-collapse: collapse; margin: 6px 0' },
      h('tr', {}, h('th', { style: 'text-align: left; padding-right: 16px' }, `original (token ${c.position})`), h('th', { style: 'text-align: left; padding-right: 16px' }, 'counterfactual'), h('th', { style: 'text-align: left' }, `Jensen–Shannon ${fmt(c.jsDivergence, 4)} bits`)),
      ...c.original.map((o, k) => h('tr', {}, h('td', { style: 'padding-right: 16px' }, `${o.token} ${fmt(o.probability)}`), h('td', { style: 'padding-right: 16px' }, c.counterfactual[k] ? `${c.counterfactual[k]!.token} ${fmt(c.counterfactual[k]!.probability)}` : ''), h('td'))),
    ),
  );
  return h(
    'div',
    { class: 'bias-probe', testid: `bias-probe-${i}`, style: `border: 1px solid ${theme.grid}; border-radius: 6px; padding: 8px 12px; margin: 10px 0` },
    h('p', {}, h('b', {}, 'text: '), h('span', { testid: `bias-probe-text-${i}` }, p.text)),
    h('p', {}, h('b', {}, 'counterfactual: '), h('span', { testid: `bias-probe-counterfactual-${i}` }, p.counterfactual)),
    strip,
    ...preds,
    h(
      'p',
      { class: 'muted' },
      `${p.significantHeads} of ${p.heads} heads bias-focused at q < 0.05; largest ratios: `,
      p.topHeads.map((x) => `L${x.layer}H${x.head} ${fmt(x.ratio, 2)} (q ${fmt(x.q, 3)})`).join(', '),
    ),
  );
}

/** Mounts the bias report page (its header element carries the report). */
export function bootBiasReport(mount: HTMLElement, el: HTMLElement): void {
  const header = JSON.parse(el.textContent ?? '') as BiasReportHeader;
  if (header.report?.format !== 'attnscope-bias-report') throw new Error('the page’s report is not an attnscope bias report');
  new BiasReportApp(header, mount);
}
