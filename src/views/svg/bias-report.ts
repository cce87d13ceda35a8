/**
 * The bias report's panels as SVG: paints the layouts of src/views/layout/bias-report.ts (the ones
 * the report page paints), one standalone SVG document per panel.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { BiasReport } from '../../analysis/bias/report.js';
import { type BiasPanelName, type BiasPanelPlace, BIAS_PANEL_TITLES, biasReportPanels } from '../layout/bias-report.js';
import { getTheme, type ThemeName } from '../theme.js';
import { svgPicture } from './common.js';

export interface BiasPanelSvgOptions extends BiasPanelPlace {
  theme?: ThemeName;
}

/** One panel of the report as an SVG document; null when the report has no data for it. */
export function renderBiasPanel(report: BiasReport, name: BiasPanelName, options: BiasPanelSvgOptions = {}): string | null {
  const theme = getTheme(options.theme);
  const panel = biasReportPanels(report, theme, options).find((p) => p.name === name);
  return panel ? svgPicture(panel.picture, theme, { title: `${report.model} · ${BIAS_PANEL_TITLES[name]}`, className: `attnscope-bias-${name}`, idPrefix: `attnscope-bias-${name}` }) : null;
}

/** Every panel the report has data for, as SVG documents. */
export function renderBiasPanels(report: BiasReport, options: BiasPanelSvgOptions = {}): { name: BiasPanelName; svg: string }[] {
  const theme = getTheme(options.theme);
  return biasReportPanels(report, theme, options).map((p) => ({ name: p.name, svg: svgPicture(p.picture, theme, { title: `${report.model} · ${BIAS_PANEL_TITLES[p.name]}`, className: `attnscope-bias-${p.name}`, idPrefix: `attnscope-bias-${p.name}` }) }));
}
