import type { FloatTensor } from '../core/tensor.js';

/** Storage dtypes a checkpoint tensor may have on disk. */
export type StoredDType = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/**
 * Read access to a checkpoint's tensors, whatever the file format (safetensors, sharded
 * safetensors, pytorch_model.bin). Floating tensors are upcast to float32 on read.
 */
export interface WeightStore {
  /** Names of every tensor in the checkpoint. */
  names(): string[];
  has(name: string): boolean;
  /** Shape of a tensor, without reading its data. */
  shape(name: string): number[];
  /** Dtype of a tensor as stored on disk. */
  dtype(name: string): StoredDType;
  /** Reads one tensor and returns it as float32. Throws an AttnscopeError naming the tensor if missing. */
  get(name: string): Promise<FloatTensor>;
  /** Releases open file handles. */
  close(): Promise<void>;
}
