#!/usr/bin/env node
/** The `attnscope` command: dispatches to subcommands, prints user errors on one line. */
import { AttnscopeError, sanitize } from '../core/errors.js';
import { BIAS_USAGE, biasCommand } from './bias-command.js';
import { CACHE_USAGE, cacheCommand } from './cache-command.js';
import { COMPARE_USAGE, compareCommand } from './compare-command.js';
import { ABLATE_USAGE, ablateCommand } from './ablate-command.js';
import { AGGREGATE_USAGE, aggregateCommand } from './aggregate-command.js';
import { ATTRIBUTE_USAGE, attributeCommand } from './attribute-command.js';
import { EXPORT_USAGE, exportCommand } from './export-command.js';
import { FLOW_USAGE, flowCommand } from './flow-command.js';
import { GENERATE_USAGE, generateCommand } from './generate-command.js';
import { HEADS_USAGE, headsCommand } from './heads-command.js';
import { LENS_USAGE, lensCommand } from './lens-command.js';
import { MODELS_USAGE, modelsCommand } from './models-command.js';
import { TRACE_USAGE, traceCommand } from './trace-command.js';
import { UsageError, closest } from './parse.js';
import { SERVE_USAGE, serveCommand } from './serve-command.js';
import { VIEW_USAGE, viewCommand } from './view-command.js';

const USAGE = `attnscope — see and measure what a Transformer attends to

Usage:
  ${TRACE_USAGE.split('\n\n')[0]}
  ${GENERATE_USAGE.split('\n\n')[0]}
  ${EXPORT_USAGE.split('\n\n')[0]}
  ${VIEW_USAGE.split('\n\n')[0]}
  ${COMPARE_USAGE.split('\n\n')[0]}
  ${AGGREGATE_USAGE.split('\n\n')[0]}
  ${HEADS_USAGE.split('\n\n')[0]}
  ${FLOW_USAGE.split('\n\n')[0]}
  ${ATTRIBUTE_USAGE.split('\n\n')[0]}
  ${ABLATE_USAGE.split('\n\n')[0]}
  ${LENS_USAGE.split('\n\n')[0]}
  ${BIAS_USAGE.split('\n\n')[0]}
  ${CACHE_USAGE.split('\n\n')[0]}
  ${MODELS_USAGE.split('\n\n')[0]}
  ${SERVE_USAGE.split('\n\n')[0]}

Run 'attnscope <command> --help' for a command's options.`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; usage: string }> = {
  trace: { run: traceCommand, usage: TRACE_USAGE },
  generate: { run: generateCommand, usage: GENERATE_USAGE },
  export: { run: exportCommand, usage: EXPORT_USAGE },
  view: { run: viewCommand, usage: VIEW_USAGE },
  compare: { run: compareCommand, usage: COMPARE_USAGE },
  aggregate: { run: aggregateCommand, usage: AGGREGATE_USAGE },
  heads: { run: headsCommand, usage: HEADS_USAGE },
  flow: { run: flowCommand, usage: FLOW_USAGE },
  attribute: { run: attributeCommand, usage: ATTRIBUTE_USAGE },
  ablate: { run: ablateCommand, usage: ABLATE_USAGE },
  lens: { run: lensCommand, usage: LENS_USAGE },
  bias: { run: biasCommand, usage: BIAS_USAGE },
  cache: { run: cacheCommand, usage: CACHE_USAGE },
  models: { run: modelsCommand, usage: MODELS_USAGE },
  serve: { run: serveCommand, usage: SERVE_USAGE },
};

/** The command being run, for the --help pointer of usage errors. */
let current: string | undefined;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv[0] === 'help' && argv[1] !== undefined ? [argv[1], '--help'] : argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 1;
  }
  const entry = COMMANDS[command];
  if (!entry) {
    const suggestion = closest(command, Object.keys(COMMANDS));
    throw new UsageError(`unknown command '${command}'${suggestion ? ` (did you mean ${suggestion}?)` : ''}; commands: ${Object.keys(COMMANDS).join(', ')}`);
  }
  current = command;
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`Usage: ${entry.usage}\n`);
    return 0;
  }
  await entry.run(rest);
  return 0;
}

/** A write to a pipe whose reader has gone (`attnscope trace … | head`). */
const isClosedPipe = (err: unknown): boolean => (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE';

function describeError(err: unknown): string {
  if (err instanceof UsageError) return `${err.message}; see 'attnscope ${current ?? ''}${current ? ' ' : ''}--help'`;
  if (err instanceof AttnscopeError) return err.message;
  const e = err as NodeJS.ErrnoException & { code?: string };
  if (e?.code === 'ENOENT' && e.path) return `${e.path}: no such file or directory`;
  if (e?.code === 'EACCES' && e.path) return `${e.path}: permission denied`;
  if (e?.code === 'ENOSPC') return `${e.path ? `${e.path}: ` : ''}no space left on the device`;
  return `internal error: ${e?.message ?? String(err)} (please report this)`;
}

/** Exit code of every input error (bad options, files, checkpoints, text); 1 is left for internal errors. */
const INPUT_ERROR = 2;

// The reader of stdout went away (`| head`): what it wanted is written; stop quietly.
process.stdout.on('error', (err) => {
  if (isClosedPipe(err)) process.exit(0);
});

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (isClosedPipe(err)) {
      process.exit(0);
    }
    // One line, whatever the message carries from files: control characters escaped, length bounded.
    process.stderr.write(`attnscope: ${sanitize(describeError(err), 600)}\n`);
    if (process.env.ATTNSCOPE_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = err instanceof AttnscopeError ? INPUT_ERROR : 1;
  },
);
