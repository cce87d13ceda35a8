/**
 * Key/value-cache reuse when an edit only appends text (causal models, issue 11 point 3).
 *
 * In a causal model position i attends to positions ≤ i only, so the attention rows, queries,
 * keys, score bias and next-token logits of a prefix do not depend on what follows it. The server
 * therefore traces decoders through the cached-decoding graph (taps `cache: true`, the graph
 * incremental generation uses) and keeps, per model revision and taps, the last few traces'
 * token ids, whole-sequence tap outputs and present keys/values. A new text whose token ids start
 * with p ids of a kept trace runs only its last n − p tokens, fed the kept keys/values of the
 * first p positions (pastLength p); the prefix's rows are copied from the kept outputs. A text
 * that is a token prefix of a kept one (a deletion at the end) runs nothing.
 *
 * Token ids, not characters, decide the prefix: an appended letter can change the last token of
 * the old text (BPE merges), and then only the tokens before it are reused.
 *
 * The first trace of a text with no kept prefix is streamed layer by layer by the server
 * (traces.ts) with the keys and values tapped; `seed` then keeps it as if it had run here: with an
 * empty past, a layer's present keys/values are exactly the keys/values it tapped. (`trace` on a
 * text with no kept prefix is a full run of the cached-decoding graph with an empty cache.) Tests
 * (test/server-append.test.ts, test/server-stream.test.ts) check that an appended trace equals a
 * full re-trace and PyTorch's attention.
 */
import type { Prediction, Token, Trace } from '../core/trace.js';
import { topKPredictions } from '../analysis/predictions.js';
import type { Model } from '../engine/model.js';
import { assembleRows, type StepRows } from '../generation/rows.js';
import { tapName, type TapKind, type TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';

/** What a trace request asks of a causal model. */
export interface AppendRequest {
  text: string;
  qk: boolean;
  /** Top-k next-token predictions at every position (0: none). */
  topK: number;
}

/** A trace kept for reuse: its ids, per-layer rows of every tap, and the present keys/values. */
interface Kept {
  key: string;
  ids: number[];
  /** tapName(kind, 'self', l) → [1, d0, rows, width] over the whole sequence. */
  rows: Map<string, RuntimeTensor>;
  /** present_key/present_value.self.<l>: [1, kvHeads, n, headDim]. */
  cache: Map<string, RuntimeTensor>;
  predictions: Prediction[] | undefined;
  bytes: number;
}

export interface AppendResult {
  trace: Trace;
  /** Tokens whose rows came from a kept trace (0: a full run). */
  reused: number;
  /** Tokens the graph ran on. */
  computed: number;
}

function f32(t: RuntimeTensor, name: string): Float32Array {
  if (t.type !== 'float32') throw new Error(`graph output ${name} is ${t.type}; the append path reads float32`);
  return t.data as Float32Array;
}

/** Whether the server traces this model through the append path. */
export function appendable(model: Model, req: { textPair?: string; decoderText?: string }): boolean {
  return model.info.kind === 'decoder' && req.textPair === undefined && req.decoderText === undefined;
}

/** The first `p` positions (axis 2) of a [1, a, n, b] tensor. */
function leading(t: RuntimeTensor, p: number, name: string): RuntimeTensor {
  const [one, a, n, b] = t.dims as [number, number, number, number];
  if (p === n) return t;
  const src = f32(t, name);
  const out = new Float32Array(a * p * b);
  for (let i = 0; i < a; i++) out.set(src.subarray(i * n * b, (i * n + p) * b), i * p * b);
  return { type: 'float32', dims: [one, a, p, b], data: out };
}

/**
 * The first `p` rows of a [1, d0, rows, width] tap as step rows; attention-like taps (width = the
 * keys seen) are cut to `p` columns, which hold all of a causal row's weight.
 */
function prefixRows(t: RuntimeTensor, p: number, cutColumns: boolean, name: string): { d0: number; rows: Float32Array; width: number } {
  const [, d0, n, width] = t.dims as [number, number, number, number];
  const w = cutColumns ? Math.min(width, p) : width;
  const src = f32(t, name);
  const out = new Float32Array(d0 * p * w);
  for (let h = 0; h < d0; h++) for (let r = 0; r < p; r++) out.set(src.subarray((h * n + r) * width, (h * n + r) * width + w), (h * p + r) * w);
  return { d0, rows: out, width: w };
}

function bytesOf(m: Map<string, RuntimeTensor>): number {
  let n = 0;
  for (const t of m.values()) n += (t.data as Float32Array).byteLength;
  return n;
}

/** Longest common prefix of two id lists. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/**
 * The kept traces of every causal model, bounded in bytes (least recently used dropped first).
 * One per server; `trace` runs the model (the caller holds it).
 */
export class AppendCache {
  private kept: Kept[] = [];
  private total = 0;
  /** Runs that reused a prefix, and the tokens reused (a test and the bench read them). */
  appends = 0;
  reusedTokens = 0;

  constructor(readonly maxBytes: number) {}

  /** The kept trace sharing the longest token prefix with `ids` (same model revision and taps), and that prefix's length. */
  private longest(key: string, ids: readonly number[]): { best: Kept | undefined; p: number } {
    let best: Kept | undefined;
    let p = 0;
    for (const k of this.kept) {
      if (k.key !== key) continue;
      const c = commonPrefix(k.ids, ids);
      if (c > p) {
        p = c;
        best = k;
      }
    }
    return { best, p };
  }

  /**
   * Whether a kept trace shares more of `req.text`'s tokens than every text starts with (the
   * tokens of an empty text, such as a BOS token): then `trace` reuses it; otherwise the text is a
   * first run (the server streams it layer by layer and `seed`s the cache with it).
   */
  async lookup(model: Model, modelKey: string, req: AppendRequest): Promise<{ kept: boolean; tokens: number }> {
    const ids = (await model.tokenize(req.text)).map((t) => t.id);
    const { p } = this.longest(JSON.stringify([modelKey, req.qk, req.topK]), ids);
    return { kept: p > 0 && p > (await this.leading(model, modelKey)), tokens: ids.length };
  }

  /** Tokens of the empty text per model key (the tokens every text starts with). */
  private readonly empty = new Map<string, number>();

  private async leading(model: Model, modelKey: string): Promise<number> {
    let n = this.empty.get(modelKey);
    if (n === undefined) {
      n = await model.tokenize('').then((t) => t.length, () => 0);
      this.empty.set(modelKey, n);
    }
    return n;
  }

  /**
   * Bytes a seed of `tokens` tokens would keep (rows of the taps, keys and values, predictions): a
   * server streaming a first run taps the values only when the seed would fit in `maxBytes`.
   */
  seedBytes(model: Model, tokens: number, qk: boolean): number {
    const info = model.architectureInfo;
    const layers = info.stacks.self ?? info.numLayers;
    const n = tokens;
    const bias = info.scoring.self?.bias ?? 'none';
    let floats = layers * info.numHeads * n * n + 2 * layers * info.numKeyValueHeads * n * info.headDim;
    if (qk) {
      floats += layers * (info.numHeads + info.numKeyValueHeads) * n * info.headDim;
      if (bias !== 'none') floats += (bias === 'shared' ? 1 : layers) * info.numHeads * n * n;
    }
    return 4 * floats + 64 * n;
  }

  /**
   * Keeps a trace computed elsewhere (the server's layer-by-layer run of a first text) as if `trace`
   * had made it: `outputs` are the whole sequence's graph outputs of a run with no past, holding
   * `attention.self.<l>` (and with `req.qk` the queries, keys and score bias) and, for the cache,
   * `keys.self.<l>` and `values.self.<l>` [1, kvHeads, n, headDim] (with an empty past, the
   * present keys/values are these). Returns whether it was kept (not when it exceeds the byte
   * bound or an output is missing or not float32 over the n tokens).
   */
  seed(model: Model, modelKey: string, req: AppendRequest, tokens: readonly Token[], outputs: Readonly<Record<string, RuntimeTensor>>, predictions: Prediction[] | undefined): boolean {
    const info = model.architectureInfo;
    const layers = info.stacks.self ?? info.numLayers;
    const n = tokens.length;
    const ids = tokens.map((t) => t.id);
    const key = JSON.stringify([modelKey, req.qk, req.topK]);
    const rowsOk = (t: RuntimeTensor | undefined): t is RuntimeTensor => t !== undefined && t.type === 'float32' && t.dims.length === 4 && t.dims[0] === 1 && t.dims[2] === n;
    const rows = new Map<string, RuntimeTensor>();
    for (const { kind, layers: count } of this.kinds(model, req.qk)) {
      for (let l = 0; l < count; l++) {
        const name = tapName(kind, 'self', l);
        const t = outputs[name];
        if (!rowsOk(t)) return false;
        rows.set(name, t);
      }
    }
    const cache = new Map<string, RuntimeTensor>();
    for (let l = 0; l < layers; l++) {
      const k = outputs[tapName('keys', 'self', l)];
      const v = outputs[tapName('values', 'self', l)];
      if (!rowsOk(k) || !rowsOk(v) || k.dims[1] !== info.numKeyValueHeads || v.dims[1] !== info.numKeyValueHeads) return false;
      cache.set(tapName('present_key', 'self', l), k);
      cache.set(tapName('present_value', 'self', l), v);
    }
    // Rows and the cache may share the keys' tensor: counted once.
    const held = new Set<RuntimeTensor>([...rows.values(), ...cache.values()]);
    let bytes = 64 * n;
    for (const t of held) bytes += (t.data as Float32Array).byteLength;
    const kept: Kept = { key, ids, rows, cache, predictions: predictions && req.topK > 0 ? predictions : undefined, bytes };
    this.replace(kept);
    return this.kept.includes(kept);
  }

  /** The taps a kept trace holds rows of, with their layer counts. */
  private kinds(model: Model, qk: boolean): { kind: TapKind; layers: number }[] {
    const info = model.architectureInfo;
    const layers = info.stacks.self ?? info.numLayers;
    const bias = info.scoring.self?.bias ?? 'none';
    const kinds: { kind: TapKind; layers: number }[] = [{ kind: 'attention', layers }];
    if (qk) {
      kinds.push({ kind: 'queries', layers }, { kind: 'keys', layers });
      if (bias !== 'none') kinds.push({ kind: 'score_bias', layers: bias === 'shared' ? 1 : layers });
    }
    return kinds;
  }

  /** Keeps `k`, dropping a kept trace of the same key and ids. */
  private replace(k: Kept): void {
    this.kept = this.kept.filter((o) => {
      const same = o.key === k.key && o.ids.length === k.ids.length && commonPrefix(o.ids, k.ids) === k.ids.length;
      if (same) this.total -= o.bytes;
      return !same;
    });
    this.remember(k);
  }

  /** Traces `req.text` with `model`, reusing the longest kept token prefix of the same model revision and taps. */
  async trace(model: Model, modelKey: string, req: AppendRequest): Promise<AppendResult> {
    const key = JSON.stringify([modelKey, req.qk, req.topK]);
    const tokens = await model.tokenize(req.text);
    const ids = tokens.map((t) => t.id);
    const { best, p } = this.longest(key, ids);
    const result = await this.run(model, tokens, req, best, p, key);
    if (best) {
      this.appends++;
      this.reusedTokens += p;
      // Most recently used last.
      this.kept = this.kept.filter((k) => k !== best);
      this.kept.push(best);
    }
    return result;
  }

  private remember(k: Kept): void {
    if (k.bytes > this.maxBytes) return;
    this.kept.push(k);
    this.total += k.bytes;
    while (this.total > this.maxBytes && this.kept.length > 0) {
      const old = this.kept.shift()!;
      this.total -= old.bytes;
    }
  }

  /** Forgets the kept traces of a model (e.g. when it is unloaded). */
  forget(modelKey: string): void {
    const prefix = JSON.stringify([modelKey]).slice(0, -1);
    this.kept = this.kept.filter((k) => {
      const drop = k.key.startsWith(prefix);
      if (drop) this.total -= k.bytes;
      return !drop;
    });
  }

  private async run(model: Model, tokens: Token[], req: AppendRequest, prev: Kept | undefined, p: number, key: string): Promise<AppendResult> {
    const info = model.architectureInfo;
    const layers = info.stacks.self ?? info.numLayers;
    const n = tokens.length;
    const ids = tokens.map((t) => t.id);
    const kinds = this.kinds(model, req.qk);
    const taps: TapRequest = { attention: true, qk: req.qk, lastHiddenState: false, logits: req.topK > 0, cache: true };
    // A token prefix of a kept trace: nothing to run (keep at least one token to run otherwise).
    const reuse = prev ? (p === n ? n : Math.min(p, n - 1)) : 0;
    const fresh = n - reuse;

    let out: Record<string, RuntimeTensor> = {};
    if (fresh > 0) {
      const past: Record<string, RuntimeTensor> = {};
      for (let l = 0; l < layers; l++) {
        for (const name of [tapName('past_key', 'self', l), tapName('past_value', 'self', l)]) {
          const present = prev?.cache.get(name.replace(/^past_/, 'present_'));
          past[name] = reuse > 0 && present ? leading(present, reuse, name) : { type: 'float32', dims: [1, info.numKeyValueHeads, 0, info.headDim], data: new Float32Array(0) };
        }
      }
      out = await model.run(taps, { inputIds: ids.slice(reuse), pastLength: reuse }, past);
    }

    // Whole-sequence rows: the kept prefix's rows, then the new ones.
    const rows = new Map<string, RuntimeTensor>();
    for (const { kind, layers: count } of kinds) {
      const cut = kind === 'attention' || kind === 'score_bias';
      for (let l = 0; l < count; l++) {
        const name = tapName(kind, 'self', l);
        const steps: StepRows[] = [];
        let d0 = 0;
        let cols = 0;
        if (reuse > 0) {
          const kept = prev!.rows.get(name);
          if (!kept) throw new Error(`kept trace lacks ${name}`);
          const pre = prefixRows(kept, reuse, cut, name);
          d0 = pre.d0;
          cols = pre.width;
          steps.push({ start: 0, rows: reuse, width: pre.width, layers: [pre.rows] });
        }
        if (fresh > 0) {
          const t = out[name];
          if (!t) throw new Error(`graph output ${name} missing`);
          const [, dd, r, w] = t.dims as [number, number, number, number];
          d0 = dd;
          cols = Math.max(cols, w);
          steps.push({ start: reuse, rows: r, width: w, layers: [f32(t, name)] });
        }
        // Attention of n tokens has n columns; a reused prefix alone was cut to its own width.
        if (cut) cols = Math.max(cols, n);
        const stack = assembleRows(steps, d0, n, cols);
        rows.set(name, { type: 'float32', dims: [1, ...stack.dims], data: stack.layers[0]! });
      }
    }

    // Present keys/values of all n positions.
    const cache = new Map<string, RuntimeTensor>();
    for (let l = 0; l < layers; l++) {
      for (const name of [tapName('present_key', 'self', l), tapName('present_value', 'self', l)]) {
        const t = fresh > 0 ? out[name] : prev!.cache.get(name);
        if (!t) throw new Error(`graph output ${name} missing`);
        cache.set(name, fresh > 0 ? t : leading(t, n, name));
      }
    }

    const trace = model.assemble(tokens, Object.fromEntries(rows));
    let predictions: Prediction[] | undefined;
    if (req.topK > 0) {
      const tokenText = (id: number) => model.tokenizer?.idToToken(id) ?? String(id);
      const keptPredictions = reuse > 0 ? (prev!.predictions ?? []).filter((x) => x.position < reuse) : [];
      let fresher: Prediction[] = [];
      if (fresh > 0) {
        const logits = out.logits;
        if (!logits || logits.dims.length !== 3) throw new Error('graph output logits missing');
        const vocab = logits.dims[2]!;
        fresher = topKPredictions({ rows: fresh, vocab, data: f32(logits, 'logits') }, Array.from({ length: fresh }, (_, i) => i), req.topK, 'next', tokenText).map((x) => ({ ...x, position: x.position + reuse }));
      }
      predictions = [...keptPredictions, ...fresher];
      trace.predictions = predictions;
    }
    const kept: Kept = { key, ids, rows, cache, predictions, bytes: bytesOf(rows) + bytesOf(cache) + 64 * n };
    // An identical id list replaces the kept one.
    this.replace(kept);
    return { trace, reused: reuse, computed: fresh };
  }
}
