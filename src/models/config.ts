/** Typed, validated access to a checkpoint's config.json. */
import { AttnscopeError } from '../core/errors.js';

export type RawConfig = Readonly<Record<string, unknown>>;

export class ModelConfig {
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
      if (typeof v === 'number' && Number.isFinite(v)) return v;
      if (v !== undefined && v !== null) throw new AttnscopeError(`${this.source}: ${key} should be a number, got ${JSON.stringify(v)}`);
    }
    if (fallback !== undefined) return fallback;
    throw new AttnscopeError(`${this.source}: missing ${typeof keys === 'string' ? keys : keys.join(' / ')}`);
  }

  int(keys: string | readonly string[], fallback?: number): number {
    const v = this.num(keys, fallback);
    if (!Number.isInteger(v)) throw new AttnscopeError(`${this.source}: ${String(keys)} should be an integer, got ${v}`);
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
