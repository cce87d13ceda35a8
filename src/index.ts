/** attnscope's library API. */
export { loadModel, type LoadOptions } from './engine/load.js';
export { Model, type TraceOptions, type ModelDescription, type ModelParts, type ModelTokenizer, type GraphCacheHooks } from './engine/model.js';
export type { GenerateOptions } from './generation/decode.js';
export type { SamplingOptions } from './generation/sampling.js';
export type { Trace, Token, ModelInfo, LayerStack, StackMap, StackName } from './core/trace.js';
export { attentionAt } from './core/trace.js';
export { AttnscopeError } from './core/errors.js';
export { openTraceFile, readTraceFile, writeTraceFile, writeTraceJsonTo, writeTraceSafetensors, type TraceFileContents } from './io/trace-file.js';
export { attentionWarnings } from './core/trace-check.js';
export { supportedModelTypes } from './models/registry.js';
export type { Runtime, GraphSession, RuntimeTensor } from './runtime/runtime.js';
