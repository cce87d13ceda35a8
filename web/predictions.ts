/**
 * The predictions panel: what the model's head predicts (`--top-k`) at each predicted position —
 * the next token for causal LMs and decoders, the masked token for masked LMs — with each
 * candidate's probability drawn as a bar, and the token that actually follows marked ✓.
 * Token tooltips in every view carry the same candidates (Ctx.tokenTip).
 */
import type { Prediction, Trace } from '../src/core/trace.js';
import { formatCandidate, predictionSequence, predictionVerb } from '../src/views/generation.js';
import { prettifyTokens } from '../src/views/tokens.js';
import type { Ctx } from './context.js';
import { h, replaceChildren } from './dom.js';

/** "next token at 30 positions" / "the masked token at 1 position" */
export function describePredictions(predictions: readonly Prediction[]): string {
  const n = predictions.length;
  const masked = predictions.every((p) => p.kind === 'masked');
  const k = Math.max(0, ...predictions.map((p) => p.candidates.length));
  return `top ${k} ${masked ? 'for the masked token' : 'next tokens'} at ${n} position${n === 1 ? '' : 's'}`;
}

export class PredictionsPanel {
  readonly el: HTMLElement;
  private key = '';
  private readonly body = h('div', { class: 'predictions-body' });

  constructor(private readonly ctx: Ctx) {
    const predictions = ctx.trace.predictions ?? [];
    const summary = h('summary', { testid: 'predictions-summary' }, h('b', {}, 'Predictions'), ` of the model’s head · ${describePredictions(predictions)}`);
    this.el = h('details', { class: 'predictions', testid: 'predictions' }, summary, this.body);
    if (predictions.length <= 4) (this.el as HTMLDetailsElement).open = true;
    this.el.hidden = predictions.length === 0;
  }

  update(): void {
    const { ctx } = this;
    const trace: Trace = ctx.trace;
    const predictions = trace.predictions ?? [];
    if (predictions.length === 0) return;
    const key = String(ctx.state.prettify);
    if (key === this.key) return;
    this.key = key;
    const seq = trace[predictionSequence(trace)] ?? [];
    const labels = prettifyTokens(seq, trace.model.modelType).map((p) => p.label);
    const show = (i: number) => (ctx.state.prettify ? (labels[i] ?? '?') : (seq[i]?.text ?? '?'));
    const rows = [...predictions]
      .sort((a, b) => a.position - b.position)
      .map((p) => {
        const actual = p.kind === 'next' ? seq[p.position + 1] : undefined;
        const at = seq[p.position];
        // A predicted next token read after the token it follows (so that a word piece shows as ·ir, as in the views).
        const candidateLabel = (token: string) =>
          ctx.state.prettify && p.kind === 'next' && at && !at.special
            ? prettifyTokens([at, { text: token, special: false, segment: at.segment }], trace.model.modelType)[1]!.label
            : ctx.candidateLabel(token);
        const cands = p.candidates.map((c) => {
          const hit = actual !== undefined && actual.id === c.id;
          const pct = `${Math.max(0, Math.min(100, c.probability * 100)).toFixed(1)}%`;
          const el = h(
            'span',
            { class: `candidate${hit ? ' actual' : ''}`, title: `${c.token} (id ${c.id}): p = ${c.probability}${hit ? ' · the token that follows in the text' : ''}`, style: `--p: ${pct}` },
            h('span', { class: 'candidate-token' }, candidateLabel(c.token)),
            ' ',
            h('span', { class: 'candidate-p' }, formatCandidate(c.probability)),
            hit ? h('span', { class: 'candidate-mark' }, ' ✓') : null,
          );
          return el;
        });
        return h(
          'div',
          { class: 'prediction', testid: `prediction-${p.position}`, 'data-position': p.position },
          h('span', { class: 'prediction-pos muted' }, String(p.position)),
          h('span', { class: 'prediction-token', title: seq[p.position]?.text ?? '' }, show(p.position)),
          h('span', { class: 'prediction-verb muted' }, `${predictionVerb(p)}:`),
          h('span', { class: 'candidates' }, ...cands),
        );
      });
    replaceChildren(this.body, ...rows);
  }
}
