/** Typed, validated access to a checkpoint's config.json. */
import { AttnscopeError, quote } from '../core/errors.js';

export type RawConfig = Readonly<Record<string, unknown>>;

/** The values a config.json field may take: a range, and whether it must be an integer. */
interface Range {
  min: number;
  max: number;
  /** min itself is not allowed (a positive number). */
  above?: boolean;
  integer?: boolean;
}

const LAYERS: Range = { min: 1, max: 1024, integer: true };
const WIDTH: Range = { min: 1, max: 2 ** 20, integer: true };
const HEADS: Range = { min: 1, max: 4096, integer: true };
const POSITIONS: Range = { min: 1, max: 2 ** 24, integer: true };
const EPS: Range = { min: 0, max: 1 };
const BASE: Range = { min: 0, max: 1e12, above: true };

/**
 * Ranges of the config.json fields the architectures read, checked whenever a field is read.
 * Outside them a checkpoint cannot be real: the bounds keep a crafted config from building a graph
 * for ever (a billion layers), allocating absurd buffers, or reaching the runtime with a size it
 * fails on without a message (zero heads, a negative epsilon, a rotary base of 0).
 */
const RANGES: Readonly<Record<string, Range>> = {
  num_hidden_layers: LAYERS, n_layer: LAYERS, n_layers: LAYERS, num_layers: LAYERS, num_decoder_layers: LAYERS,
  encoder_layers: LAYERS, decoder_layers: LAYERS, num_hidden_groups: LAYERS, inner_group_num: LAYERS,
  hidden_size: WIDTH, n_embd: WIDTH, d_model: WIDTH, dim: WIDTH, embedding_size: WIDTH, intermediate_size: WIDTH,
  n_inner: WIDTH, d_ff: WIDTH, hidden_dim: WIDTH, encoder_ffn_dim: WIDTH, decoder_ffn_dim: WIDTH, d_kv: WIDTH, head_dim: WIDTH,
  num_attention_heads: HEADS, n_head: HEADS, n_heads: HEADS, num_heads: HEADS, num_key_value_heads: HEADS,
  encoder_attention_heads: HEADS, decoder_attention_heads: HEADS,
  vocab_size: { min: 1, max: 2 ** 26, integer: true },
  type_vocab_size: { min: 0, max: 2 ** 16, integer: true },
  // RoBERTa-like models number positions after the padding id.
  pad_token_id: { min: 0, max: 2 ** 26, integer: true },
  max_position_embeddings: POSITIONS, n_positions: POSITIONS, n_ctx: POSITIONS,
  relative_attention_num_buckets: { min: 1, max: 2 ** 16, integer: true },
  relative_attention_max_distance: POSITIONS,
  sliding_window: { min: 1, max: 2 ** 30, integer: true },
  max_window_layers: { min: 0, max: 2 ** 20, integer: true },
  layer_norm_eps: EPS, layer_norm_epsilon: EPS, rms_norm_eps: EPS, norm_eps: EPS,
  rope_theta: BASE, rotary_emb_base: BASE,
  partial_rotary_factor: { min: 0, max: 1, above: true }, rotary_pct: { min: 0, max: 1, above: true },
};

/**
 * Fields that are never null in a real config (unlike n_inner, head_dim or sliding_window, where
 * null means "the default"): a null there is refused rather than silently replaced by a default.
 */
const NEVER_NULL = new Set([
  ...Object.entries(RANGES).filter(([, r]) => r === LAYERS).map(([k]) => k),
  'hidden_size', 'n_embd', 'd_model', 'dim',
  ...Object.entries(RANGES).filter(([k, r]) => r === HEADS && k !== 'num_key_value_heads').map(([k]) => k),
  'vocab_size',
]);

/** The layer-count fields of a config and their values, e.g. "num_hidden_layers is 2" (for messages about missing layer tensors). */
export function layerCountFields(config: ModelConfig): string {
  const out: string[] = [];
  for (const [k, r] of Object.entries(RANGES)) {
    if (r !== LAYERS) continue;
    if (Object.hasOwn(config.raw, k)) out.push(`${k} is ${quote(config.raw[k], 20)}`);
    else if (config.defaulted.has(k)) out.push(`${k} is absent (default ${config.defaulted.get(k)})`);
  }
  return out.join(', ');
}

function allowed(r: Range): string {
  const kind = r.integer ? 'an integer' : 'a number';
  return r.above ? `${kind} above ${r.min} and at most ${r.max}` : `${kind} from ${r.min} to ${r.max}`;
}

/** Throws when config.json's `key` (value `v`) lies outside its range. */
export function checkConfigValue(source: string, key: string, v: number): void {
  const r = RANGES[key];
  if (!r) return;
  const ok = (r.above ? v > r.min : v >= r.min) && v <= r.max && (!r.integer || Number.isInteger(v));
  if (!ok) throw new AttnscopeError(`${source}: ${key} is ${v}; allowed: ${allowed(r)}`);
}

export class ModelConfig {
  /** Keys read through a fallback because config.json lacks them, with the value used (for messages). */
  readonly defaulted = new Map<string, number>();

  constructor(
    readonly raw: RawConfig,
    /** Where the config came from, for error messages. */
    readonly source = 'config.json',
  ) {}

  get modelType(): string {
    const t = this.raw.model_type;
    if (typeof t !== 'string' || t === '') throw new AttnscopeError(`${this.source}: no model_type`);
    return t;
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  /** The first of `keys` present, as a number; `fallback` when none is (error when no fallback). */
  num(keys: string | readonly string[], fallback?: number): number {
    for (const key of typeof keys === 'string' ? [keys] : keys) {
      const v = this.raw[key];
      if (typeof v === 'number' && Number.isFinite(v)) {
        checkConfigValue(this.source, key, v);
        return v;
      }
      if (v === null && NEVER_NULL.has(key)) {
        const r = RANGES[key];
        throw new AttnscopeError(`${this.source}: ${key} is null${r ? `; allowed: ${allowed(r)}` : '; it must be a number'}`);
      }
      if (v !== undefined && v !== null) throw new AttnscopeError(`${this.source}: ${key} should be a number, got ${quote(v)}`);
    }
    if (fallback !== undefined) {
      this.defaulted.set(typeof keys === 'string' ? keys : keys[0]!, fallback);
      return fallback;
    }
    throw new AttnscopeError(`${this.source}: missing ${typeof keys === 'string' ? keys : keys.join(' / ')}`);
  }

  int(keys: string | readonly string[], fallback?: number): number {
    const v = this.num(keys, fallback);
    if (!Number.isInteger(v)) throw new AttnscopeError(`${this.source}: ${typeof keys === 'string' ? keys : keys.join(' / ')} should be an integer, got ${v}`);
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.raw[key];
    if (typeof v === 'string') return v;
    if (fallback !== undefined) return fallback;
    throw new AttnscopeError(`${this.source}: missing ${key}`);
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key];
    return typeof v === 'boolean' ? v : fallback;
  }

  /** A nested object value (e.g. rope_scaling), or undefined. */
  object(key: string): RawConfig | undefined {
    const v = this.raw[key];
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as RawConfig) : undefined;
  }
}

/** The config.json keys naming the model width (the residual stream every block reads and writes). */
const WIDTH_KEYS = ['hidden_size', 'n_embd', 'd_model', 'dim'] as const;

/** Norm layers inside blocks: their weight and bias are one value per hidden unit. */
const BLOCK_NORM = /(^|\.)(LayerNorm|layer_norm|input_layernorm|post_attention_layernorm|pre_feedforward_layernorm|post_feedforward_layernorm|ln_1|ln_2|self_attn_layer_norm|final_layer_norm|full_layer_layer_norm)\.(weight|bias|gamma|beta)$/;

/**
 * Checks a checkpoint tensor inside a transformer block (its name has a layer index) against the
 * model width of config.json, before it reaches the graph: every 2-D projection of a block reads
 * or writes the hidden state, so one of its dimensions is the width, and a block's norm holds one
 * value per hidden unit. A checkpoint that contradicts its config is refused naming the tensor
 * and the field (the runtime would otherwise fail on the graph without saying why).
 */
export function checkBlockWeightShape(config: ModelConfig, name: string, dims: readonly number[]): void {
  if (!/\.\d+\./.test(name) || /relative_attention_bias|embed/.test(name)) return;
  const key = WIDTH_KEYS.find((k) => typeof config.raw[k] === 'number');
  if (key === undefined) return;
  const width = config.raw[key] as number;
  const shape = `[${dims.join(', ')}]`;
  if (dims.length === 2 && name.endsWith('.weight') && !dims.includes(width)) {
    throw new AttnscopeError(`${config.source}: ${key} is ${width}, but the checkpoint's ${quote(name)} has shape ${shape} (a block's projection has ${width} on one side)`);
  }
  if (dims.length === 1 && BLOCK_NORM.test(name) && dims[0] !== width) {
    throw new AttnscopeError(`${config.source}: ${key} is ${width}, but the checkpoint's ${quote(name)} has shape ${shape} (a block's norm has ${width} values)`);
  }
}

/** What the attention projections must hold: heads × head size rows (queries), kvHeads × head size (keys, values). */
export interface AttentionShape {
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
}

const QUERY = /(\.attention\.self\.query|\.attention\.query|\.q_lin|\.q_proj|Attention\.q)\.weight$/;
const KEY_VALUE = /(\.attention\.self\.(key|value)|\.attention\.(key|value)|\.[kv]_lin|\.[kv]_proj|Attention\.[kv])\.weight$/;

/**
 * Checks an attention projection (separate query, key, value weights [out, in]) against the head
 * layout the architecture derived from config.json: its rows are heads × head size. Fused
 * projections (GPT-2's c_attn, GPT-NeoX's query_key_value) are left to the width check.
 */
export function checkAttentionWeightShape(config: ModelConfig, shape: AttentionShape, name: string, dims: readonly number[]): void {
  if (dims.length !== 2) return;
  const query = QUERY.test(name);
  if (!query && !KEY_VALUE.test(name)) return;
  const heads = query ? shape.numHeads : shape.numKeyValueHeads;
  const rows = heads * shape.headDim;
  if (dims[0] === rows) return;
  const fields = ['num_attention_heads', 'n_head', 'n_heads', 'num_heads', 'encoder_attention_heads', 'decoder_attention_heads', ...(query ? [] : ['num_key_value_heads'])]
    .filter((k) => Object.hasOwn(config.raw, k));
  throw new AttnscopeError(
    `${config.source}: the checkpoint's ${quote(name)} has shape [${dims.join(', ')}], but ${heads} ${query ? 'heads' : 'key/value heads'} of size ${shape.headDim} ` +
      `need ${rows} rows (heads: ${fields.join(', ') || 'default'}; head size: d_kv or head_dim, else the width over the heads)`,
  );
}
