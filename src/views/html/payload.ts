/**
 * The data of a standalone HTML view: a small JSON header (model, tokens, tensor layout) and one
 * compressed binary blob per tensor layer, base64 in the page. Encoding (Node or browser) and
 * decoding (browser) live here together so that the two can never drift apart.
 *
 * Encodings of a layer's values (row-major [d0, rows, cols], as in the Trace):
 *
 * - `f32`: the float32 values bit for bit (lossless), split into 4 byte planes.
 * - `fixed`: integers round(x · 10^decimals), so that what a view prints at `decimals` decimals
 *   is exactly the trace's value printed at that precision. Signed values are zigzag-coded; with
 *   `tiny` (attention), 0 stays "exactly 0" (a masked key) and other values are stored + 1, so a
 *   weight below half a unit is kept as nonzero (decoded to a quarter unit). Split into byte planes.
 *
 * Byte planes (all first bytes, then all second bytes, ...) make deflate see long runs of similar
 * bytes; the blobs are raw deflate (`DecompressionStream('deflate-raw')` in browsers).
 *
 * Isomorphic: imports nothing from Node.
 */
import type { ScoreCheck } from '../../analysis/neuron.js';
import type { GenerationInfo, ModelInfo, Prediction, ScoreTerms, StackName, Token, Trace } from '../../core/trace.js';
import type { AnalysisViewData } from '../layout/analysis-views.js';

export const PAYLOAD_FORMAT = 'attnscope-view';
export const PAYLOAD_VERSION = 1;

/** `scoreBias`: a stack's additive score term per layer (Trace.scores[stack].bias); layers sharing one term share a blob. */
export type TensorKind = 'attention' | 'queries' | 'keys' | 'scoreBias';

/** A stack's score terms as the header carries them; with `hasBias`, the bias comes as its `scoreBias` tensor. */
export type PayloadScoreTerms = Omit<ScoreTerms, 'bias'> & { hasBias: boolean };

export type Encoding =
  | { kind: 'f32' }
  | { kind: 'fixed'; decimals: number; bytes: number; zigzag: boolean; tiny: boolean };

/** Precision levels, most precise first. */
export type AttentionLevel = 'f32' | 'fixed5' | 'fixed4';
export type QkLevel = 'f32' | 'fixed4' | 'fixed3' | 'fixed2';

export interface PayloadTensor {
  kind: TensorKind;
  stack: StackName;
  /** Per-layer shape [d0, rows, cols]. */
  dims: [number, number, number];
  encoding: Encoding;
  /** Index of each layer's blob. */
  blobs: number[];
}

/** What the writer found out about a stack from the exact trace (the page may hold rounded values). */
export type StackFacts = ScoreCheck;

export interface PayloadHeader {
  format: typeof PAYLOAD_FORMAT;
  version: typeof PAYLOAD_VERSION;
  model: ModelInfo;
  /** Token objects as in the Trace (generated tokens carry `generated: true`). */
  tokens: Token[];
  decoderTokens?: Token[];
  /** Generation traces: how the generated tokens were chosen (the Trace's `generation`). */
  generation?: GenerationInfo;
  /** The model head's top-k predictions (the Trace's `predictions`, from `--top-k`). */
  predictions?: Prediction[];
  tensors: PayloadTensor[];
  /** Decompressed length of each blob. */
  blobRawLengths: number[];
  precision: { attention: AttentionLevel; qk: QkLevel | null };
  stacks: Partial<Record<StackName, StackFacts>>;
  /** The trace's score terms (scale, masks; the bias as `scoreBias` tensors), when it records them. */
  scores?: Partial<Record<StackName, PayloadScoreTerms>>;
  /** Page title and the text the trace was made from, when known. */
  title: string;
  text?: string;
  /** The data of the saliency, head-importance, ablation and logit-lens views, each when computed. */
  analysis?: AnalysisViewData;
  /** View and theme to open with. */
  view?: string;
  theme?: string;
}

// --- encoding -------------------------------------------------------------------------------------

export function attentionEncoding(level: AttentionLevel): Encoding {
  if (level === 'f32') return { kind: 'f32' };
  // 10^5 + 1 needs 17 bits, 10^4 + 1 fits 16.
  return { kind: 'fixed', decimals: level === 'fixed5' ? 5 : 4, bytes: level === 'fixed5' ? 3 : 2, zigzag: false, tiny: true };
}

/** Fixed-point q/k encoding wide enough for the largest magnitude in the data. */
export function qkEncoding(level: QkLevel, maxAbs: number): Encoding {
  if (level === 'f32') return { kind: 'f32' };
  const decimals = Number(level.slice(5));
  const maxInt = 2 * Math.round(maxAbs * 10 ** decimals) + 1;
  const bytes = maxInt < 2 ** 8 ? 1 : maxInt < 2 ** 16 ? 2 : maxInt < 2 ** 24 ? 3 : 4;
  return { kind: 'fixed', decimals, bytes, zigzag: true, tiny: false };
}

/** Values → byte planes (uncompressed). */
export function encodeValues(values: Float32Array, enc: Encoding): Uint8Array {
  const n = values.length;
  if (enc.kind === 'f32') {
    const src = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    const out = new Uint8Array(n * 4);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    for (let b = 0; b < 4; b++) {
      const sb = little ? b : 3 - b;
      const o = b * n;
      for (let i = 0; i < n; i++) out[o + i] = src[i * 4 + sb]!;
    }
    return out;
  }
  const scale = 10 ** enc.decimals;
  const ints = new Uint32Array(n);
  const limit = 2 ** (8 * enc.bytes) - 1;
  let max = 0;
  if (enc.tiny) {
    for (let i = 0; i < n; i++) {
      const x = values[i]!;
      const v = x === 0 ? 0 : x > 0 ? Math.round(x * scale) + 1 : 1;
      ints[i] = v;
      if (v > max) max = v;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const r = Math.round(values[i]! * scale);
      const v = r >= 0 ? 2 * r : -2 * r - 1;
      ints[i] = v;
      if (v > max) max = v;
    }
  }
  if (!(max <= limit)) throw new Error(`a value does not fit the ${enc.bytes}-byte encoding`);
  const out = new Uint8Array(n * enc.bytes);
  for (let b = 0; b < enc.bytes; b++) {
    const shift = 8 * b;
    const plane = out.subarray(b * n, (b + 1) * n);
    for (let i = 0; i < n; i++) plane[i] = ints[i]! >>> shift;
  }
  return out;
}

/** Byte planes (uncompressed) → values. */
export function decodeValues(bytes: Uint8Array, enc: Encoding, out?: Float32Array): Float32Array {
  const width = enc.kind === 'f32' ? 4 : enc.bytes;
  if (bytes.length % width !== 0) throw new Error(`blob of ${bytes.length} bytes is not a whole number of ${width}-byte values`);
  const n = bytes.length / width;
  const values = out ?? new Float32Array(n);
  if (enc.kind === 'f32') {
    const dst = new Uint8Array(values.buffer, values.byteOffset, n * 4);
    const little = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    for (let b = 0; b < 4; b++) {
      const db = little ? b : 3 - b;
      const o = b * n;
      for (let i = 0; i < n; i++) dst[i * 4 + db] = bytes[o + i]!;
    }
    return values;
  }
  const inv = 1 / 10 ** enc.decimals;
  const ints = new Uint32Array(n);
  for (let b = 0; b < width; b++) {
    const plane = bytes.subarray(b * n, (b + 1) * n);
    const mul = 2 ** (8 * b);
    for (let i = 0; i < n; i++) ints[i] += plane[i]! * mul;
  }
  if (enc.tiny) {
    const tiny = 0.25 * inv;
    for (let i = 0; i < n; i++) {
      const v = ints[i]!;
      values[i] = v > 1 ? (v - 1) * inv : v === 1 ? tiny : 0;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = ints[i]!;
      values[i] = (v & 1 ? -(v + 1) / 2 : v / 2) * inv;
    }
  }
  return values;
}

/** Smallest nonzero unit of an encoding (the quantum), or 0 when lossless. */
export function quantum(enc: Encoding): number {
  return enc.kind === 'f32' ? 0 : 10 ** -enc.decimals;
}

// --- base64 ---------------------------------------------------------------------------------------

export { fromBase64, toBase64 } from '../layout/common.js';

// --- JSON for a <script> element -------------------------------------------------------------------

/**
 * JSON that is safe inside `<script type="application/json">`: `<`, `>`, `&` and the line
 * separators U+2028/2029 are written as \u escapes, so no token text can close the element.
 */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/[<>&\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

// --- the browser side: header + blobs → Trace -------------------------------------------------------

/** Decompresses raw deflate (the page supplies DecompressionStream or a fallback). */
export type Inflate = (compressed: Uint8Array, rawLength: number) => Promise<Uint8Array>;

export interface PayloadSource {
  header: PayloadHeader;
  /** The compressed bytes of blob `i`. */
  blob(i: number): Uint8Array;
  /** Expected decompressed length of blob `i`. */
  rawLength(i: number): number;
}

/** Decodes the layers of one tensor into per-layer Float32Arrays. */
export async function decodeTensor(source: PayloadSource, tensor: PayloadTensor, inflate: Inflate): Promise<Float32Array[]> {
  const per = tensor.dims[0] * tensor.dims[1] * tensor.dims[2];
  return Promise.all(
    tensor.blobs.map(async (b) => {
      const raw = await inflate(source.blob(b), source.rawLength(b));
      const values = decodeValues(raw, tensor.encoding);
      if (values.length !== per) throw new Error(`layer blob ${b}: ${values.length} values, expected ${per}`);
      return values;
    }),
  );
}

/**
 * The Trace of a page: attention decoded now; queries and keys (for the neuron view) when
 * `withQk` is set.
 */
export async function decodeTrace(source: PayloadSource, inflate: Inflate, kinds: readonly TensorKind[] = ['attention', 'scoreBias', 'queries', 'keys']): Promise<Trace> {
  const h = source.header;
  const trace: Trace = { model: h.model, tokens: h.tokens, attention: {} };
  if (h.decoderTokens) trace.decoderTokens = h.decoderTokens;
  if (h.generation) trace.generation = h.generation;
  if (h.predictions) trace.predictions = h.predictions;
  for (const [stack, terms] of Object.entries(h.scores ?? {}) as [StackName, PayloadScoreTerms][]) {
    // A stack with a bias gets its terms with the bias (placeTensor), never without it.
    if (!terms.hasBias) (trace.scores ??= {})[stack] = scoreTermsOf(terms);
  }
  await Promise.all(
    h.tensors
      .filter((t) => kinds.includes(t.kind))
      .map(async (t) => placeTensor(trace, h, t, await decodeTensor(source, t, inflate))),
  );
  return trace;
}

function scoreTermsOf(terms: PayloadScoreTerms): ScoreTerms {
  const out: ScoreTerms = { scale: terms.scale, causal: terms.causal, window: terms.window };
  if (terms.biasKind !== undefined) out.biasKind = terms.biasKind;
  return out;
}

/** Puts a decoded tensor where it belongs in the page's Trace. */
export function placeTensor(trace: Trace, header: PayloadHeader, t: PayloadTensor, layers: Float32Array[]): void {
  if (t.kind === 'scoreBias') {
    const terms = header.scores?.[t.stack];
    if (terms) (trace.scores ??= {})[t.stack] = { ...scoreTermsOf(terms), bias: { dims: t.dims, layers } };
    return;
  }
  const map = t.kind === 'attention' ? trace.attention : t.kind === 'queries' ? (trace.queries ??= {}) : (trace.keys ??= {});
  map[t.stack] = { dims: t.dims, layers };
}
