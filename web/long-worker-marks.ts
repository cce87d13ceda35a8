/**
 * The page's readouts of where a trace's first view spends its time: `attnscope:` performance marks
 * and measures (the long views' worker jobs: 4 measures each, the overview's strips and paints,
 * the preview's and first layer's arrival) that bench/layerwise.ts --app reads once the view is
 * drawn. They are cleared when the page requests a new trace (web/app/side.ts), so that they
 * describe the trace on screen, and all of them once MAX_ENTRIES were recorded (zooming and
 * panning a long trace adds a paint and jobs per step), so that they never grow without bound.
 */
const PREFIX = 'attnscope:';
/** Entries kept at most (marks and measures); past it, all are cleared and counting starts again. */
export const MAX_ENTRIES = 4096;
let recorded = 0;

function room(): void {
  if (++recorded > MAX_ENTRIES) {
    clearPageMarks();
    recorded = 1;
  }
}

/** performance.mark(`attnscope:${name}`), counted. */
export function pageMark(name: string, detail?: unknown): void {
  room();
  performance.mark(PREFIX + name, detail === undefined ? undefined : { detail });
}

/** performance.measure(`attnscope:${name}`, options), counted; a readout only (a bad range is ignored). */
export function pageMeasure(name: string, options: PerformanceMeasureOptions): void {
  room();
  try {
    performance.measure(PREFIX + name, options);
  } catch {
    // measures are readouts only
  }
}

/** Clears every `attnscope:` mark and measure. */
export function clearPageMarks(): void {
  const marks = new Set<string>();
  const measures = new Set<string>();
  for (const e of performance.getEntries()) {
    if (!e.name.startsWith(PREFIX)) continue;
    if (e.entryType === 'mark') marks.add(e.name);
    else if (e.entryType === 'measure') measures.add(e.name);
  }
  for (const name of marks) performance.clearMarks(name);
  for (const name of measures) performance.clearMeasures(name);
  recorded = 0;
}
