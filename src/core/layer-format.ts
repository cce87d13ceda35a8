/**
 * A look inside every layer in the trace files (Trace.values, Trace.layerStates, Trace.logitLens):
 * the JSON fields and the `.safetensors` tensors and metadata. Pure functions; trace-format.ts and
 * io/trace-file.ts call them.
 *
 * JSON: `values {<stack>: [layer][kvHead][position][headDim]}`, `layerStates {<stack>: {embeddings?:
 * {token, position?, segment?: [position][width]}, residuals?: {input, attention, cross?, output:
 * [layer][position][hidden]}, mlpActivations?: [layer] ([position][inner] or null)}}`, `logitLens
 * {stack, topK, layers: [{ids, probabilities, tokens: [position][k]}]}`.
 *
 * .safetensors: `values.<stack>` [layers, kvHeads, positions, headDim]; `embedding.<stack>.<part>`
 * [positions, width]; `residual.<stack>.<input|attention|cross|output>` [layers, positions, hidden];
 * `mlpActivation.<stack>.<layer>` [positions, inner]; `logitLens.ids` (token ids as exact floats) and
 * `logitLens.probabilities` [rows, positions, k], with metadata `logitLens` = {stack, topK, tokens:
 * [row][position·k]}.
 */
import { AttnscopeError, quote } from './errors.js';
import { matrixFromJson } from './json-arrays.js';
import type { EmbeddingParts, LayerStack, LayerStateMap, LayerStates, LogitLens, Matrix, Residuals, StackMap, StackName, Trace } from './trace.js';

/** What the JSON is written through (trace-format.ts's JsonOut). */
export interface LayerJsonOut {
  text(s: string): void;
  float32s(data: Float32Array, start: number, count: number): void;
  readonly pending: number;
}

const STATE_STACKS: readonly StackName[] = ['self', 'encoder', 'decoder'];
const VALUE_STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];
const PARTS = ['token', 'position', 'segment'] as const;
const RESIDUALS = ['input', 'attention', 'cross', 'output'] as const;

/** Writes `rows` × `cols` floats from `data` at `start` as nested [row][col] arrays. */
function* rowsJson(out: LayerJsonOut, data: Float32Array, start: number, rows: number, cols: number, where: string): Generator<void> {
  out.text('[');
  for (let r = 0; r < rows; r++) {
    out.text(r > 0 ? ',[' : '[');
    try {
      out.float32s(data, start + r * cols, cols);
    } catch (err) {
      const e = err as { value?: unknown };
      if (typeof e?.value === 'number') throw new AttnscopeError(`${where}: row ${r} holds ${e.value}, which JSON cannot hold (write a .safetensors trace to keep it)`);
      throw err;
    }
    out.text(']');
    if (out.pending > 0) yield;
  }
  out.text(']');
}

function* matrixJson(out: LayerJsonOut, m: Matrix, where: string): Generator<void> {
  yield* rowsJson(out, m.data, 0, m.dims[0], m.dims[1], where);
}

function* matricesJson(out: LayerJsonOut, ms: readonly Matrix[], where: string): Generator<void> {
  out.text('[');
  for (let l = 0; l < ms.length; l++) {
    if (l > 0) out.text(',');
    yield* matrixJson(out, ms[l]!, `${where}[${l}]`);
  }
  out.text(']');
}

/** Writes the fields `,"values":…`, `,"layerStates":…` and `,"logitLens":…` that the trace has. */
export function* writeLayerFieldsJson(out: LayerJsonOut, trace: Trace): Generator<void> {
  if (trace.values) {
    out.text(',"values":{');
    let first = true;
    for (const name of VALUE_STACKS) {
      const stack = trace.values[name];
      if (!stack) continue;
      out.text(`${first ? '' : ','}${JSON.stringify(name)}:[`);
      first = false;
      const [d0, rows, cols] = stack.dims;
      for (let l = 0; l < stack.layers.length; l++) {
        out.text(l > 0 ? ',[' : '[');
        for (let h = 0; h < d0; h++) {
          if (h > 0) out.text(',');
          yield* rowsJson(out, stack.layers[l]!, h * rows * cols, rows, cols, `values.${name}[${l}][${h}]`);
        }
        out.text(']');
      }
      out.text(']');
    }
    out.text('}');
  }
  if (trace.layerStates) {
    out.text(',"layerStates":{');
    let first = true;
    for (const name of STATE_STACKS) {
      const s = trace.layerStates[name];
      if (!s) continue;
      out.text(`${first ? '' : ','}${JSON.stringify(name)}:{`);
      first = false;
      const fields: string[] = [];
      const sep = (): string => (fields.push('x') > 1 ? ',' : '');
      if (s.embeddings) {
        out.text(`${sep()}"embeddings":{`);
        let firstPart = true;
        for (const part of PARTS) {
          const m = s.embeddings[part];
          if (!m) continue;
          out.text(`${firstPart ? '' : ','}"${part}":`);
          firstPart = false;
          yield* matrixJson(out, m, `layerStates.${name}.embeddings.${part}`);
        }
        out.text('}');
      }
      if (s.residuals) {
        out.text(`${sep()}"residuals":{`);
        let firstPart = true;
        for (const part of RESIDUALS) {
          const ms = s.residuals[part];
          if (!ms) continue;
          out.text(`${firstPart ? '' : ','}"${part}":`);
          firstPart = false;
          yield* matricesJson(out, ms, `layerStates.${name}.residuals.${part}`);
        }
        out.text('}');
      }
      if (s.mlpActivations) {
        out.text(`${sep()}"mlpActivations":[`);
        for (let l = 0; l < s.mlpActivations.length; l++) {
          const m = s.mlpActivations[l];
          if (l > 0) out.text(',');
          if (m) yield* matrixJson(out, m, `layerStates.${name}.mlpActivations[${l}]`);
          else out.text('null');
        }
        out.text(']');
      }
      out.text('}');
    }
    out.text('}');
  }
  if (trace.logitLens) {
    const lens = trace.logitLens;
    const k = lens.topK;
    out.text(`,"logitLens":{"stack":${JSON.stringify(lens.stack)},"topK":${k},"layers":[`);
    lens.layers.forEach((row, r) => {
      const positions = row.ids.length / k;
      const chunk = <T>(a: ArrayLike<T>): T[][] => Array.from({ length: positions }, (_, p) => Array.from({ length: k }, (_, i) => a[p * k + i]!));
      out.text(`${r > 0 ? ',' : ''}{"ids":${JSON.stringify(chunk(row.ids))},"probabilities":`);
      // Probabilities through float32s (shortest text that reads back as the same float32).
      out.text('[');
      for (let p = 0; p < positions; p++) {
        out.text(p > 0 ? ',[' : '[');
        out.float32s(row.probabilities, p * k, k);
        out.text(']');
      }
      out.text(`],"tokens":${JSON.stringify(chunk(row.tokens))}}`);
    });
    out.text(']}');
  }
}

// --- reading ------------------------------------------------------------------------------------

/** Rows (tokens) of a stack's positions. */
function positionsOf(trace: Trace, stack: StackName): number {
  return stack === 'decoder' ? (trace.decoderTokens?.length ?? 0) : trace.tokens.length;
}

const matrixFrom = (value: unknown, rows: number, where: string): Matrix => matrixFromJson(value, where, rows);

function matricesFrom(value: unknown, layers: number, rows: number, where: string): Matrix[] {
  if (!Array.isArray(value) || value.length !== layers) throw new AttnscopeError(`${where}: expected ${layers} layers`);
  return value.map((m: unknown, l) => matrixFrom(m, rows, `${where}[${l}]`));
}

function object(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AttnscopeError(`${where}: expected an object`);
  return value as Record<string, unknown>;
}

function stateStack(name: string, where: string): StackName {
  if (!STATE_STACKS.includes(name as StackName)) throw new AttnscopeError(`${where}: unknown stack ${quote(name)} (expected ${STATE_STACKS.join(', ')})`);
  return name as StackName;
}

/** Layers of a stack, as the trace's attention counts them. */
function layersOf(trace: Trace, stack: StackName): number {
  return trace.attention[stack]?.layers.length ?? trace.model.numLayers;
}

/** Checks a logit lens against the trace (rows = layers + 1, [positions, k] each, ids integers). */
function checkLens(lens: LogitLens, trace: Trace, where: string): LogitLens {
  if (lens.stack !== 'self' && lens.stack !== 'decoder') throw new AttnscopeError(`${where}: logitLens.stack must be self or decoder, got ${quote(lens.stack)}`);
  if (!Number.isInteger(lens.topK) || lens.topK < 1) throw new AttnscopeError(`${where}: logitLens.topK must be a positive integer`);
  const n = positionsOf(trace, lens.stack) * lens.topK;
  const rows = layersOf(trace, lens.stack) + 1;
  if (lens.layers.length !== rows) throw new AttnscopeError(`${where}: logitLens has ${lens.layers.length} rows, expected ${rows} (the embeddings and each layer)`);
  lens.layers.forEach((row, r) => {
    if (row.ids.length !== n || row.probabilities.length !== n || row.tokens.length !== n) {
      throw new AttnscopeError(`${where}: logitLens row ${r} should hold ${n} entries (positions × topK)`);
    }
  });
  return lens;
}

/** Parses the JSON fields values, layerStates and logitLens into `trace` (after its tokens and attention). */
export function layerFieldsFromJson(v: Record<string, unknown>, trace: Trace, where: string): void {
  if (v.values !== undefined) {
    const values: StackMap = {};
    for (const [name, layers] of Object.entries(object(v.values, `${where}: values`))) {
      if (!VALUE_STACKS.includes(name as StackName)) throw new AttnscopeError(`${where}: values: unknown stack ${quote(name)}`);
      if (!Array.isArray(layers) || layers.length === 0) throw new AttnscopeError(`${where}: values.${name}: expected [layer][head][position][headDim] arrays`);
      const heads = (layers[0] as unknown[]).length;
      const rows = name === 'cross' || name === 'self' || name === 'encoder' ? trace.tokens.length : positionsOf(trace, name as StackName);
      const per = layers.map((layer: unknown, l) => {
        if (!Array.isArray(layer) || layer.length !== heads) throw new AttnscopeError(`${where}: values.${name}[${l}]: expected ${heads} heads`);
        return layer.map((h: unknown, i) => matrixFrom(h, rows, `${where}: values.${name}[${l}][${i}]`));
      });
      const cols = per[0]![0]?.dims[1] ?? 0;
      const stack: LayerStack = {
        dims: [heads, rows, cols],
        layers: per.map((hs) => {
          const data = new Float32Array(heads * rows * cols);
          hs.forEach((m, h) => {
            if (m.dims[1] !== cols) throw new AttnscopeError(`${where}: values.${name}: heads of different widths`);
            data.set(m.data, h * rows * cols);
          });
          return data;
        }),
      };
      values[name as StackName] = stack;
    }
    trace.values = values;
  }
  if (v.layerStates !== undefined) {
    const map: LayerStateMap = {};
    for (const [name, value] of Object.entries(object(v.layerStates, `${where}: layerStates`))) {
      const stack = stateStack(name, `${where}: layerStates`);
      const w = `${where}: layerStates.${name}`;
      const s = object(value, w);
      const rows = positionsOf(trace, stack);
      const layers = layersOf(trace, stack);
      const states: LayerStates = {};
      if (s.embeddings !== undefined) {
        const e = object(s.embeddings, `${w}.embeddings`);
        if (e.token === undefined) throw new AttnscopeError(`${w}.embeddings: token is missing`);
        const parts: EmbeddingParts = { token: matrixFrom(e.token, rows, `${w}.embeddings.token`) };
        if (e.position !== undefined) parts.position = matrixFrom(e.position, rows, `${w}.embeddings.position`);
        if (e.segment !== undefined) parts.segment = matrixFrom(e.segment, rows, `${w}.embeddings.segment`);
        states.embeddings = parts;
      }
      if (s.residuals !== undefined) {
        const r = object(s.residuals, `${w}.residuals`);
        const residuals: Residuals = {
          input: matricesFrom(r.input, layers, rows, `${w}.residuals.input`),
          attention: matricesFrom(r.attention, layers, rows, `${w}.residuals.attention`),
          output: matricesFrom(r.output, layers, rows, `${w}.residuals.output`),
        };
        if (r.cross !== undefined) residuals.cross = matricesFrom(r.cross, layers, rows, `${w}.residuals.cross`);
        states.residuals = residuals;
      }
      if (s.mlpActivations !== undefined) {
        if (!Array.isArray(s.mlpActivations) || s.mlpActivations.length !== layers) throw new AttnscopeError(`${w}.mlpActivations: expected ${layers} layers`);
        states.mlpActivations = s.mlpActivations.map((m: unknown, l) => (m === null ? null : matrixFrom(m, rows, `${w}.mlpActivations[${l}]`)));
      }
      map[stack] = states;
    }
    trace.layerStates = map;
  }
  if (v.logitLens !== undefined) {
    const l = object(v.logitLens, `${where}: logitLens`);
    const k = l.topK;
    if (typeof k !== 'number' || !Array.isArray(l.layers)) throw new AttnscopeError(`${where}: logitLens: expected {stack, topK, layers}`);
    const flatRows = (value: unknown, what: string): unknown[] => {
      if (!Array.isArray(value)) throw new AttnscopeError(`${where}: logitLens ${what}: expected [position][k] arrays`);
      return value.flatMap((r: unknown) => (Array.isArray(r) ? r : [r]));
    };
    trace.logitLens = checkLens({
      stack: l.stack as StackName,
      topK: k,
      layers: l.layers.map((row: unknown, r) => {
        const o = object(row, `${where}: logitLens.layers[${r}]`);
        const ids = flatRows(o.ids, 'ids');
        const probs = flatRows(o.probabilities, 'probabilities');
        const tokens = flatRows(o.tokens, 'tokens');
        if (!ids.every((x) => Number.isInteger(x)) || !probs.every((x) => typeof x === 'number') || !tokens.every((x) => typeof x === 'string')) {
          throw new AttnscopeError(`${where}: logitLens.layers[${r}]: ids must be integers, probabilities numbers, tokens strings`);
        }
        return { ids: Int32Array.from(ids as number[]), probabilities: Float32Array.from(probs as number[]), tokens: tokens as string[] };
      }),
    }, trace, where);
  }
}

/** A tensor of a `.safetensors` trace, as read. */
export interface LayerTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** True for the tensor names this module writes. */
export function isLayerTensor(name: string): boolean {
  return /^(values\.|embedding\.|residual\.|mlpActivation\.|logitLens\.)/.test(name);
}

/** The `.safetensors` tensors (F32) and the `logitLens` metadata of a trace's layer fields. */
export function layerTensors(trace: Trace): { tensors: LayerTensor[]; metadata: Record<string, string> } {
  const tensors: LayerTensor[] = [];
  const metadata: Record<string, string> = {};
  for (const name of VALUE_STACKS) {
    const s = trace.values?.[name];
    if (!s) continue;
    const per = s.dims[0] * s.dims[1] * s.dims[2];
    const data = new Float32Array(per * s.layers.length);
    s.layers.forEach((layer, l) => data.set(layer, l * per));
    tensors.push({ name: `values.${name}`, shape: [s.layers.length, ...s.dims], data });
  }
  for (const name of STATE_STACKS) {
    const s = trace.layerStates?.[name];
    if (!s) continue;
    for (const part of PARTS) {
      const m = s.embeddings?.[part];
      if (m) tensors.push({ name: `embedding.${name}.${part}`, shape: [...m.dims], data: m.data });
    }
    for (const part of RESIDUALS) {
      const ms = s.residuals?.[part];
      if (!ms || ms.length === 0) continue;
      const [rows, cols] = ms[0]!.dims;
      const data = new Float32Array(ms.length * rows * cols);
      ms.forEach((m, l) => data.set(m.data, l * rows * cols));
      tensors.push({ name: `residual.${name}.${part}`, shape: [ms.length, rows, cols], data });
    }
    s.mlpActivations?.forEach((m, l) => {
      if (m) tensors.push({ name: `mlpActivation.${name}.${l}`, shape: [...m.dims], data: m.data });
    });
  }
  const lens = trace.logitLens;
  if (lens) {
    const rows = lens.layers.length;
    const n = lens.layers[0]?.ids.length ?? 0;
    const positions = n / lens.topK;
    const ids = new Float32Array(rows * n);
    const probs = new Float32Array(rows * n);
    lens.layers.forEach((row, r) => {
      ids.set(row.ids, r * n);
      probs.set(row.probabilities, r * n);
    });
    tensors.push({ name: 'logitLens.ids', shape: [rows, positions, lens.topK], data: ids });
    tensors.push({ name: 'logitLens.probabilities', shape: [rows, positions, lens.topK], data: probs });
    metadata.logitLens = JSON.stringify({ stack: lens.stack, topK: lens.topK, tokens: lens.layers.map((row) => row.tokens) });
  }
  return { tensors, metadata };
}

/** Sets trace.values, layerStates and logitLens from a `.safetensors` trace's tensors and `logitLens` metadata (already parsed). */
export function layerFieldsFromTensors(tensors: readonly LayerTensor[], lensMeta: unknown, trace: Trace, where: string): void {
  const shapeError = (t: LayerTensor, expected: string): never => {
    throw new AttnscopeError(`${where}: tensor ${quote(t.name)} should be ${expected}, got [${t.shape.join(', ')}]`);
  };
  const lensParts: Partial<Record<'ids' | 'probabilities', LayerTensor>> = {};
  for (const t of tensors) {
    const [kind, a, b] = t.name.split('.') as [string, string, string | undefined];
    if (kind === 'values') {
      if (!VALUE_STACKS.includes(a as StackName) || t.shape.length !== 4) shapeError(t, '[layers, kvHeads, positions, headDim] of a stack');
      const [layers, heads, rows, cols] = t.shape as [number, number, number, number];
      const per = heads * rows * cols;
      (trace.values ??= {})[a as StackName] = { dims: [heads, rows, cols], layers: Array.from({ length: layers }, (_, l) => t.data.subarray(l * per, (l + 1) * per)) };
      continue;
    }
    if (kind === 'logitLens' && (a === 'ids' || a === 'probabilities')) {
      lensParts[a] = t;
      continue;
    }
    const stack = stateStack(a, `${where}: tensor ${quote(t.name)}`);
    const rows = positionsOf(trace, stack);
    const states = ((trace.layerStates ??= {})[stack] ??= {});
    if (kind === 'embedding' && (b === 'token' || b === 'position' || b === 'segment')) {
      if (t.shape.length !== 2 || t.shape[0] !== rows) shapeError(t, `[${rows} positions, width]`);
      const m: Matrix = { dims: [t.shape[0]!, t.shape[1]!], data: t.data };
      if (b === 'token') states.embeddings = { ...states.embeddings, token: m };
      else states.embeddings = { ...(states.embeddings as EmbeddingParts), [b]: m };
    } else if (kind === 'residual' && (RESIDUALS as readonly string[]).includes(b ?? '')) {
      if (t.shape.length !== 3 || t.shape[1] !== rows) shapeError(t, `[layers, ${rows} positions, hidden]`);
      const [layers, , cols] = t.shape as [number, number, number];
      const ms = Array.from({ length: layers }, (_, l): Matrix => ({ dims: [rows, cols], data: t.data.subarray(l * rows * cols, (l + 1) * rows * cols) }));
      states.residuals = { ...(states.residuals ?? { input: [], attention: [], output: [] }), [b!]: ms } as Residuals;
    } else if (kind === 'mlpActivation' && b !== undefined && /^\d+$/.test(b)) {
      if (t.shape.length !== 2 || t.shape[0] !== rows) shapeError(t, `[${rows} positions, inner]`);
      const layers = layersOf(trace, stack);
      const l = Number(b);
      if (l >= layers) throw new AttnscopeError(`${where}: tensor ${quote(t.name)}: layer ${l} is beyond the ${layers} layers`);
      const list = (states.mlpActivations ??= new Array<Matrix | null>(layers).fill(null));
      list[l] = { dims: [t.shape[0]!, t.shape[1]!], data: t.data };
    } else {
      throw new AttnscopeError(`${where}: unexpected tensor ${quote(t.name)} (expected values.<stack>, embedding.<stack>.<token|position|segment>, residual.<stack>.<input|attention|cross|output>, mlpActivation.<stack>.<layer> or logitLens.<ids|probabilities>)`);
    }
  }
  for (const [name, s] of Object.entries(trace.layerStates ?? {})) {
    if (s?.embeddings && !s.embeddings.token) throw new AttnscopeError(`${where}: embedding.${name}.token is missing`);
    if (s?.residuals && (s.residuals.input.length === 0 || s.residuals.attention.length === 0 || s.residuals.output.length === 0)) {
      throw new AttnscopeError(`${where}: residual.${name}: input, attention and output are all needed`);
    }
  }
  if (lensParts.ids || lensParts.probabilities || lensMeta !== undefined) {
    const meta = object(lensMeta ?? null, `${where}: metadata logitLens`);
    const { ids, probabilities } = lensParts;
    if (!ids || !probabilities || ids.shape.length !== 3 || probabilities.shape.join() !== ids.shape.join()) {
      throw new AttnscopeError(`${where}: logitLens needs tensors logitLens.ids and logitLens.probabilities, both [rows, positions, topK]`);
    }
    const [rows, positions, k] = ids.shape as [number, number, number];
    const tokens = meta.tokens;
    if (!Array.isArray(tokens) || tokens.length !== rows || !tokens.every((r) => Array.isArray(r) && r.every((x) => typeof x === 'string'))) {
      throw new AttnscopeError(`${where}: metadata logitLens.tokens: expected ${rows} lists of token strings`);
    }
    const n = positions * k;
    trace.logitLens = checkLens({
      stack: meta.stack as StackName,
      topK: typeof meta.topK === 'number' ? meta.topK : k,
      layers: Array.from({ length: rows }, (_, r) => ({
        ids: Int32Array.from(ids.data.subarray(r * n, (r + 1) * n)),
        probabilities: probabilities.data.subarray(r * n, (r + 1) * n),
        tokens: tokens[r] as string[],
      })),
    }, trace, where);
  }
}
