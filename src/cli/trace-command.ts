/** `attnscope trace [model] --text ... [--pair ...] [--ids ...] [--qk] [--out file]`. */
import { totalmem } from 'node:os';
import { AttnscopeError } from '../core/errors.js';
import { expertLoad, type Routing } from '../core/trace.js';
import { timed } from '../core/profile.js';
import { AUTO_WHOLE_BUDGET_BYTES, checkAttentionMode } from '../engine/attention-mode.js';
import { checkExecutionMode, traceModel } from '../engine/layerwise.js';
import { loadModel } from '../engine/load.js';
import { writeTraceFile, writeTraceJsonTo } from '../io/trace-file.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parseModelInput, parsePositiveInt } from './args.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote } from './parse.js';

export const TRACE_USAGE = `attnscope trace [model] (--text "..." [--pair "..."] | --ids 1,2,3 [--type-ids 0,0,1])
                [--decoder-text "..." | --decoder-ids 0,5,6 | --max-new-tokens N] [--src-lang CODE] [--tgt-lang CODE]
                [--qk] [--hidden] [--top-k N] [--deep-dive] [--logit-lens K]
                [--attention dense|on-demand|auto] [--on-demand-above N] [--execution auto|whole|layers] [--memory-budget MB]
                [--routing] [--truncate] [--out trace.json|trace.safetensors] [--revision REV] [--offline] [--threads N]

  model        a local checkpoint directory or a Hub id (org/name[@revision]);
               the embedded stories260k model when omitted
  --text       the text to trace;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text (bypass the tokenizer); --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models (t5, bart): the decoder input;
  --max-new-tokens   without either, the decoder input is generated (greedy, N tokens, default 20)
${LANGUAGE_HELP}
  --qk         include per-head queries and keys (and the terms of the scores)
  --attention  how attention is recorded: dense (every probability), on-demand (the queries,
               keys and score terms instead; any head is computed exactly when a view reads it:
               an 8k-token trace is a file of hundreds of MB, not hundreds of GB), or auto
               (default: on demand above --on-demand-above tokens)
  --on-demand-above N   auto: the most tokens traced densely (default: as many as keep every
               probability within 1 GiB, e.g. 1,365 tokens for 12 layers × 12 heads)
  --execution  how the model runs: whole (the whole graph at once), layers (one layer at a time:
               memory holds one layer's intermediates, and each layer's weights only while it
               runs), or auto (default: the whole graph while its predicted peak memory fits
               --memory-budget, layer by layer beyond)
  --memory-budget MB   auto execution: the memory a whole-graph run may take (default: 8,000 MB
               or half the machine's memory, whichever is less)
  --hidden     include the last hidden state (JSON output)
  --deep-dive  a look inside every layer: queries, keys and values per head, the token, position
               and segment embeddings, the residual stream before and after attention and after
               the MLP, and the MLP activations (fields values and layerStates)
  --logit-lens K   each layer's residual through the model's final norm and head: the K most
               likely tokens with their probabilities per layer and position (field logitLens;
               'attnscope lens' prints it as a table)
  --routing    mixture-of-experts models (mixtral, qwen2_moe): record each layer's routing
               (router probabilities, the top-k experts of each token and their weights);
               the expert load of each layer is printed to stderr
  --top-k N    add the head's N most likely tokens: at each [MASK] (masked LMs),
               or the next token at every position (causal LMs, decoders)
  --truncate   cut inputs longer than the model's maximum positions
  --out        the trace file: .json, or .safetensors for the compact binary trace (written
               atomically); JSON to stdout otherwise
${MODEL_HELP}`;

export const TRACE_OPTIONS = {
  ...INPUT_OPTIONS,
  qk: { type: 'boolean' },
  attention: { type: 'string' },
  'on-demand-above': { type: 'string' },
  execution: { type: 'string' },
  'memory-budget': { type: 'string' },
  hidden: { type: 'boolean' },
  'deep-dive': { type: 'boolean' },
  'logit-lens': { type: 'string' },
  routing: { type: 'boolean' },
  'top-k': { type: 'string' },
  'max-new-tokens': { type: 'string' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

/** The file types a trace is written as. */
export const TRACE_EXTENSIONS = ['.json', '.safetensors'] as const;

export async function traceCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, TRACE_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`trace: expected at most one model, got ${positionals.join(' ')}`);
  if (values.out !== undefined) checkOut(values.out, TRACE_EXTENSIONS, 'trace');
  const input = parseModelInput(values, 'trace', 'trace: give --text "..." or --ids 1,2,3');
  const topK = parsePositiveInt(values['top-k'], '--top-k');
  const logitLens = parsePositiveInt(values['logit-lens'], '--logit-lens');
  const maxNewTokens = parsePositiveInt(values['max-new-tokens'], '--max-new-tokens');
  const attention = checkAttentionMode(values.attention ?? 'auto', '--attention');
  const onDemandAbove = values['on-demand-above'] === undefined ? undefined : parseNonNegativeInt(values['on-demand-above'], '--on-demand-above');
  if (onDemandAbove !== undefined && attention !== 'auto') throw new AttnscopeError(`--on-demand-above applies to --attention auto (not ${String(attention)})`);
  const execution = checkExecutionMode(values.execution ?? 'auto', '--execution');
  const budgetMb = parsePositiveInt(values['memory-budget'], '--memory-budget');
  if (budgetMb !== undefined && execution !== 'auto') throw new AttnscopeError(`--memory-budget applies to --execution auto (not ${execution})`);
  const memoryBudget = budgetMb !== undefined ? budgetMb * 1e6 : Math.min(AUTO_WHOLE_BUDGET_BYTES, totalmem() / 2);
  const loadOptions = parseLoadOptions(values);
  checkModelArg(positionals[0]);
  const model = await loadModel(positionals[0], loadOptions);
  try {
    const run = await traceModel(model, input.text, { ...input.options, attention, onDemandAbove, execution, memoryBudget, qk: values.qk ?? false, hidden: values.hidden ?? false, topK, maxNewTokens, routing: values.routing ?? false, deepDive: values['deep-dive'] ?? false, logitLens });
    const { trace } = run;
    if (values.out) {
      await timed('write the trace', () => writeTraceFile(values.out!, trace));
      reportWrote(values.out, `${trace.tokens.length}${trace.decoderTokens ? `+${trace.decoderTokens.length}` : ''} tokens, ${trace.model.numLayers} layers × ${trace.model.numHeads} heads${Object.keys(trace.attention).length === 0 && trace.queries ? ', attention on demand (queries, keys and score terms)' : ''}${run.execution === 'layers' ? ', run layer by layer' : ''}`);
    } else {
      await writeTraceJsonTo(process.stdout, trace);
    }
    if (trace.routing) process.stderr.write(routingSummary(trace.routing));
  } finally {
    await model.dispose();
  }
}

/** A whole number ≥ 0 of an option, or one line naming it. */
export function parseNonNegativeInt(value: string, option: string): number {
  if (!/^\d+$/.test(value.trim())) throw new AttnscopeError(`${option}: expected a whole number of tokens (0 or more), got '${value}'`);
  return Number(value.trim());
}

/** The expert load of each routed layer: how many tokens chose each expert among their top k. */
export function routingSummary(routing: Routing): string {
  const how = `top ${routing.topK} of ${routing.experts} experts per token${routing.normalized ? ', weights renormalised' : ''}`;
  const lines = routing.layers.map((l) => `  layer ${l.layer}: ${expertLoad(routing, l).map((n, e) => `e${e}=${n}`).join(' ')}`);
  return `routing (${how}); tokens per expert:\n${lines.join('\n')}\n`;
}
