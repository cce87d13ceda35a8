/**
 * What every view shares: the decoded Trace, the page header, the UI state and cached display
 * stacks (after "hide special tokens" / "merge sub-words").
 */
import type { StackName, Trace } from '../src/core/trace.js';
import type { PayloadHeader } from '../src/views/html/payload.js';
import { type TraceGeneration } from '../src/views/generation.js';
import { fmtValue } from '../src/views/svg/common.js';
import { type Theme, type ThemeName, getTheme } from '../src/views/theme.js';
import { type DisplayStack, type DisplayToken, type PairFilter, displayStack } from '../src/views/tokens.js';
import type { Tooltip } from './dom.js';
import { VIEW_LABELS, VIEW_NAMES, type ViewName as AttentionViewName } from '../src/views/layout/common.js';
import type { AnalysisViewName } from '../src/views/layout/analysis-views.js';

export const VIEWS: readonly { name: AttentionViewName; label: string }[] = VIEW_NAMES.map((name) => ({ name, label: VIEW_LABELS[name] }));
/** A view the page can show: the attention views (VIEWS), and the analysis views whose data the page carries. */
export type PageView = AttentionViewName | AnalysisViewName | HostedViewName;
/** Views only the served app has (web/app): the deep dive and the bias panel. */
export type HostedViewName = 'deep' | 'bias';
export type ViewName = PageView;

export type HeatmapMode = 'head' | 'mean' | 'max' | 'all';

/** A token the head view focuses on (hovered or pinned by a click). */
export interface Focus {
  side: 'query' | 'key';
  index: number;
}

export interface State {
  view: PageView;
  theme: ThemeName;
  hideSpecial: boolean;
  mergeSubwords: boolean;
  prettify: boolean;
  stack: StackName;
  layer: number;
  /** Head view: heads drawn. */
  heads: boolean[];
  pair: PairFilter;
  /** Head view: token pinned by a click. */
  pinned: Focus | null;
  neuronHead: number;
  /** Neuron view: query position (null: the last token). */
  neuronQuery: number | null;
  heatmapMode: HeatmapMode;
  heatmapHead: number;
  heatmapLog: boolean;
  modelLayers: boolean[];
  modelHeads: boolean[];
  modelNormalize: 'cell' | 'global';
  modelLog: boolean;
  /** Model view: the cell opened large. */
  modelOpen: { layer: number; head: number } | null;
  /**
   * Generation traces: the step shown — the prompt plus the first `step` generated tokens, the
   * newest one's row highlighted (0 = the prompt alone); null shows the whole sequence.
   */
  step: number | null;
}

export interface Ctx {
  readonly trace: Trace;
  readonly header: PayloadHeader;
  readonly state: State;
  set(patch: Partial<State>): void;
  theme(): Theme;
  /** The display stack of the current stack, transforms and step, with `layers` computed. */
  display(layers: readonly number[]): DisplayStack;
  /** Generation traces: which tokens were generated; null for other traces. */
  readonly gen: TraceGeneration | null;
  /** The step views show (undefined: the whole sequence). */
  step(): number | undefined;
  /** A token's tooltip text: its raw text, and for a generated token which one it is and its probability. */
  tokenTip(side: 'query' | 'key', t: DisplayToken): string;
  /** Token text as shown (prettified or raw). */
  label(t: DisplayToken): string;
  /** A vocabulary token (a predicted candidate) as tokens are shown (prettified or raw). */
  candidateLabel(token: string): string;
  /** An attention weight as text, at the precision the page holds. */
  fmtWeight(v: number): string;
  /** Resolves once queries and keys are decoded (the neuron view waits for it). */
  readonly qkReady: Promise<void>;
  readonly tooltip: Tooltip;
  numLayers(): number;
  numHeads(): number;
  /** A head of the trace as the page names it: its number in the model (a head preview holds one head of the model, e.g. head 7, as head 0). */
  headLabel(head: number): string;
}

/** Caches display stacks per (stack, hide, merge, step) and per layer. */
export class DisplayCache {
  private key = '';
  private layers = new Map<number, Float32Array>();
  private base: DisplayStack | null = null;

  constructor(private readonly trace: Trace) {}

  get(stack: StackName, hideSpecial: boolean, mergeSubwords: boolean, layers: readonly number[], step?: number): DisplayStack {
    const key = `${stack}|${hideSpecial}|${mergeSubwords}|${step ?? 'all'}`;
    if (key !== this.key) {
      this.key = key;
      this.layers.clear();
      this.base = null;
    }
    const missing = layers.filter((l) => !this.layers.has(l));
    if (missing.length > 0 || !this.base) {
      const ds = displayStack(this.trace, stack, { hideSpecial, mergeSubwords, layers: missing.length ? missing : [layers[0] ?? 0], step });
      for (const l of missing) this.layers.set(l, ds.layers[l]!);
      this.base = ds;
    }
    const all = this.trace.attention[stack]!.layers.map((_, l) => this.layers.get(l) ?? new Float32Array(0));
    return { ...this.base, layers: all };
  }
}

/** Formats weights: 4 significant digits when the page holds them exactly, else its fixed decimals. */
export function weightFormatter(header: PayloadHeader): (v: number) => string {
  const level = header.precision.attention;
  if (level === 'f32') return (v) => fmtValue(v, 4);
  const d = level === 'fixed5' ? 5 : 4;
  const half = 0.5 * 10 ** -d;
  return (v) => (v === 0 ? '0' : v > 0 && v < half ? `<${half.toFixed(d + 1)}` : v.toFixed(d));
}
