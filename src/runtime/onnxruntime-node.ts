/** Runs graphs with onnxruntime-node (native, multi-threaded CPU). */
import os from 'node:os';
// Must come before onnxruntime-node: it switches the runtime's telemetry off before the binding loads.
import './ort-environment.js';
import ort from 'onnxruntime-node';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { GraphSession, ModelBytes, Runtime, RuntimeTensor, SessionOptions, TensorData } from './runtime.js';

// onnxruntime prints its own (ANSI-coloured) log lines on stderr; every failure it reports also
// reaches us as an exception, which becomes the tool's one clear line. Keep the runtime quiet.
ort.env.logLevel = 'fatal';

function toOrt(t: RuntimeTensor): ort.Tensor {
  return new ort.Tensor(t.type, t.data as ort.Tensor.DataType, t.dims);
}

function fromOrt(t: ort.Tensor): RuntimeTensor {
  const type = t.type as RuntimeTensor['type'];
  let data = t.data as unknown as TensorData;
  // Newer runtimes may hand out float16 as Float16Array; keep the raw bits either way.
  if (type === 'float16' && !(data instanceof Uint16Array)) {
    const view = data as unknown as ArrayBufferView;
    data = new Uint16Array(view.buffer, view.byteOffset, view.byteLength / 2);
  }
  return { type, dims: t.dims, data };
}

class NodeSession implements GraphSession {
  constructor(private readonly session: ort.InferenceSession) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  async run(feeds: Readonly<Record<string, RuntimeTensor>>, fetches?: readonly string[]): Promise<Record<string, RuntimeTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(v);
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await this.session.run(ortFeeds, fetches ? [...fetches] : [...this.session.outputNames]);
    } catch (err) {
      // The graphs are tested on every architecture: what fails while running one is a
      // checkpoint whose tensors contradict its config.json — an index beyond a table the config
      // promised larger (positions, vocab_size, type_vocab_size, relative buckets), or a head
      // count the projection weights do not split into.
      const message = String((err as Error)?.message ?? err);
      const detail = `onnxruntime: ${sanitize(message.split('\n')[0] ?? '', 240)}`;
      if (/out of data bounds/.test(message)) {
        throw new AttnscopeError(`an index lies beyond a table of the checkpoint, which is smaller than its config.json says (${detail})`, { cause: err });
      }
      if (/cannot be reshaped|Incompatible dimensions|ShapeInferenceError|shape mismatch/i.test(message)) {
        throw new AttnscopeError(`the checkpoint's tensors do not fit its config.json (${detail})`, { cause: err });
      }
      throw err;
    }
    const out: Record<string, RuntimeTensor> = {};
    for (const [k, v] of Object.entries(results)) out[k] = fromOrt(v);
    return out;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** More threads than this is a typo, not a machine (onnxruntime fails allocating them with std::bad_alloc). */
const MAX_THREADS = 1024;

function ortOptions(options?: SessionOptions, node: NodeRuntimeOptions = {}): ort.InferenceSession.SessionOptions {
  const threads = options?.threads;
  if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= MAX_THREADS)) {
    throw new AttnscopeError(`--threads ${threads}: allowed: an integer from 1 to ${MAX_THREADS}`);
  }
  return {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads ?? Math.max(1, os.availableParallelism()),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    logSeverityLevel: 4,
    // Without the arena, a session's buffers go back to the system after each run instead of
    // staying with the session (sessions run in turn, layer by layer, would each keep their peak).
    ...(options?.arena === false ? { enableCpuMemArena: false, enableMemPattern: false } : {}),
    ...(options?.memoryPattern === false ? { enableMemPattern: false } : {}),
    // Without pre-packing, MatMul reads its weights where they are: in the graph cache's
    // memory-mapped files (pages the kernel can drop and read again) instead of a packed copy in
    // anonymous memory as large as the float32 weights.
    extra: {
      session: {
        // Sessions run one after another (layer by layer) leave their threads idle: spinning
        // threads of the session that just ran would take the cores from the next one.
        ...(options?.spinning === false ? { intra_op: { allow_spinning: '0' } } : {}),
        ...((node.packWeights ?? packWeightsSetting()) ? {} : { disable_prepacking: '1' }),
      },
      // ... and 16-bit weights are converted to float32 where they are used, not folded into
      // float32 constants when the session is made (which would hold all of them in memory).
      ...((node.packWeights ?? packWeightsSetting()) ? {} : { optimization: { disable_specified_optimizers: 'ConstantFolding' } }),
    },
  };
}

/** Options of the onnxruntime-node runtime. */
export interface NodeRuntimeOptions {
  /**
   * Let onnxruntime pre-pack MatMul weights (default: $ATTNSCOPE_PACK_WEIGHTS, else true): the
   * fastest runs, but a packed copy of every float32 weight in memory. false keeps the weights
   * memory-mapped from the graph cache in the checkpoint's dtype (16-bit ones converted to float32
   * where they are used, not folded into constants when the session is made): memory holds little
   * more than the activations, the weights' pages are the kernel's to keep or drop (a model larger
   * than the free memory still opens and runs, reading its weights from disk as needed).
   */
  packWeights?: boolean;
}

/** $ATTNSCOPE_PACK_WEIGHTS: 'off', '0' or 'false' turn pre-packing off; unset or 'on', '1', 'true' keep it. */
export function packWeightsSetting(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.ATTNSCOPE_PACK_WEIGHTS;
  if (v === undefined || v === '' || v === 'on' || v === '1' || v === 'true') return true;
  if (v === 'off' || v === '0' || v === 'false') return false;
  throw new AttnscopeError(`ATTNSCOPE_PACK_WEIGHTS=${sanitize(v, 20)}: allowed: on, off, 1, 0, true, false`);
}

/**
 * onnxruntime refusing a graph built from a checkpoint: its graphs are tested on every
 * architecture, so what fails here is a checkpoint whose tensors contradict its config.json (a
 * weight of the wrong shape, a size the runtime rejects). Reported as such, on one line.
 */
async function creating(what: Promise<ort.InferenceSession>, cachedFile?: string): Promise<GraphSession> {
  try {
    return new NodeSession(await what);
  } catch (err) {
    if (err instanceof AttnscopeError) throw err;
    const detail = sanitize(String((err as Error)?.message ?? err).trim().split('\n')[0] ?? '', 300);
    if (/bad_alloc|out of memory/i.test(detail)) {
      throw new AttnscopeError(`not enough memory for onnxruntime to prepare the model (${detail})`, { cause: err });
    }
    if (cachedFile !== undefined) {
      throw new AttnscopeError(`cannot open the cached graph ${cachedFile} (${detail}); 'attnscope cache clear' removes it`, { cause: err });
    }
    throw new AttnscopeError(`the checkpoint's tensors do not fit its config.json: onnxruntime rejects the model (${detail})`, { cause: err });
  }
}

/** The onnxruntime-node runtime with `node` options. */
export function nodeRuntimeWith(node: NodeRuntimeOptions): Runtime {
  return {
    name: 'onnxruntime-node',
    async createSession(model: ModelBytes, options?: SessionOptions): Promise<GraphSession> {
      return creating(
        ort.InferenceSession.create(model.model, {
          ...ortOptions(options, node),
          externalData: model.externalData.map(({ path, data }) => ({ path, data })),
        }),
      );
    },
    async createSessionFromFile(path: string, options?: SessionOptions): Promise<GraphSession> {
      // onnxruntime memory-maps the external weight files next to the model.
      return creating(ort.InferenceSession.create(path, ortOptions(options, node)), path);
    },
  };
}

/** onnxruntime-node with the default options ($ATTNSCOPE_PACK_WEIGHTS read when a session is made). */
export const nodeRuntime: Runtime = nodeRuntimeWith({});
