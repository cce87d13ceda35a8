/** Picks and opens the weights of a model checkpoint, whatever their format. */
import { AttnscopeError } from '../core/errors.js';
import type { ModelFiles } from './model-files.js';
import { openPytorchBin, openPytorchBinSharded } from './pytorch-bin.js';
import { openSafetensors, openSafetensorsSharded } from './safetensors.js';
import type { WeightStore } from './weights.js';

/** Weight files in order of preference, with how to open each. */
const CANDIDATES: readonly [string, (path: string, files: ModelFiles) => Promise<WeightStore>][] = [
  ['model.safetensors', (path) => openSafetensors(path)],
  ['model.safetensors.index.json', (path, files) => openSafetensorsSharded(path, (file) => files.path(file))],
  ['pytorch_model.bin', (path) => openPytorchBin(path)],
  ['pytorch_model.bin.index.json', (path, files) => openPytorchBinSharded(path, (file) => files.path(file))],
];

/**
 * Opens a checkpoint's weights: model.safetensors, else model.safetensors.index.json, else
 * pytorch_model.bin, else pytorch_model.bin.index.json.
 */
export async function openWeights(files: ModelFiles): Promise<WeightStore> {
  for (const [file, open] of CANDIDATES) {
    const path = await files.path(file);
    if (path) return open(path, files);
  }
  throw new AttnscopeError(
    `no weights found in ${files.dir} (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)`,
  );
}
