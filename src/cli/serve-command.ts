/** `attnscope serve`: the web app and its API on this machine. */
import { DEFAULT_LIMITS } from '../server/app.js';
import { DEFAULT_CACHE_MB, DEFAULT_MEMORY_BUDGET_MB, startServer } from '../server/serve.js';
import { parsePositiveInt, parseThreads } from './args.js';
import { parseCommandArgs, UsageError } from './parse.js';

export const SERVE_USAGE = `attnscope serve [--port P] [--models DIR]… [--host H] [--memory-budget MB] [--cache MB]
                [--max-tokens N] [--threads N]

  Starts the attnscope web app: open the printed URL, type a text, pick a model, and explore every
  view live. Stop it with Ctrl-C. Listens on 127.0.0.1 only (nothing is opened to the network)
  unless --host is given; sends no telemetry.
  Models offered: the embedded default model, every checkpoint (a folder with config.json) under each
  --models folder, the models of the Hugging Face cache, and any Hub id typed in (downloaded with
  progress into the Hugging Face cache; refused with a message when HF_HUB_OFFLINE=1).
  --port           port to listen on (default 8080; 0 picks a free one)
  --models         a folder of checkpoints (repeatable); nothing outside these folders is read
  --host           address to listen on, e.g. 0.0.0.0 to let other machines connect (default 127.0.0.1)
  --memory-budget  MB the loaded models may take together (default ${DEFAULT_MEMORY_BUDGET_MB}); the least recently
                   used model is unloaded to make room
  --cache          MB of finished traces kept for repeated requests (default ${DEFAULT_CACHE_MB})
  --max-tokens     most tokens a request may trace (default ${DEFAULT_LIMITS.maxTokens})
  --threads        threads per operator (default: all cores)`;

export const SERVE_OPTIONS = {
  port: { type: 'string' },
  models: { type: 'string' },
  host: { type: 'string' },
  'memory-budget': { type: 'string' },
  cache: { type: 'string' },
  'max-tokens': { type: 'string' },
  threads: { type: 'string' },
} as const;

/** Every value of a repeatable option (`--models a --models=b`). */
function repeated(argv: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === `--${name}`) {
      const v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new UsageError(`--${name} needs a value`);
      out.push(v);
      i++;
    } else if (a.startsWith(`--${name}=`)) out.push(a.slice(name.length + 3));
  }
  return out;
}

export async function serveCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, SERVE_OPTIONS);
  if (positionals.length > 0) throw new UsageError(`serve takes no arguments, got ${positionals.join(' ')} (use --models DIR for a folder of checkpoints)`);
  const port = values.port === undefined ? 8080 : values.port === '0' ? 0 : parsePositiveInt(values.port, '--port')!;
  if (port > 65535) throw new UsageError(`--port: expected 0 to 65535, got ${port}`);
  const host = values.host ?? '127.0.0.1';
  if (host === '') throw new UsageError('--host: expected an address, e.g. 127.0.0.1 or 0.0.0.0');
  const budget = parsePositiveInt(values['memory-budget'], '--memory-budget') ?? DEFAULT_MEMORY_BUDGET_MB;
  const cache = values.cache === '0' ? 0 : (parsePositiveInt(values.cache, '--cache') ?? DEFAULT_CACHE_MB);
  const maxTokens = parsePositiveInt(values['max-tokens'], '--max-tokens');
  const threads = parseThreads(values.threads);

  const server = await startServer({
    port,
    host,
    folders: repeated(argv, 'models'),
    memoryBudgetBytes: budget * 2 ** 20,
    cacheBytes: cache * 2 ** 20,
    ...(maxTokens ? { limits: { maxTokens } } : {}),
    ...(threads ? { threads } : {}),
  });
  const models = server.catalog.list().length;
  process.stdout.write(`attnscope serve: ${server.url}  (${models} model${models === 1 ? '' : 's'} offered${host === '127.0.0.1' ? '; this machine only' : `; listening on ${host}`})\n`);
  process.stdout.write('Press Ctrl-C to stop.\n');
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.stdout.write(`attnscope serve: stopping (${signal})\n`);
      void server.close().then(resolve, resolve);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
