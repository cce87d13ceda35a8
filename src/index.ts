/** attnscope's library API. */
export { loadModel, Model, type LoadOptions, type TraceOptions, type ModelDescription } from './engine.js';
export type { Trace, Token, ModelInfo, LayerStack, StackMap, StackName } from './core/trace.js';
export { attentionAt } from './core/trace.js';
export { AttnscopeError } from './core/errors.js';
export { readTraceFile, writeTraceFile, writeTraceJsonTo, writeTraceSafetensors } from './io/trace-file.js';
export { supportedModelTypes } from './models/registry.js';
export type { Runtime, GraphSession, RuntimeTensor } from './runtime/runtime.js';
