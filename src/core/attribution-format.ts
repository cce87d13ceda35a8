/**
 * Trace.attributions in the trace files (docs/DESIGN.md), pure functions used by
 * core/trace-format.ts (JSON) and io/trace-file.ts (`.safetensors`):
 *
 * JSON trace field `attributions`:
 *   {target: {kind, position, tokenId, contrastTokenId?, stack?, value},
 *    scores: {<name>: {method, tokens?, reduction?, baseline?, steps?, rule?, completeness?, values: [token]}},
 *    embeddingGrad?: [position][width], attentionGrad?: {<stack>: [layer][head][query][key]},
 *    headImportance?: {<stack>: [layer][head]}}
 * `.safetensors` trace: metadata `attributions` = the same JSON without the arrays (`values`,
 * embeddingGrad, attentionGrad, headImportance), and the tensors `attribution.<name>` [tokens],
 * `embeddingGrad` [positions, width], `attentionGrad.<stack>` [layers, heads, queries, keys] and
 * `headImportance.<stack>` [layers, heads]. A score tensor without a metadata entry is read with
 * method = its name.
 */
import { AttnscopeError, quote } from './errors.js';
import { isNumberArray, matrixFromJson } from './json-arrays.js';
import type { Attributions, AttributionTarget, LayerStack, Matrix, StackMap, StackName, TokenAttribution, Trace } from './trace.js';

const STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];
/** What a score name may hold (it becomes part of a tensor name). */
const NAME = /^[A-Za-z0-9_-]+$/;

/** What the JSON text is written through (core/trace-format.ts's JsonOut). */
export interface AttributionJsonOut {
  text(s: string): void;
  float32s(data: Float32Array, start: number, count: number): void;
  readonly pending: number;
}

function floats(out: AttributionJsonOut, data: Float32Array, start: number, count: number, where: string): void {
  try {
    out.float32s(data, start, count);
  } catch (err) {
    const e = err as { value?: unknown; index?: number };
    if (typeof e.value !== 'number') throw err;
    throw new AttnscopeError(`${where}: value ${start + (e.index ?? 0)} is ${e.value}, which JSON cannot hold (write a .safetensors trace to keep it)`);
  }
}

function* rowsJson(out: AttributionJsonOut, data: Float32Array, rows: number, cols: number, where: string): Generator<void> {
  out.text('[');
  for (let r = 0; r < rows; r++) {
    out.text(r > 0 ? ',[' : '[');
    floats(out, data, r * cols, cols, where);
    out.text(']');
    if (out.pending > 0) yield;
  }
  out.text(']');
}

/** The small fields of one score entry (everything but the values). */
function scoreMeta(s: TokenAttribution): Record<string, unknown> {
  const { scores: _values, ...rest } = s;
  return rest;
}

/** The target and the score entries without their arrays: the `.safetensors` metadata field `attributions`. */
export function attributionsMetaJson(a: Attributions): string {
  const scores: Record<string, unknown> = {};
  for (const [name, s] of Object.entries(a.scores)) scores[name] = scoreMeta(s);
  return JSON.stringify({ target: a.target, scores });
}

/** Writes `,"attributions":{…}` (the JSON trace field), pausing when chunks are ready. */
export function* writeAttributionsJson(out: AttributionJsonOut, a: Attributions): Generator<void> {
  out.text(`,"attributions":{"target":${JSON.stringify(a.target)},"scores":{`);
  let first = true;
  for (const [name, s] of Object.entries(a.scores)) {
    const meta = JSON.stringify(scoreMeta(s));
    out.text(`${first ? '' : ','}${JSON.stringify(name)}:${meta.slice(0, -1)}${meta === '{}' ? '' : ','}"values":[`);
    floats(out, s.scores, 0, s.scores.length, `attributions.scores.${name}`);
    out.text(']}');
    first = false;
    if (out.pending > 0) yield;
  }
  out.text('}');
  if (a.embeddingGrad) {
    out.text(',"embeddingGrad":');
    yield* rowsJson(out, a.embeddingGrad.data, a.embeddingGrad.dims[0], a.embeddingGrad.dims[1], 'attributions.embeddingGrad');
  }
  if (a.attentionGrad) {
    out.text(',"attentionGrad":{');
    let f = true;
    for (const stack of STACKS) {
      const s = a.attentionGrad[stack];
      if (!s) continue;
      out.text(`${f ? '' : ','}"${stack}":[`);
      f = false;
      const [heads, rows, cols] = s.dims;
      for (let l = 0; l < s.layers.length; l++) {
        out.text(l > 0 ? ',[' : '[');
        for (let h = 0; h < heads; h++) {
          if (h > 0) out.text(',');
          yield* rowsJson(out, s.layers[l]!.subarray(h * rows * cols, (h + 1) * rows * cols), rows, cols, `attributions.attentionGrad.${stack} layer ${l} head ${h}`);
        }
        out.text(']');
      }
      out.text(']');
      if (out.pending > 0) yield;
    }
    out.text('}');
  }
  if (a.headImportance) {
    out.text(',"headImportance":{');
    let f = true;
    for (const stack of STACKS) {
      const m = a.headImportance[stack];
      if (!m) continue;
      out.text(`${f ? '' : ','}"${stack}":`);
      f = false;
      yield* rowsJson(out, m.data, m.dims[0], m.dims[1], `attributions.headImportance.${stack}`);
    }
    out.text('}');
  }
  out.text('}');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function targetFrom(v: unknown, where: string): AttributionTarget {
  if (!isObject(v)) throw new AttnscopeError(`${where}.target: expected an object with kind, position, tokenId and value`);
  if (typeof v.kind !== 'string') throw new AttnscopeError(`${where}.target.kind: expected a string`);
  if (!Number.isInteger(v.position) || (v.position as number) < 0) throw new AttnscopeError(`${where}.target.position: expected an integer ≥ 0`);
  if (v.tokenId !== null && !(Number.isInteger(v.tokenId) && (v.tokenId as number) >= 0)) throw new AttnscopeError(`${where}.target.tokenId: expected a token id (an integer ≥ 0) or null`);
  if (typeof v.value !== 'number') throw new AttnscopeError(`${where}.target.value: expected a number`);
  const t: AttributionTarget = { kind: v.kind, position: v.position as number, tokenId: v.tokenId as number | null, value: v.value };
  if (v.contrastTokenId !== undefined) {
    if (!(Number.isInteger(v.contrastTokenId) && (v.contrastTokenId as number) >= 0)) throw new AttnscopeError(`${where}.target.contrastTokenId: expected a token id (an integer ≥ 0)`);
    t.contrastTokenId = v.contrastTokenId as number;
  }
  if (v.stack !== undefined) {
    if (!STACKS.includes(v.stack as StackName)) throw new AttnscopeError(`${where}.target.stack: expected ${STACKS.join(', ')}, got ${quote(v.stack)}`);
    t.stack = v.stack as StackName;
  }
  return t;
}

/** A score entry's small fields (checked), with its values. */
function scoreFrom(name: string, meta: unknown, values: Float32Array, where: string): TokenAttribution {
  const at = `${where}.scores.${name}`;
  if (!NAME.test(name)) throw new AttnscopeError(`${at}: a score name holds only letters, digits, '_' and '-'`);
  const m = meta === undefined ? {} : meta;
  if (!isObject(m)) throw new AttnscopeError(`${at}: expected an object`);
  const s: TokenAttribution = { method: typeof m.method === 'string' ? m.method : name, scores: values };
  if (m.method !== undefined && typeof m.method !== 'string') throw new AttnscopeError(`${at}.method: expected a string`);
  if (m.tokens !== undefined) {
    if (m.tokens !== 'tokens' && m.tokens !== 'decoderTokens') throw new AttnscopeError(`${at}.tokens: expected 'tokens' or 'decoderTokens', got ${quote(m.tokens)}`);
    s.tokens = m.tokens;
  }
  if (m.reduction !== undefined) {
    if (m.reduction !== 'sum' && m.reduction !== 'l2') throw new AttnscopeError(`${at}.reduction: expected 'sum' or 'l2', got ${quote(m.reduction)}`);
    s.reduction = m.reduction;
  }
  for (const key of ['baseline', 'rule'] as const) {
    if (m[key] === undefined) continue;
    if (typeof m[key] !== 'string') throw new AttnscopeError(`${at}.${key}: expected a string`);
    s[key] = m[key];
  }
  if (m.steps !== undefined) {
    if (!(Number.isInteger(m.steps) && (m.steps as number) >= 1)) throw new AttnscopeError(`${at}.steps: expected an integer ≥ 1`);
    s.steps = m.steps as number;
  }
  if (m.completeness !== undefined) {
    const c = m.completeness;
    if (!isObject(c) || typeof c.sumAttributions !== 'number' || typeof c.targetInput !== 'number' || typeof c.targetBaseline !== 'number') {
      throw new AttnscopeError(`${at}.completeness: expected {sumAttributions, targetInput, targetBaseline} numbers`);
    }
    s.completeness = { sumAttributions: c.sumAttributions, targetInput: c.targetInput, targetBaseline: c.targetBaseline };
  }
  return s;
}

const matrixFrom = (v: unknown, where: string): Matrix => matrixFromJson(v, where);

function stack4From(v: unknown, where: string): LayerStack {
  if (!Array.isArray(v) || v.length === 0) throw new AttnscopeError(`${where}: expected [layer][head][query][key] arrays`);
  const layers = v.map((layer: unknown, l) => {
    if (!Array.isArray(layer)) throw new AttnscopeError(`${where}: layer ${l} is not an array of heads`);
    return layer.map((head: unknown, h) => matrixFrom(head, `${where}: layer ${l} head ${h}`));
  });
  const heads = layers[0]!.length;
  const [rows, cols] = layers[0]![0]?.dims ?? [0, 0];
  return {
    dims: [heads, rows, cols],
    layers: layers.map((hs, l) => {
      if (hs.length !== heads) throw new AttnscopeError(`${where}: layer ${l} has ${hs.length} heads, layer 0 has ${heads}`);
      const out = new Float32Array(heads * rows * cols);
      hs.forEach((m, h) => {
        if (m.dims[0] !== rows || m.dims[1] !== cols) throw new AttnscopeError(`${where}: layer ${l} head ${h} is ${m.dims.join(' × ')}, expected ${rows} × ${cols}`);
        out.set(m.data, h * rows * cols);
      });
      return out;
    }),
  };
}

/** Checks parsed attributions against the trace's tokens and attention. */
export function checkAttributions(a: Attributions, trace: Trace, where: string): Attributions {
  const t = a.target;
  const stack = t.stack ?? (trace.attention.self ? 'self' : trace.attention.decoder ? 'decoder' : 'encoder');
  const positions = stack === 'decoder' || stack === 'cross' ? trace.decoderTokens?.length ?? 0 : trace.tokens.length;
  if (t.position >= positions) throw new AttnscopeError(`${where}.target.position: ${t.position} is out of range (0–${positions - 1}, the ${stack === 'decoder' ? 'decoder ' : ''}tokens)`);
  for (const [name, s] of Object.entries(a.scores)) {
    const side = s.tokens ?? 'tokens';
    const n = side === 'decoderTokens' ? trace.decoderTokens?.length : trace.tokens.length;
    if (n === undefined) throw new AttnscopeError(`${where}.scores.${name}: scores of decoderTokens but the trace has none`);
    if (s.scores.length !== n) throw new AttnscopeError(`${where}.scores.${name}: ${s.scores.length} values but there are ${n} ${side === 'decoderTokens' ? 'decoder tokens' : 'tokens'}`);
  }
  if (a.embeddingGrad && a.embeddingGrad.dims[0] !== trace.tokens.length) {
    throw new AttnscopeError(`${where}.embeddingGrad: ${a.embeddingGrad.dims[0]} rows but there are ${trace.tokens.length} tokens`);
  }
  for (const [name, g] of Object.entries(a.attentionGrad ?? {}) as [StackName, LayerStack][]) {
    const att = trace.attention[name];
    if (!att) throw new AttnscopeError(`${where}.attentionGrad.${name}: the trace has no '${name}' attention`);
    const d = g.dims;
    if (g.layers.length !== att.layers.length || d[0] !== att.dims[0] || d[1] !== att.dims[1] || d[2] !== att.dims[2]) {
      throw new AttnscopeError(`${where}.attentionGrad.${name}: [${g.layers.length}, ${d.join(', ')}] does not fit the attention [${att.layers.length}, ${att.dims.join(', ')}]`);
    }
  }
  for (const [name, m] of Object.entries(a.headImportance ?? {}) as [StackName, Matrix][]) {
    const att = trace.attention[name];
    if (!att) throw new AttnscopeError(`${where}.headImportance.${name}: the trace has no '${name}' attention`);
    if (m.dims[0] !== att.layers.length || m.dims[1] !== att.dims[0]) {
      throw new AttnscopeError(`${where}.headImportance.${name}: ${m.dims.join(' × ')} but the attention has ${att.layers.length} layers × ${att.dims[0]} heads`);
    }
  }
  return a;
}

function stackNameOf(name: string, where: string): StackName {
  if (!STACKS.includes(name as StackName)) throw new AttnscopeError(`${where}: unknown stack ${quote(name)} (expected ${STACKS.join(', ')})`);
  return name as StackName;
}

/** Parses the JSON trace field `attributions` and checks it against the trace. */
export function attributionsFromJson(value: unknown, trace: Trace, where: string): Attributions {
  const at = `${where}: attributions`;
  if (!isObject(value)) throw new AttnscopeError(`${at}: expected an object with target and scores`);
  const target = targetFrom(value.target, at);
  if (!isObject(value.scores)) throw new AttnscopeError(`${at}.scores: expected an object keyed by score name`);
  const scores: Record<string, TokenAttribution> = {};
  for (const [name, entry] of Object.entries(value.scores)) {
    if (!isObject(entry) || !isNumberArray(entry.values)) throw new AttnscopeError(`${at}.scores.${name}: expected an object with values (one number per token)`);
    const { values, ...meta } = entry;
    scores[name] = scoreFrom(name, meta, Float32Array.from(values as number[]), at);
  }
  const a: Attributions = { target, scores };
  if (value.embeddingGrad !== undefined) a.embeddingGrad = matrixFrom(value.embeddingGrad, `${at}.embeddingGrad`);
  if (value.attentionGrad !== undefined) {
    if (!isObject(value.attentionGrad)) throw new AttnscopeError(`${at}.attentionGrad: expected an object keyed by stack`);
    const map: StackMap = {};
    for (const [name, v] of Object.entries(value.attentionGrad)) map[stackNameOf(name, `${at}.attentionGrad`)] = stack4From(v, `${at}.attentionGrad.${name}`);
    a.attentionGrad = map;
  }
  if (value.headImportance !== undefined) {
    if (!isObject(value.headImportance)) throw new AttnscopeError(`${at}.headImportance: expected an object keyed by stack`);
    const map: Partial<Record<StackName, Matrix>> = {};
    for (const [name, v] of Object.entries(value.headImportance)) map[stackNameOf(name, `${at}.headImportance`)] = matrixFrom(v, `${at}.headImportance.${name}`);
    a.headImportance = map;
  }
  return checkAttributions(a, trace, at);
}

/** A tensor of a `.safetensors` trace, as float32. */
export interface AttributionTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Whether a `.safetensors` tensor name belongs to Trace.attributions. */
export function isAttributionTensor(name: string): boolean {
  return name === 'embeddingGrad' || /^(attribution|attentionGrad|headImportance)\./.test(name);
}

/** The tensors of Trace.attributions in a `.safetensors` trace (see the file comment). */
export function attributionTensors(a: Attributions): AttributionTensor[] {
  const out: AttributionTensor[] = [];
  for (const [name, s] of Object.entries(a.scores)) {
    if (!NAME.test(name)) throw new AttnscopeError(`attributions.scores: the name ${quote(name)} may hold only letters, digits, '_' and '-'`);
    out.push({ name: `attribution.${name}`, shape: [s.scores.length], data: s.scores });
  }
  if (a.embeddingGrad) out.push({ name: 'embeddingGrad', shape: [...a.embeddingGrad.dims], data: a.embeddingGrad.data });
  for (const stack of STACKS) {
    const g = a.attentionGrad?.[stack];
    if (g) {
      const per = g.dims[0] * g.dims[1] * g.dims[2];
      const data = new Float32Array(per * g.layers.length);
      g.layers.forEach((layer, l) => data.set(layer, l * per));
      out.push({ name: `attentionGrad.${stack}`, shape: [g.layers.length, ...g.dims], data });
    }
    const m = a.headImportance?.[stack];
    if (m) out.push({ name: `headImportance.${stack}`, shape: [...m.dims], data: m.data });
  }
  return out;
}

/** Trace.attributions from the metadata field `attributions` (parsed JSON) and the tensors, checked against the trace. */
export function attributionsFromTensors(meta: unknown, tensors: readonly AttributionTensor[], trace: Trace, where: string): Attributions {
  const at = `${where}: attributions`;
  if (!isObject(meta)) throw new AttnscopeError(`${where}: attribution tensors need the metadata field attributions = {"target": {kind, position, tokenId, value}, "scores": {…}}`);
  const target = targetFrom(meta.target, at);
  const metaScores = meta.scores === undefined ? {} : meta.scores;
  if (!isObject(metaScores)) throw new AttnscopeError(`${at}.scores: expected an object keyed by score name`);
  const a: Attributions = { target, scores: {} };
  for (const t of tensors) {
    const [kind, rest] = [t.name.split('.')[0]!, t.name.slice(t.name.indexOf('.') + 1)];
    if (kind === 'attribution') {
      if (t.shape.length !== 1) throw new AttnscopeError(`${where}: tensor ${t.name} should be [tokens], got [${t.shape.join(', ')}]`);
      a.scores[rest] = scoreFrom(rest, metaScores[rest], t.data, at);
    } else if (kind === 'embeddingGrad') {
      if (t.shape.length !== 2) throw new AttnscopeError(`${where}: tensor embeddingGrad should be [positions, width], got [${t.shape.join(', ')}]`);
      a.embeddingGrad = { dims: [t.shape[0]!, t.shape[1]!], data: t.data };
    } else if (kind === 'attentionGrad') {
      if (t.shape.length !== 4) throw new AttnscopeError(`${where}: tensor ${t.name} should be [layers, heads, queries, keys], got [${t.shape.join(', ')}]`);
      const [layers, heads, rows, cols] = t.shape as [number, number, number, number];
      const per = heads * rows * cols;
      (a.attentionGrad ??= {})[stackNameOf(rest, `${where}: tensor ${t.name}`)] = {
        dims: [heads, rows, cols],
        layers: Array.from({ length: layers }, (_, l) => t.data.subarray(l * per, (l + 1) * per)),
      };
    } else {
      if (t.shape.length !== 2) throw new AttnscopeError(`${where}: tensor ${t.name} should be [layers, heads], got [${t.shape.join(', ')}]`);
      (a.headImportance ??= {})[stackNameOf(rest, `${where}: tensor ${t.name}`)] = { dims: [t.shape[0]!, t.shape[1]!], data: t.data };
    }
  }
  for (const name of Object.keys(metaScores)) {
    if (!a.scores[name]) throw new AttnscopeError(`${at}.scores.${name}: no tensor attribution.${name}`);
  }
  return checkAttributions(a, trace, at);
}
