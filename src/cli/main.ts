#!/usr/bin/env node
/** The `attnscope` command: dispatches to subcommands, prints user errors on one line. */
import { AttnscopeError } from '../core/errors.js';
import { EXPORT_USAGE, exportCommand } from './export-command.js';
import { GENERATE_USAGE, generateCommand } from './generate-command.js';
import { TRACE_USAGE, traceCommand } from './trace-command.js';
import { VIEW_USAGE, viewCommand } from './view-command.js';

const USAGE = `attnscope — see and measure what a Transformer attends to

Usage:
  ${TRACE_USAGE}
  ${GENERATE_USAGE}
  ${EXPORT_USAGE}
  ${VIEW_USAGE.split('\n\n')[0]}

Run 'attnscope <command> --help' for a command's options.`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; usage: string }> = {
  trace: { run: traceCommand, usage: TRACE_USAGE },
  generate: { run: generateCommand, usage: GENERATE_USAGE },
  export: { run: exportCommand, usage: EXPORT_USAGE },
  view: { run: viewCommand, usage: VIEW_USAGE },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 1;
  }
  const entry = COMMANDS[command];
  if (!entry) throw new AttnscopeError(`unknown command '${command}' (commands: ${Object.keys(COMMANDS).join(', ')})`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`Usage: ${entry.usage}\n`);
    return 0;
  }
  await entry.run(rest);
  return 0;
}

function describeError(err: unknown): string {
  if (err instanceof AttnscopeError) return err.message;
  const e = err as NodeJS.ErrnoException & { code?: string };
  // Argument errors from node:util parseArgs are user errors too.
  if (typeof e?.code === 'string' && e.code.startsWith('ERR_PARSE_ARGS')) return e.message;
  if (e?.code === 'ENOENT' && e.path) return `${e.path}: no such file or directory`;
  if (e?.code === 'EACCES' && e.path) return `${e.path}: permission denied`;
  return `internal error: ${e?.message ?? String(err)} (please report this)`;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`attnscope: ${describeError(err)}\n`);
    if (process.env.ATTNSCOPE_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    process.exitCode = err instanceof AttnscopeError ? 2 : 1;
  },
);
