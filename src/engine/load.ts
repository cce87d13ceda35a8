/**
 * The Node loader around the model core: resolves a model source (a directory, a Hub id, the
 * embedded model), reads config.json, generation_config.json and the tokenizer, opens the
 * weights, sets up the graph cache and runs graphs with onnxruntime-node.
 */
import { readFile } from 'node:fs/promises';
import { AttnscopeError } from '../core/errors.js';
import { defaultModelDir } from '../default-model.js';
import { checkpointCacheDir, findCachedModel, graphCacheRoot, readCachedWeight, writeCachedModel } from '../io/graph-cache.js';
import type { ModelFiles } from '../io/model-files.js';
import { resolveModelSource } from '../io/model-source.js';
import { openWeights } from '../io/open-weights.js';
import { ModelConfig } from '../models/config.js';
import { architectureFor } from '../models/registry.js';
import { nodeRuntime, nodeRuntimeWith } from '../runtime/onnxruntime-node.js';
import type { Runtime } from '../runtime/runtime.js';
import { loadTokenizer, type AttnTokenizer } from '../tokenizer/load-tokenizer.js';
import { loadSentencePieceVocabTokenizer } from '../tokenizer/sentencepiece-vocab-tokenizer.js';
import { sentencePieceFileName } from '../tokenizer/sentencepiece-convert.js';
import { Model, type GraphCacheHooks } from './model.js';

export interface LoadOptions {
  /** Hub revision (branch, tag or commit); also accepted as `id@revision`. */
  revision?: string;
  /** Never touch the network (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Graph runtime (default: onnxruntime-node). */
  runtime?: Runtime;
  /** Threads per operator (default: all cores). */
  threads?: number;
  /** Show download progress on stderr. */
  progress?: boolean;
  /**
   * Directory of the graph cache (prepared graphs and weights kept on disk between runs), or
   * false for none. Default: $ATTNSCOPE_CACHE, else ~/.cache/attnscope/graphs ('off' disables).
   */
  graphCache?: string | false;
  /**
   * Let onnxruntime pre-pack the weights of matrix products (default: $ATTNSCOPE_PACK_WEIGHTS,
   * else true; ignored with `runtime`). false: the weights stay memory-mapped from the graph cache
   * instead of a packed float32 copy in memory, for models larger than the free memory.
   */
  packWeights?: boolean;
}

/** Reads a JSON object file, naming the file in the error when it is not one. */
async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new AttnscopeError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AttnscopeError(`${path}: not a JSON object`);
  return raw as Record<string, unknown>;
}

async function readConfig(files: ModelFiles): Promise<ModelConfig> {
  const path = await files.path('config.json');
  if (!path) throw new AttnscopeError(`${files.name}: not a model directory (no config.json)`);
  return new ModelConfig(await readJsonObject(path), path);
}

async function readGenerationConfig(files: ModelFiles): Promise<Record<string, unknown>> {
  const path = await files.path('generation_config.json');
  return path ? readJsonObject(path) : {};
}

async function readTokenizer(files: ModelFiles, modelType: string): Promise<AttnTokenizer | null> {
  const tokenizerJson = await files.path('tokenizer.json');
  if (!tokenizerJson) {
    // Marian checkpoints as the Hub has them (Helsinki-NLP/opus-mt-*): source.spm, target.spm, vocab.json.
    const targetSpm = await files.path('target.spm');
    const sourceSpm = targetSpm ? await files.path('source.spm') : undefined;
    const vocabJson = sourceSpm ? await files.path('vocab.json') : undefined;
    if (targetSpm && sourceSpm && vocabJson) {
      return loadSentencePieceVocabTokenizer({
        sourceSpm, vocabJson, targetSpm,
        ...optionalPaths({
          targetVocabJson: await files.path('target_vocab.json'),
          tokenizerConfig: await files.path('tokenizer_config.json'),
          specialTokensMap: await files.path('special_tokens_map.json'),
        }),
      });
    }
    // No tokenizer.json (microsoft/deberta-v3-*): the slow tokenizer's SentencePiece model, converted.
    const tokenizerConfig = await files.path('tokenizer_config.json');
    const name = sentencePieceFileName(tokenizerConfig ? await readFile(tokenizerConfig, 'utf8') : undefined, modelType);
    const sentencePiece = name ? await files.path(name) : undefined;
    if (!sentencePiece) return null;
    return loadTokenizer({
      sentencePiece,
      modelType,
      tokenizerConfig,
      specialTokensMap: await files.path('special_tokens_map.json'),
      addedTokensJson: await files.path('added_tokens.json'),
    });
  }
  // Marian's target side: target.spm with the ids of vocab.json (or target_vocab.json).
  const targetSpm = await files.path('target.spm');
  return loadTokenizer({
    tokenizerJson,
    tokenizerConfig: await files.path('tokenizer_config.json'),
    specialTokensMap: await files.path('special_tokens_map.json'),
    ...(targetSpm ? { targetSpm, vocabJson: await files.path('vocab.json'), targetVocabJson: await files.path('target_vocab.json') } : {}),
  });
}

/** The entries of `paths` that are set. */
function optionalPaths<K extends string>(paths: Record<K, string | undefined>): Partial<Record<K, string>> {
  return Object.fromEntries(Object.entries(paths).filter(([, v]) => v !== undefined)) as Partial<Record<K, string>>;
}

/**
 * The graph cache of one checkpoint in `dir`, as the model core's hooks. A graph not cached yet is
 * prepared into the cache first, its weights streamed one at a time (read, transposed, converted,
 * written, let go), and opened from there: onnxruntime memory-maps the weight files, so preparing
 * a checkpoint never holds the whole model in JavaScript (the model core falls back to building the
 * session in memory when the cache cannot be written).
 */
function graphCacheIn(dir: string): GraphCacheHooks {
  return {
    find: async (built) => (await findCachedModel(dir, built)) ?? (await writeCachedModel(dir, built)),
    write: async (built) => {
      await writeCachedModel(dir, built);
    },
    weight: (w) => readCachedWeight(dir, w),
  };
}

/**
 * Opens a checkpoint: a local directory, a Hub id (`org/name[@revision]`, through the Hugging
 * Face cache), or, with no source, the embedded stories260k model. Files already resolved
 * (ModelFiles) are opened as they are (`attnscope serve` resolves Hub ids without local paths).
 */
export async function loadModel(source?: string | ModelFiles, options: LoadOptions = {}): Promise<Model<AttnTokenizer>> {
  const files = typeof source === 'object' ? source : await resolveModelSource(source ?? defaultModelDir(), {
    revision: options.revision,
    offline: options.offline,
    progress: options.progress,
  });
  const config = await readConfig(files);
  const architecture = architectureFor(config.modelType);
  const architectureInfo = architecture.describe(config); // validates the config early
  const tokenizer = await readTokenizer(files, config.modelType);
  const weights = await openWeights(files);
  try {
    const generationConfig = await readGenerationConfig(files);
    const cacheRoot = options.graphCache === false ? undefined : (options.graphCache ?? graphCacheRoot());
    const cacheDir = cacheRoot ? await checkpointCacheDir(cacheRoot, files.dir, config.modelType) : undefined;
    return new Model({
      name: files.name,
      config,
      architecture,
      architectureInfo,
      tokenizer,
      weights,
      runtime: options.runtime ?? (options.packWeights === undefined ? nodeRuntime : nodeRuntimeWith({ packWeights: options.packWeights })),
      threads: options.threads,
      generationConfig,
      graphCache: cacheDir ? graphCacheIn(cacheDir) : undefined,
    });
  } catch (e) {
    await weights.close();
    throw e;
  }
}
