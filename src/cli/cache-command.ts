/** `attnscope cache [list|prune|clear] [--max SIZE]`: what the graph cache holds, and bounding it. */
import { AttnscopeError } from '../core/errors.js';
import { type CachedCheckpoint, clearGraphCache, DEFAULT_CACHE_MAX, graphCacheMax, graphCacheRoot, listGraphCache, parseSize, pruneGraphCache } from '../io/graph-cache.js';
import { closest, formatBytes, parseCommandArgs, UsageError } from './parse.js';

export const CACHE_USAGE = `attnscope cache [list | prune | clear] [--max SIZE]

  The graph cache keeps each checkpoint's prepared graph and weights on disk (about the size of
  the checkpoint's weights; 16-bit checkpoints stay 16-bit), so later runs start in a fraction
  of the time. It lives in $ATTNSCOPE_CACHE (default ~/.cache/attnscope/graphs; 'off' turns it
  off) and is capped at $ATTNSCOPE_CACHE_MAX (default ${formatBytes(DEFAULT_CACHE_MAX)}): after each write the least
  recently used checkpoints are removed until it fits.
  list         each cached checkpoint with its size and when it was last used (the default)
  prune        remove least recently used checkpoints until the cache fits the cap, and
               temporary files left by interrupted runs
  clear        remove everything in the cache
  --max        the cap for this prune, e.g. 5GB or 500MB (default: $ATTNSCOPE_CACHE_MAX or ${formatBytes(DEFAULT_CACHE_MAX)})`;

export const CACHE_OPTIONS = {
  max: { type: 'string' },
} as const;

const ACTIONS = ['list', 'prune', 'clear'] as const;

function age(ms: number): string {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return 'just now';
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/** A Hub snapshot's path as org/name@revision; other paths as they are. */
function describeSource(source: string | undefined): string {
  if (!source) return 'unknown checkpoint';
  const hub = /models--([^/\\]+?)--([^/\\]+)[/\\]snapshots[/\\]([0-9a-f]{7})/.exec(source);
  return hub ? `${hub[1]}/${hub[2]}@${hub[3]}` : source;
}

function line(e: CachedCheckpoint): string {
  const what = `${describeSource(e.source)}${e.modelType ? ` (${e.modelType})` : ''}`;
  return `${formatBytes(e.bytes).padStart(9)}  ${age(e.lastUsed).padEnd(12)}  ${what}  [${e.graphs} graph${e.graphs === 1 ? '' : 's'}; ${e.dir}]`;
}

const total = (entries: readonly CachedCheckpoint[]): number => entries.reduce((n, e) => n + e.bytes, 0);

export async function cacheCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, CACHE_OPTIONS);
  if (positionals.length > 1) throw new UsageError(`cache: expected one of ${ACTIONS.join(', ')}, got ${positionals.join(' ')}`);
  const action = positionals[0] ?? 'list';
  if (!(ACTIONS as readonly string[]).includes(action)) {
    const suggestion = closest(action, ACTIONS);
    throw new UsageError(`cache: unknown action '${action}'${suggestion ? ` (did you mean ${suggestion}?)` : ''}; expected ${ACTIONS.join(', ')}`);
  }
  if (values.max !== undefined && action !== 'prune') throw new UsageError(`cache: --max applies to prune`);
  const root = graphCacheRoot();
  if (root === undefined) {
    process.stderr.write('the graph cache is off (ATTNSCOPE_CACHE=off): nothing is kept\n');
    return;
  }
  if (action === 'list') {
    const entries = await listGraphCache(root);
    for (const e of entries) process.stdout.write(`${line(e)}\n`);
    process.stdout.write(`${formatBytes(total(entries))} in ${entries.length} checkpoint${entries.length === 1 ? '' : 's'} (cap ${formatBytes(graphCacheMax())}) in ${root}\n`);
    return;
  }
  let max: number;
  try {
    max = values.max !== undefined ? parseSize(values.max, '--max') : graphCacheMax();
  } catch (err) {
    if (values.max !== undefined && err instanceof AttnscopeError) throw new UsageError(err.message);
    throw err;
  }
  const removed = action === 'prune' ? await pruneGraphCache(root, max) : await clearGraphCache(root);
  const left = await listGraphCache(root);
  process.stderr.write(
    `removed ${removed.length} checkpoint${removed.length === 1 ? '' : 's'} (${formatBytes(total(removed))}); ${formatBytes(total(left))} left in ${root}\n`,
  );
}
