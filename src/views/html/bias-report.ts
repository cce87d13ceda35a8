/**
 * The bias report as one self-contained HTML file: the browser client (dist/web, the bundle of the
 * trace views; web/main.ts mounts the report when the page carries `attnscope-bias-report`), the
 * report as a JSON header (src/analysis/bias/report.ts; NaN as null), and the same
 * Content-Security-Policy as the other standalone pages: only the page's own script runs (by its
 * hash), nothing is fetched. The page's title and plain-language notes are also written as static
 * HTML (escaped), so the file says what it is before the script runs.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type BiasReport, biasReportJson } from '../../analysis/bias/report.js';
import { escapeHtml } from '../tokens.js';
import { scriptJson } from './payload.js';
import { type ViewBundle, inlineSafe, pageHead, pagePolicy, sha256Base64 } from './standalone.js';

export interface BiasReportPageOptions {
  bundle: ViewBundle;
  title?: string;
  theme?: 'light' | 'dark';
}

/** The report page's header: the report, plus the page's theme when one is asked for. */
export interface BiasReportHeader {
  report: BiasReport;
  title: string;
  theme?: 'light' | 'dark';
}

/** Renders the report page (see the file comment). */
export async function renderBiasReportPage(report: BiasReport, o: BiasReportPageOptions): Promise<string> {
  const title = o.title ?? `attnscope · bias report · ${report.model}`;
  const header: BiasReportHeader = { report: JSON.parse(biasReportJson(report)) as BiasReport, title };
  if (o.theme) header.theme = o.theme;
  const js = inlineSafe(o.bundle.js, 'script');
  const css = inlineSafe(o.bundle.css, 'style');
  const hash = await sha256Base64(js);
  return [
    pageHead(pagePolicy(hash), title, css),
    '<div id="attnscope-app">',
    `<h1 class="report-static-title">${escapeHtml(title)}</h1>`,
    '<p class="loading">Loading the report…</p><noscript><p>The figures of this report need JavaScript; its numbers are in the JSON below and in the .json file written beside it.</p></noscript>',
    `<ul class="report-static-notes">${report.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join('')}</ul>`,
    '</div>\n',
    `<script type="application/json" id="attnscope-bias-report">${scriptJson(header)}</script>\n`,
    `<script>${js}</script>\n</body>\n</html>\n`,
  ].join('');
}
