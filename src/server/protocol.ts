/**
 * The API of `attnscope serve`, shared by the server (src/server) and the app in the browser
 * (web/app): request and answer types, the limits, and the binary stream a trace travels in.
 *
 * `POST /api/trace` answers `application/vnd.attnscope.frames`: a sequence of frames, each
 * `[u32 LE payload length][u8 type][3 zero bytes][payload]`, payloads padded to a multiple of 4
 * bytes so that float data stays 4-byte aligned:
 *
 * - `progress` (JSON {@link ProgressFrame}): loading, downloading, running;
 * - `header` (JSON {@link StreamHeader}): model, tokens, predictions, score terms, the tensors
 *   that follow and their shapes;
 * - `layer` (binary): `[u8 tensor index][u8 encoding][u16 LE layer]` then the layer's float32
 *   values (little-endian, row-major [d0, rows, cols] as in the Trace), one frame per tensor layer.
 *   Encoding 0: every value. Encoding 1 (`lower`, lossless): a square attention layer whose entries
 *   above the diagonal are all exactly +0 (a causal mask) sends `[u32 LE d0][u32 LE n]` and then only
 *   rows' first i + 1 values (d0 · n(n + 1)/2 floats, about half); the reader puts the zeros back,
 *   bit for bit the same Float32Array;
 * - `tensor` (JSON {@link TensorDeclaration}): a tensor not in the header, declared before its
 *   first layer (per-layer streaming declares queries, keys and score terms as they are computed);
 * - `predictions` (JSON {@link PredictionsFrame}): the head's predictions, when they come after the
 *   header (per-layer streaming: with the last layer);
 * - `error` (JSON {@link ApiError}): the trace failed after the answer had started;
 * - `end` (JSON {@link StreamEnd}): every layer has been sent.
 *
 * Isomorphic: imports nothing from Node (the browser bundle includes it).
 */
import type { GenerationInfo, ModelInfo, Prediction, StackName, Token } from '../core/trace.js';
import type { PayloadScoreTerms, TensorKind } from '../views/html/payload.js';
import type { AblationData } from '../views/layout/ablation.js';
import type { HeadImportanceData } from '../views/layout/head-importance.js';
import type { LogitLensData } from '../views/layout/logit-lens.js';
import type { SaliencyData } from '../views/layout/saliency.js';
import type { BiasReport } from '../analysis/bias/report.js';

export const FRAMES_MEDIA_TYPE = 'application/vnd.attnscope.frames';

/** The trace answer's header naming its run, which the page names back when its first view is drawn (POST /api/trace/drawn). */
export const RUN_HEADER = 'X-Attnscope-Run';

/** Where a model offered by the server comes from. */
export type ModelOrigin = 'default' | 'folder' | 'hf-cache' | 'hub';

export interface ModelEntry {
  /** What a trace request names: `default`, `folder:<n>/<relative path>` (a `--models` folder), or a Hub id `org/name[@revision]`. */
  id: string;
  /** Shown in the picker. */
  label: string;
  origin: ModelOrigin;
  /** config.json's model_type, when it could be read. */
  modelType?: string;
  /** Whether the model is loaded in memory now. */
  loaded?: boolean;
}

export interface ServerLimits {
  /** Characters of each text field. */
  maxTextChars: number;
  /** Tokens of the input (text + pair; the decoder text counts separately). */
  maxTokens: number;
  /** Bytes of a request body. */
  maxBodyBytes: number;
  /** Largest `taps.topK`. */
  maxTopK: number;
  /** Largest `maxNewTokens` (tokens an encoder-decoder generates when traced without a decoder text). */
  maxNewTokens: number;
}

export interface ModelsResponse {
  models: ModelEntry[];
  /** False when the server runs offline (HF_HUB_OFFLINE): Hub ids not in the cache are refused. */
  hubDownloads: boolean;
  limits: ServerLimits;
}

/** What is recorded besides attention. */
export interface TraceTaps {
  /** Per-head queries and keys, with the score terms (the neuron view). */
  qk?: boolean;
  /** The prediction head's top-k at every position (causal LMs) or at each mask (masked LMs); 0 for none. */
  topK?: number;
}

export interface TraceRequest {
  model: string;
  text: string;
  /** Second sentence of a pair. */
  textPair?: string;
  /** Encoder-decoder models: the decoder's text. */
  decoderText?: string;
  /** Encoder-decoder models without a decoder text: how many tokens to generate (default 20). */
  maxNewTokens?: number;
  taps?: TraceTaps;
  /**
   * The query head the page shows first. A stream on demand then sends that head's queries and its
   * key head's keys of layer 0 first (tensors declared with `head`, see TensorDeclaration), computed
   * before the rest of the layer, where the model's graph allows (Llama-style q/k projections).
   */
  head?: number;
}

/** Every error the API sends: one line naming the field and what is allowed. */
export interface ApiError {
  error: string;
  /** The request field at fault, when one is. */
  field?: string;
}

export interface ProgressFrame {
  stage: 'download' | 'load' | 'queue' | 'run';
  message: string;
  /** 0..1 when known. */
  fraction?: number;
}

export interface StreamTensor {
  kind: Exclude<TensorKind, 'scoreBias'> | 'scoreBias';
  stack: StackName;
  /** Per-layer shape [d0, rows, cols]. */
  dims: [number, number, number];
  /** Number of layer frames that follow for this tensor. */
  layers: number;
}

export interface StreamHeader {
  model: ModelInfo;
  /** Which stacks the model has: the app asks for a decoder text for `encoder-decoder`. */
  kind: 'encoder' | 'decoder' | 'encoder-decoder';
  tokens: Token[];
  decoderTokens?: Token[];
  predictions?: Prediction[];
  /** Encoder-decoders traced without a decoder text: how the decoder tokens were generated. */
  generation?: GenerationInfo;
  scores?: Partial<Record<StackName, PayloadScoreTerms>>;
  tensors: StreamTensor[];
  /** The id the trace was requested with, and the revision it resolved to (commit or file stamp). */
  modelId: string;
  revision: string;
  /** Whether the answer came from the server's result cache. */
  cached: boolean;
  /**
   * How layers are handed out: `after-run` when the engine returns every layer at the end of one
   * forward pass (then the layers are streamed one by one as soon as it has); `per-layer` when
   * each layer is sent as it is computed (engine/layerwise.ts): the header then declares the
   * attention tensors, `tensor` frames the others as they come, and the predictions follow in a
   * `predictions` frame.
   */
  streaming: 'after-run' | 'per-layer';
}

/**
 * A tensor declared after the header: it takes the next index (header tensors first, then
 * declarations in order). With `head` (requests naming a `head`): a preview of one layer's one
 * head, not a tensor of the stream — queries of query head `head` or keys of key head `head`, dims
 * [1, n, headDim], sent in one layer frame (its `layer` is the layer) under an index above every
 * stream tensor's (PREVIEW_TENSOR_INDEX); the whole layer's tensors follow as usual.
 */
export interface TensorDeclaration extends StreamTensor {
  index: number;
  head?: number;
}

/** Indices of a head preview's queries and keys (TensorDeclaration.head), apart from the stream's tensors. */
export const PREVIEW_TENSOR_INDEX = { queries: 255, keys: 254 } as const;

export interface PredictionsFrame {
  predictions: Prediction[];
}

export interface StreamEnd {
  /** Milliseconds spent loading the model (0 when it was loaded), and running it. */
  loadMs: number;
  runMs: number;
  /** Bytes of layer data sent. */
  bytes: number;
}

export const FRAME_TYPES = { progress: 1, header: 2, layer: 3, error: 4, end: 5, tensor: 6, predictions: 7 } as const;
export type FrameType = keyof typeof FRAME_TYPES;

export type Frame =
  | { type: 'progress'; value: ProgressFrame }
  | { type: 'header'; value: StreamHeader }
  | { type: 'layer'; tensor: number; layer: number; values: Float32Array }
  | { type: 'error'; value: ApiError }
  | { type: 'end'; value: StreamEnd }
  | { type: 'tensor'; value: TensorDeclaration }
  | { type: 'predictions'; value: PredictionsFrame };

const FRAME_HEAD = 8;
const LAYER_HEAD = 4;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function frame(type: number, payload: Uint8Array): Uint8Array {
  const padded = (payload.length + 3) & ~3;
  const out = new Uint8Array(FRAME_HEAD + padded);
  const view = new DataView(out.buffer);
  view.setUint32(0, padded, true);
  out[4] = type;
  out.set(payload, FRAME_HEAD);
  // JSON payloads are padded with spaces (valid trailing whitespace).
  out.fill(0x20, FRAME_HEAD + payload.length);
  return out;
}

/** A JSON frame. */
export function jsonFrame(type: Exclude<FrameType, 'layer'>, value: ProgressFrame | StreamHeader | ApiError | StreamEnd | TensorDeclaration | PredictionsFrame): Uint8Array {
  return frame(FRAME_TYPES[type], textEncoder.encode(JSON.stringify(value)));
}

/** Layer encodings (the layer frame's second byte). */
const LAYER_ALL = 0;
const LAYER_LOWER = 1;

/** Whether every entry above the diagonal of each of the d0 n × n matrices is +0 (bit pattern 0). */
function lowerOnly(values: Float32Array, d0: number, n: number): boolean {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let m = 0; m < d0; m++) {
    for (let i = 0; i < n - 1; i++) {
      const row = (m * n + i) * n;
      for (let j = i + 1; j < n; j++) if (bits[row + j] !== 0) return false;
    }
  }
  return true;
}

/**
 * A layer frame: tensor `tensor` of the header, layer `layer`, its float32 values. With the
 * layer's `dims` [d0, n, n] (attention), a layer that is zero above the diagonal is sent as its
 * lower triangle (encoding 1, lossless).
 */
export function layerFrame(tensor: number, layer: number, values: Float32Array, dims?: readonly [number, number, number]): Uint8Array {
  if (tensor > 255 || layer > 65535) throw new Error(`layer frame out of range (tensor ${tensor}, layer ${layer})`);
  if (dims && dims[1] === dims[2] && dims[1] > 1 && dims[0] * dims[1] * dims[2] === values.length && lowerOnly(values, dims[0], dims[1])) {
    const [d0, n] = dims;
    const payload = new Uint8Array(LAYER_HEAD + 8 + ((d0 * n * (n + 1)) / 2) * 4);
    const view = new DataView(payload.buffer);
    payload[0] = tensor;
    payload[1] = LAYER_LOWER;
    view.setUint16(2, layer, true);
    view.setUint32(LAYER_HEAD, d0, true);
    view.setUint32(LAYER_HEAD + 4, n, true);
    if (LITTLE_ENDIAN) {
      const out = new Float32Array(payload.buffer, LAYER_HEAD + 8);
      let at = 0;
      for (let m = 0; m < d0; m++) {
        for (let i = 0; i < n; i++) {
          const row = (m * n + i) * n;
          out.set(values.subarray(row, row + i + 1), at);
          at += i + 1;
        }
      }
    } else {
      let at = LAYER_HEAD + 8;
      for (let m = 0; m < d0; m++) for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++, at += 4) view.setFloat32(at, values[(m * n + i) * n + j]!, true);
    }
    return frame(FRAME_TYPES.layer, payload);
  }
  const payload = new Uint8Array(LAYER_HEAD + values.length * 4);
  payload[0] = tensor;
  payload[1] = LAYER_ALL;
  new DataView(payload.buffer).setUint16(2, layer, true);
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (LITTLE_ENDIAN) payload.set(bytes, LAYER_HEAD);
  else for (let i = 0; i < values.length; i++) new DataView(payload.buffer).setFloat32(LAYER_HEAD + 4 * i, values[i]!, true);
  return frame(FRAME_TYPES.layer, payload);
}

/**
 * Splits a byte stream into frames, whatever the chunk boundaries. Chunks are kept as they come
 * and joined once per frame (a layer of many megabytes arrives in hundreds of chunks).
 */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private length = 0;
  /** Bytes of the frame being read (head included), once its head is in. */
  private need = 0;

  /** Adds a chunk and returns the frames it completes. */
  push(chunk: Uint8Array): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.length += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.need === 0) {
        if (this.length < FRAME_HEAD) break;
        const head = this.take(FRAME_HEAD, false);
        this.need = FRAME_HEAD + new DataView(head.buffer, head.byteOffset, FRAME_HEAD).getUint32(0, true);
      }
      if (this.length < this.need) break;
      const bytes = this.take(this.need, true);
      this.need = 0;
      frames.push(decodeFrame(bytes[4]!, bytes.subarray(FRAME_HEAD)));
    }
    return frames;
  }

  /** The first `n` bytes, joined (and removed when `consume`). */
  private take(n: number, consume: boolean): Uint8Array {
    const first = this.chunks[0]!;
    let out: Uint8Array;
    if (first.length >= n) {
      out = first.subarray(0, n);
    } else {
      out = new Uint8Array(n);
      let at = 0;
      for (const c of this.chunks) {
        const k = Math.min(c.length, n - at);
        out.set(c.subarray(0, k), at);
        at += k;
        if (at === n) break;
      }
    }
    if (consume) {
      let left = n;
      while (left > 0) {
        const c = this.chunks[0]!;
        if (c.length <= left) {
          this.chunks.shift();
          left -= c.length;
        } else {
          this.chunks[0] = c.subarray(left);
          left = 0;
        }
      }
      this.length -= n;
    }
    return out;
  }

  /** Bytes of an unfinished frame left over (nonzero at the end of a stream that was cut off). */
  get pending(): number {
    return this.length;
  }
}

/** The values of a `lower` layer payload: each row's first i + 1 values, zeros above the diagonal. */
function fromLower(view: DataView): Float32Array {
  const d0 = view.getUint32(LAYER_HEAD, true);
  const n = view.getUint32(LAYER_HEAD + 4, true);
  const count = (d0 * n * (n + 1)) / 2;
  if (view.byteLength < LAYER_HEAD + 8 + count * 4) throw new Error(`layer frame: ${view.byteLength} bytes, too few for a ${d0} × ${n} × ${n} lower triangle`);
  const values = new Float32Array(d0 * n * n);
  const base = view.byteOffset + LAYER_HEAD + 8;
  let src: Float32Array;
  if (!LITTLE_ENDIAN) {
    src = new Float32Array(count);
    for (let i = 0; i < count; i++) src[i] = view.getFloat32(LAYER_HEAD + 8 + 4 * i, true);
  } else if (base % 4 === 0) {
    src = new Float32Array(view.buffer, base, count);
  } else {
    // The frame sits at an odd offset of a chunk: the triangle is copied out once.
    src = new Float32Array(count);
    new Uint8Array(src.buffer).set(new Uint8Array(view.buffer, base, count * 4));
  }
  let at = 0;
  for (let m = 0; m < d0; m++) {
    for (let i = 0; i < n; i++) {
      values.set(src.subarray(at, at + i + 1), (m * n + i) * n);
      at += i + 1;
    }
  }
  return values;
}

function decodeFrame(type: number, payload: Uint8Array): Frame {
  if (type === FRAME_TYPES.layer) {
    const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
    if (payload[1] === LAYER_LOWER) return { type: 'layer', tensor: payload[0]!, layer: view.getUint16(2, true), values: fromLower(view) };
    if (payload[1] !== LAYER_ALL) throw new Error(`unknown layer encoding ${payload[1]}`);
    const n = (payload.length - LAYER_HEAD) / 4;
    const values = new Float32Array(n);
    if (LITTLE_ENDIAN) new Uint8Array(values.buffer).set(payload.subarray(LAYER_HEAD));
    else for (let i = 0; i < n; i++) values[i] = view.getFloat32(LAYER_HEAD + 4 * i, true);
    return { type: 'layer', tensor: payload[0]!, layer: view.getUint16(2, true), values };
  }
  const value: unknown = JSON.parse(textDecoder.decode(payload));
  switch (type) {
    case FRAME_TYPES.progress:
      return { type: 'progress', value: value as ProgressFrame };
    case FRAME_TYPES.header:
      return { type: 'header', value: value as StreamHeader };
    case FRAME_TYPES.error:
      return { type: 'error', value: value as ApiError };
    case FRAME_TYPES.end:
      return { type: 'end', value: value as StreamEnd };
    case FRAME_TYPES.tensor:
      return { type: 'tensor', value: value as TensorDeclaration };
    case FRAME_TYPES.predictions:
      return { type: 'predictions', value: value as PredictionsFrame };
    default:
      throw new Error(`unknown frame type ${type}`);
  }
}

// --- The analysis views (POST /api/analysis) ------------------------------------------------------

/**
 * `POST /api/analysis` answers newline-delimited JSON ({@link AnalysisLine} per line): progress
 * lines while the model runs (integrated gradients report their path points), then one `result`
 * line with the view's data, or an `error` line. The data are what the standalone page carries for
 * the same view (src/views/analysis-data.ts), so the app draws them with the page's components.
 */
export const ANALYSIS_MEDIA_TYPE = 'application/x-ndjson';

/** The analysis views the server computes: the page's four (saliency, importance, ablation, lens) and the deep dive. */
export type AnalysisKind = 'saliency' | 'importance' | 'ablation' | 'lens' | 'deep';
export const ANALYSIS_KINDS: readonly AnalysisKind[] = ['saliency', 'importance', 'ablation', 'lens', 'deep'];

export interface AnalysisHead {
  layer: number;
  head: number;
  /** Default: the self-attention stack (the encoder's for encoder-decoders). */
  stack?: StackName;
}

export interface AnalysisOptions {
  /** saliency: integrated gradients' steps, 1 … ANALYSIS_MAX_STEPS, or 'auto' (the default: refined until completeness is within 1%). */
  steps?: number | 'auto';
  /** saliency, importance, ablation: the position whose prediction is the target (default: the last; masked LMs the first mask). */
  position?: number;
  /** importance: ∂T/∂g itself instead of Michel et al.'s normalized |∂T/∂g|. */
  signed?: boolean;
  /** ablation: the heads removed. */
  heads?: AnalysisHead[];
  /** ablation: 'zero' (default) or 'mean'. */
  mode?: 'zero' | 'mean';
  /** ablation: candidates listed (default 10); lens: top tokens per cell (default 5); at most ServerLimits.maxTopK. */
  topK?: number;
}

/** Largest number of integrated-gradients steps a request may ask for (and the cap of 'auto'). */
export const ANALYSIS_MAX_STEPS = 256;
/** Most heads one ablation request may remove. */
export const ANALYSIS_MAX_HEADS = 256;

export interface AnalysisRequest {
  model: string;
  text: string;
  textPair?: string;
  decoderText?: string;
  view: AnalysisKind;
  options?: AnalysisOptions;
}

/** The deep dive: how much attention (and cross attention) and the MLP change each token, per layer (analysis/hidden-states.ts updateNorms). */
export interface DeepDiveData {
  stack: StackName;
  /** Token labels as the views show them. */
  tokens: string[];
  layers: {
    /** ‖residual stream entering the layer‖ per token. */
    residual: number[];
    attention: { norm: number[]; relative: number[] };
    cross?: { norm: number[]; relative: number[] };
    mlp: { norm: number[]; relative: number[] };
  }[];
}

export type AnalysisData =
  | { view: 'saliency'; data: SaliencyData }
  | { view: 'importance'; data: HeadImportanceData }
  | { view: 'ablation'; data: AblationData }
  | { view: 'lens'; data: LogitLensData }
  | { view: 'deep'; data: DeepDiveData };

export type AnalysisResult = AnalysisData & {
  /** The model's name (titles of exports), the revision the data were computed with. */
  modelName: string;
  revision: string;
  cached: boolean;
  /** Milliseconds spent computing (0 when cached). */
  ms: number;
};

export type AnalysisLine = ({ type: 'progress' } & ProgressFrame) | { type: 'result'; result: AnalysisResult } | ({ type: 'error' } & ApiError);

// --- the bias panel (POST /api/bias, src/server/bias.ts; helper D) -------------------------------

/**
 * A bias report for the app's bias panel: what `attnscope bias report [model] --limit N
 * [--bias-type T] [--text …] …` computes (src/bias/report.ts), with the same defaults. Answered as
 * NDJSON lines ({@link BiasLine}): progress, then the result or an error.
 */
export interface BiasRequest {
  model: string;
  /** The probe text whose heads the report analyses (default: the report's two default probes). */
  text?: string;
  /** CrowS-Pairs pairs of this bias type only. */
  biasType?: string;
  /** The first N CrowS-Pairs pairs (after biasType) and WinoGender sentences; 0 leaves both out. */
  limit?: number;
  /** Group word lists of the probe (default gender, occupation). */
  groups?: string[];
  /** Heads ablated, random control sets, integrated-gradients steps, permutations, bootstrap resamples, seed. */
  k?: number;
  controls?: number;
  steps?: number;
  permutations?: number;
  bootstrap?: number;
  seed?: number;
  /** Re-score the first N pairs with the top k CrowS-Pairs heads zeroed (default 0). */
  ablationPairs?: number;
}

/** What the bias route allows (the defaults are the CLI's). */
export const BIAS_LIMITS = { maxPairs: 200, defaultLimit: 40, maxK: 20, maxControls: 10, maxSteps: 64, maxPermutations: 2000, maxBootstrap: 5000, maxAblationPairs: 20 } as const;

export interface BiasResult {
  report: BiasReport;
  revision: string;
  cached: boolean;
  /** Milliseconds spent computing (0 when cached). */
  ms: number;
}

export type BiasLine = ({ type: 'progress' } & ProgressFrame) | { type: 'result'; result: BiasResult } | ({ type: 'error' } & ApiError);
