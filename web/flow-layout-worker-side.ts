/**
 * The flow views' drawing off the page's thread, worker side: the page's own script running as a
 * Web Worker (flow-worker.ts `runFlowWorker` hands these requests here) holds one trace's
 * attention stacks (sent once, one layer per message: the page copies one layer per task) and the
 * flow models built from them (head fusion, residual graph: src/views/layout/flow.ts `flowModel`),
 * and answers each drawing request with web/views/flow-drawing.ts `flowDrawing` — the function the
 * page runs on its own thread without workers. A click or a pruning change reuses the model; only
 * a change of stack, measure, head fusion or step builds a new one. The page side is
 * web/flow-layout-worker.ts; replies use the one job message type of web/job-worker.ts.
 */
import type { StackName, Trace } from '../src/core/trace.js';
import { type FlowModel, flowModel } from '../src/views/layout/flow.js';
import { renderFlowView, renderInfluenceTree } from '../src/views/svg/flow.js';
import { type JobPost, runJob } from './job-worker.js';
import { type FlowDrawing, type FlowDrawingRequest, drawingTransfer, flowDrawing } from './views/flow-drawing.js';

/** What the worker is doing for a drawing request. */
export type FlowLayoutStage = 'model' | 'layout';

export type FlowLayoutRequest =
  /** A trace without attention layers: its stack `stack` gets `layers` layers of `dims`, one message each. */
  | { kind: 'flow-layout'; op: 'stack'; traceId: number; trace: Trace; stack: StackName; dims: readonly [number, number, number]; layers: number }
  | { kind: 'flow-layout'; op: 'layer'; traceId: number; stack: StackName; layer: number; data: Float32Array }
  /** A drawing; `matricesUpTo`: also copies of the model's first matrices (attention flow's input). */
  | { kind: 'flow-layout'; op: 'draw'; id: number; traceId: number; stack: StackName; request: FlowDrawingRequest; matricesUpTo?: number }
  /** The view as an SVG document (the export): the layout with every edge as a line, under its heading. */
  | { kind: 'flow-layout'; op: 'svg'; id: number; traceId: number; stack: StackName; request: FlowDrawingRequest };

/** A drawing, whether its model was the one kept from an earlier request, and attention flow's input when asked for. */
export type FlowLayoutResult = FlowDrawing & { modelReused: boolean; matrices?: Float32Array[] };

export function isFlowLayoutRequest(data: unknown): data is FlowLayoutRequest {
  return typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'flow-layout';
}

/** The trace held, and its models by what they depend on (the last few). */
let held: { traceId: number; trace: Trace } | null = null;
const models = new Map<string, FlowModel>();
const MODELS_KEPT = 3;

function modelKey(stack: StackName, r: FlowDrawingRequest): string {
  const o = r.options;
  return [stack, o.theme ?? '', o.method ?? 'rollout', o.fusion ?? 'mean', o.discard ?? '', o.residual ?? '', o.step ?? 'all'].join('|');
}

function modelOf(stack: StackName, r: FlowDrawingRequest): { model: FlowModel; reused: boolean } {
  const key = modelKey(stack, r);
  let m = models.get(key);
  if (m) {
    models.delete(key);
    models.set(key, m);
    return { model: m, reused: true };
  }
  m = flowModel(held!.trace, { ...r.options, stack });
  models.set(key, m);
  while (models.size > MODELS_KEPT) models.delete(models.keys().next().value!);
  return { model: m, reused: false };
}

function heldTrace(traceId: number, stack: StackName): Trace {
  if (!held || held.traceId !== traceId) throw new Error('flow views: the worker does not hold this trace');
  if (!held.trace.attention[stack]) throw new Error(`flow views: the worker has not received the '${stack}' attention`);
  return held.trace;
}

/** Takes a request: keeps a stack's layers, or replies to a drawing through `post`. */
export function onFlowLayoutRequest(req: FlowLayoutRequest, post: JobPost<FlowLayoutStage, FlowLayoutResult | string>): void {
  if (req.op === 'stack') {
    if (!held || held.traceId !== req.traceId) {
      held = { traceId: req.traceId, trace: { ...req.trace, attention: {} } };
      models.clear();
      expected.clear();
      receiving.clear();
    }
    const layers: Float32Array[] = [];
    held.trace.attention[req.stack] = { dims: [...req.dims], layers };
    receiving.set(req.stack, layers);
    expected.set(req.stack, req.layers);
    for (const k of [...models.keys()]) if (k.startsWith(`${req.stack}|`)) models.delete(k);
    return;
  }
  if (req.op === 'layer') {
    if (held?.traceId === req.traceId) receiving.get(req.stack)?.push(req.data);
    return;
  }
  runJob<FlowLayoutStage, FlowLayoutResult | string>(
    post,
    (progress) => {
      const trace = heldTrace(req.traceId, req.stack);
      const s = trace.attention[req.stack]!;
      if (s.layers.length !== expected.get(req.stack)) throw new Error(`flow views: the worker has ${s.layers.length} of the '${req.stack}' attention's ${expected.get(req.stack)} layers`);
      if (req.op === 'svg') {
        const o = { ...req.request.options, stack: req.stack };
        const svg = req.request.view === 'tree' ? renderInfluenceTree(trace, o) : renderFlowView(trace, o, req.request.inputValues ? { inputValues: req.request.inputValues } : {});
        return { result: svg };
      }
      progress('model');
      const { model, reused } = modelOf(req.stack, req.request);
      progress('layout');
      const drawing: FlowLayoutResult = { ...flowDrawing(trace, req.request, model), modelReused: reused };
      const transfer = drawingTransfer(drawing);
      if (req.matricesUpTo !== undefined) {
        drawing.matrices = model.matrices.slice(0, req.matricesUpTo).map((m) => Float32Array.from(m));
        transfer.push(...drawing.matrices.map((m) => m.buffer));
      }
      return { result: drawing, transfer };
    },
    req.id,
  );
}

/** Layers announced per stack (a drawing waits for all of them: messages arrive in order), and the arrays they go to. */
const expected = new Map<StackName, number>();
const receiving = new Map<StackName, Float32Array[]>();
