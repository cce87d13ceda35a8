/**
 * The small interface the engine runs graphs through. `onnxruntime-node` implements it in
 * Node; an `onnxruntime-web` implementation can run the very same graphs in a browser.
 */

export type TensorData = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint16Array | Uint8Array;

export interface RuntimeTensor {
  /** float16 data is carried as raw Uint16 bits. */
  readonly type: 'float32' | 'float64' | 'float16' | 'int64' | 'int32' | 'bool' | 'uint8';
  readonly dims: readonly number[];
  readonly data: TensorData;
}

export interface SessionOptions {
  /** Threads for one operator (default: all cores). */
  threads?: number;
  /**
   * Whether idle threads spin waiting for work (default: the runtime's, on). Off for sessions run
   * in turn (engine/layerwise.ts), whose spinning threads would compete with the next session's.
   */
  spinning?: boolean;
  /**
   * Whether the session keeps the memory of its buffers between runs (default: the runtime's, on).
   * Off for sessions run in turn: each would hold its own peak.
   */
  arena?: boolean;
  /**
   * Whether the session plans its buffers as one block per run after a first run of the same shapes
   * (onnxruntime's memory pattern; default: the runtime's, on). With the arena on, that block is
   * taken from the arena beside the buffers of the first run, which the arena keeps: off where a
   * session runs large inputs in turn (engine/layerwise.ts's shared segments) so the arena holds one
   * run's buffers, not two.
   */
  memoryPattern?: boolean;
}

/** An ONNX model and the external weight data it references by path. */
export interface ModelBytes {
  model: Uint8Array;
  externalData: readonly { path: string; data: Uint8Array }[];
}

export interface GraphSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Runs the graph and returns the requested outputs (all when `fetches` is omitted). */
  run(feeds: Readonly<Record<string, RuntimeTensor>>, fetches?: readonly string[]): Promise<Record<string, RuntimeTensor>>;
  release(): Promise<void>;
}

export interface Runtime {
  readonly name: string;
  createSession(model: ModelBytes, options?: SessionOptions): Promise<GraphSession>;
  /** Opens a model file (with its external weight files beside it); runtimes without a file system omit it. */
  createSessionFromFile?(path: string, options?: SessionOptions): Promise<GraphSession>;
}

export function int64Tensor(values: readonly number[], dims: readonly number[] = [1, values.length]): RuntimeTensor {
  return { type: 'int64', dims, data: BigInt64Array.from(values, (v) => BigInt(v)) };
}

export function float32Tensor(data: Float32Array, dims: readonly number[]): RuntimeTensor {
  return { type: 'float32', dims, data };
}
