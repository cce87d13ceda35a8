/**
 * `pytorch_model.bin` (torch.save zip format, PyTorch ≥ 1.6): `<top>/data.pkl` holds the
 * state_dict as a pickle whose tensors point, by persistent id, at raw storages `<top>/data/<key>`.
 * The pickle is interpreted by a restricted VM that only rebuilds tensors; nothing is executed.
 */
import { AttnscopeError, quote, sanitize } from '../core/errors.js';
import { numel, type FloatTensor } from '../core/tensor.js';
import { openFileSource, type ByteSource } from './byte-source.js';
import { DTYPE_BYTES, decodeToFloat32 } from './dtypes.js';
import { PickleCallable, unpickle, type PickleValue } from './pickle.js';
import { openSharded } from './sharded.js';
import type { StoredDType, WeightStore } from './weights.js';
import { entryDataOffset, readZipDirectory, type ZipEntry } from './zip.js';

/** A storage class such as torch.FloatStorage, as referenced in a persistent id. */
class StorageType {
  constructor(readonly dtype: StoredDType) {}
}

/** One raw storage file of the archive. */
class Storage {
  private dataOffset: Promise<number> | undefined;
  constructor(
    readonly key: string,
    readonly dtype: StoredDType,
    readonly numel: number,
    readonly entry: ZipEntry,
  ) {}

  /** Absolute file offset of the storage's first byte (read from the zip local header once). */
  offset(source: ByteSource): Promise<number> {
    this.dataOffset ??= entryDataOffset(source, this.entry);
    return this.dataOffset;
  }
}

/** A tensor as a strided view of a storage. */
class TensorRef {
  constructor(
    readonly storage: Storage,
    readonly storageOffset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
  ) {}
}

/** A state_dict pickle is a few bytes per tensor; the tensor data lives in separate entries. */
const MAX_PICKLE_BYTES = 1 << 30;

type Ext = StorageType | Storage | TensorRef;
type Value = PickleValue<Ext>;

const STORAGE_TYPES: Record<string, StoredDType> = {
  FloatStorage: 'F32',
  DoubleStorage: 'F64',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

function isCount(value: Value | undefined): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function countList(value: Value | undefined): number[] | undefined {
  return Array.isArray(value) && value.every(isCount) ? (value as number[]) : undefined;
}

/** The allow-list: the only Python globals a state_dict pickle may reference. */
function allowedGlobals(label: string): Map<string, Value> {
  const bad = (what: string): never => {
    throw new AttnscopeError(`${label}: malformed tensor in pickle (${what})`);
  };
  const rebuildTensor = (args: Value[]): Value => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof Storage)) return bad('storage is not a storage reference');
    const shape = countList(size) ?? bad('size is not a tuple of integers');
    const strides = countList(stride) ?? bad('stride is not a tuple of non-negative integers');
    if (!isCount(offset) || strides.length !== shape.length) return bad('bad storage offset or stride');
    if (numel(shape) > 0) {
      const last = shape.reduce((sum, d, i) => sum + (d - 1) * strides[i]!, offset);
      if (!Number.isSafeInteger(last) || last >= storage.numel) {
        throw new AttnscopeError(
          `${label}: tensor of shape ${sanitize(`[${shape.join(', ')}]`, 80)} at offset ${offset} reaches past the end of storage ${quote(storage.key)} (${storage.numel} elements)`,
        );
      }
    }
    return new TensorRef(storage, offset, shape, strides);
  };
  const globals = new Map<string, Value>([
    ['torch._utils._rebuild_tensor_v2', new PickleCallable<Ext>('_rebuild_tensor_v2', rebuildTensor)],
    ['torch._utils._rebuild_tensor', new PickleCallable<Ext>('_rebuild_tensor', rebuildTensor)],
    [
      'torch._utils._rebuild_parameter',
      new PickleCallable<Ext>('_rebuild_parameter', (args: Value[]) => (args[0] instanceof TensorRef ? args[0] : bad('parameter data is not a tensor'))),
    ],
    [
      'collections.OrderedDict',
      new PickleCallable<Ext>('OrderedDict', (args: Value[]) => (args.length === 0 ? new Map() : bad('OrderedDict with arguments'))),
    ],
  ]);
  for (const [name, dtype] of Object.entries(STORAGE_TYPES)) globals.set(`torch.${name}`, new StorageType(dtype));
  return globals;
}

function storageLoader(label: string, prefix: string, entries: Map<string, ZipEntry>) {
  const storages = new Map<string, Storage>();
  return (pid: Value): Value => {
    const [kind, type, key, , count] = Array.isArray(pid) ? pid : [];
    if (kind !== 'storage' || !(type instanceof StorageType) || typeof key !== 'string' || !isCount(count)) {
      throw new AttnscopeError(`${label}: unsupported persistent id in pickle (expected a tensor storage)`);
    }
    const known = storages.get(key);
    if (known) return known;
    const entry = entries.get(`${prefix}/data/${key}`);
    if (!entry) throw new AttnscopeError(`${label}: storage ${quote(key)} is missing from the archive`);
    if (entry.size < count * DTYPE_BYTES[type.dtype]) {
      throw new AttnscopeError(
        `${label}: storage '${key}' has ${entry.size} bytes but ${count} ${type.dtype} values need ${count * DTYPE_BYTES[type.dtype]}`,
      );
    }
    const storage = new Storage(key, type.dtype, count, entry);
    storages.set(key, storage);
    return storage;
  };
}

/** Finds `<top>/data.pkl`; the top folder's name varies with how the file was saved. */
function archivePrefix(label: string, entries: Map<string, ZipEntry>): string {
  for (const name of entries.keys()) {
    const match = /^([^/]+)\/data\.pkl$/.exec(name);
    if (match) return match[1]!;
  }
  throw new AttnscopeError(`${label}: zip archive has no <name>/data.pkl (not a torch.save checkpoint)`);
}

async function readEntry(source: ByteSource, entry: ZipEntry): Promise<Uint8Array> {
  return source.read(await entryDataOffset(source, entry), entry.size);
}

/** Copies a strided view (non-negative strides, relative to the span start) into a dense array. */
function gather(span: Float32Array, shape: readonly number[], stride: readonly number[]): Float32Array {
  const out = new Float32Array(numel(shape));
  const index = new Array<number>(shape.length).fill(0);
  let src = 0;
  for (let i = 0; i < out.length; i++) {
    out[i] = span[src]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      src += stride[d]!;
      if (++index[d]! < shape[d]!) break;
      src -= stride[d]! * shape[d]!;
      index[d] = 0;
    }
  }
  return out;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

class PytorchBinFile implements WeightStore {
  constructor(
    private readonly source: ByteSource,
    private readonly tensors: ReadonlyMap<string, TensorRef>,
  ) {}

  private ref(name: string): TensorRef {
    const ref = this.tensors.get(name);
    if (!ref) throw new AttnscopeError(`${this.source.label}: no tensor named ${quote(name)}`);
    return ref;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }
  has(name: string): boolean {
    return this.tensors.has(name);
  }
  shape(name: string): number[] {
    return [...this.ref(name).shape];
  }
  dtype(name: string): StoredDType {
    return this.ref(name).storage.dtype;
  }

  async get(name: string): Promise<FloatTensor> {
    const { storage, storageOffset, shape, stride } = this.ref(name);
    const count = numel(shape);
    if (count === 0) return { shape: [...shape], data: new Float32Array(0) };
    const contiguous = isContiguous(shape, stride);
    const span = contiguous ? count : shape.reduce((sum, d, i) => sum + (d - 1) * stride[i]!, 1);
    const size = DTYPE_BYTES[storage.dtype];
    const start = (await storage.offset(this.source)) + storageOffset * size;
    const values = decodeToFloat32(storage.dtype, await this.source.read(start, span * size));
    return { shape: [...shape], data: contiguous ? values : gather(values, shape, stride) };
  }

  close(): Promise<void> {
    return this.source.close();
  }
}

/** Opens a torch.save zip checkpoint without executing its pickle. */
export async function openPytorchBin(path: string, label: string = path): Promise<WeightStore> {
  const source = await openFileSource(path, label);
  try {
    const head = await source.read(0, Math.min(4, source.size));
    if (head[0] === 0x80) {
      throw new AttnscopeError(
        `${label}: legacy torch.save format (PyTorch < 1.6) is not supported; re-save it with a recent PyTorch or convert it to safetensors`,
      );
    }
    const entries = await readZipDirectory(source);
    const prefix = archivePrefix(label, entries);
    const byteorder = entries.get(`${prefix}/byteorder`);
    if (byteorder && new TextDecoder().decode(await readEntry(source, byteorder)).trim() !== 'little') {
      throw new AttnscopeError(`${label}: big-endian checkpoints are not supported`);
    }
    const pickleEntry = entries.get(`${prefix}/data.pkl`)!;
    if (pickleEntry.size > MAX_PICKLE_BYTES) throw new AttnscopeError(`${label}: data.pkl is implausibly large (${pickleEntry.size} bytes)`);
    const pickle = await readEntry(source, pickleEntry);
    const root = unpickle(pickle, {
      label,
      globals: allowedGlobals(label),
      refusal: 'only tensor rebuilding is allowed',
      persistentLoad: storageLoader(label, prefix, entries),
    });
    if (!(root instanceof Map)) throw new AttnscopeError(`${label}: pickle does not hold a state_dict (a dict of tensors)`);
    const tensors = new Map<string, TensorRef>();
    for (const [name, value] of root) {
      if (typeof name === 'string' && value instanceof TensorRef) tensors.set(name, value);
    }
    if (tensors.size === 0) throw new AttnscopeError(`${label}: state_dict holds no tensors`);
    return new PytorchBinFile(source, tensors);
  } catch (err) {
    await source.close();
    throw err;
  }
}

/** Opens a sharded `pytorch_model.bin.index.json` checkpoint. */
export function openPytorchBinSharded(
  indexPath: string,
  resolve?: (file: string) => Promise<string | undefined>,
): Promise<WeightStore> {
  return openSharded(indexPath, { openShard: (path) => openPytorchBin(path), resolve });
}
