/**
 * What every attnscope command shares around its own options: parsing them (unknown options and
 * malformed values as one line with a "did you mean" and a pointer to --help), checking --out
 * against what the command writes, refusing a file where a checkpoint directory is meant, and
 * reporting what was written.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { basename, dirname, extname } from 'node:path';
import { parseArgs } from 'node:util';
import { AttnscopeError } from '../core/errors.js';
import { closest, editDistance } from '../core/names.js';

export { closest, editDistance };

/**
 * Bad command-line usage (an unknown option, a malformed value): the CLI adds a pointer to the
 * command's --help. The exit code is that of every other input error.
 */
export class UsageError extends AttnscopeError {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface OptionSpec {
  readonly type: 'string' | 'boolean';
}

export type OptionValues<T extends Readonly<Record<string, OptionSpec>>> = {
  [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string;
};

/**
 * Parses a command's arguments: `--name value`, `--name=value`, boolean `--flag`, positionals.
 * `renamed` maps options that were renamed (or belong to another command) to the one to suggest.
 */
export function parseCommandArgs<const T extends Readonly<Record<string, OptionSpec>>>(
  argv: readonly string[],
  options: T,
  renamed: Readonly<Record<string, string>> = {},
): { values: OptionValues<T>; positionals: string[] } {
  const { tokens } = parseArgs({ args: [...argv], options: options as Record<string, OptionSpec>, strict: false, allowPositionals: true, tokens: true });
  const values: Record<string, string | boolean> = {};
  const positionals: string[] = [];
  const names = Object.keys(options);
  for (const token of tokens) {
    if (token.kind === 'positional') {
      positionals.push(token.value);
      continue;
    }
    if (token.kind !== 'option') continue;
    const spec = options[token.name];
    if (!spec) {
      const suggestion = renamed[token.name] ?? closest(token.name, names);
      throw new UsageError(`unknown option '${token.rawName}'${suggestion ? ` (did you mean --${suggestion}?)` : ''}`);
    }
    if (spec.type === 'boolean') {
      if (token.value !== undefined) throw new UsageError(`${token.rawName} takes no value (got '${token.value}')`);
      values[token.name] = true;
      continue;
    }
    const value = token.value;
    // `--text --qk`: the next option taken for the value; `--text=--qk` says it is meant.
    const swallowed = value !== undefined && !token.inlineValue && /^--[a-z]/.test(value) && value.slice(2).split('=')[0]! in options;
    if (value === undefined || swallowed) throw new UsageError(`${token.rawName} needs a value`);
    values[token.name] = value;
  }
  return { values: values as OptionValues<T>, positionals };
}

/** A size for people: "812 B", "1.2 MB". */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${Math.round(n / 1e3)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(1)} GB`;
}

/** How every command reports a file it wrote: one line on stderr, "wrote PATH (SIZE; details)[ — hint]". */
export function reportWrote(path: string, details?: string, hint?: string): void {
  let size = '';
  try {
    size = formatBytes(statSync(path).size);
  } catch {
    size = 'size unknown';
  }
  process.stderr.write(`wrote ${path} (${size}${details ? `; ${details}` : ''})${hint ? ` — ${hint}` : ''}\n`);
}

/**
 * Checks --out before any work: a file name (not '.', not a directory) whose extension is one
 * the command writes (`allowed`, with the dot, lower case).
 */
export function checkOut(out: string, allowed: readonly string[], what: string): void {
  if (out.trim() === '') throw new UsageError('--out needs a file name');
  const isDir = out === '.' || out === '..' || /[\\/]$/.test(out) || (existsSync(out) && statSync(out).isDirectory());
  if (isDir) throw new UsageError(`--out ${out}: is a directory; give a file name ending in ${allowed.join(' or ')}`);
  const ext = extname(out).toLowerCase();
  if (!allowed.includes(ext)) {
    throw new UsageError(`--out ${out}: ${what} writes ${allowed.join(' or ')} files${ext ? `, not ${ext}` : ''}`);
  }
  // Before the model runs: a missing directory would only show after all the work.
  const dir = dirname(out);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new AttnscopeError(`--out ${out}: cannot write (no such directory: ${dir})`);
}

/** Hugging Face files of a checkpoint: a path to one of them means its directory. */
const CHECKPOINT_FILE =
  /^(config\.json|generation_config\.json|tokenizer(_config)?\.json|special_tokens_map\.json|vocab\.(txt|json)|merges\.txt|spiece\.model|tokenizer\.model|spm\.model|sentencepiece\.bpe\.model|.*\.(safetensors|bin|pt|pth|ckpt|gguf|h5|msgpack|onnx)|.*\.index\.json)$/i;

/** Whether `path` is a file of a checkpoint (a file with a checkpoint name next to a config.json, or config.json). */
export function isCheckpointFile(path: string): boolean {
  const name = basename(path);
  if (!CHECKPOINT_FILE.test(name)) return false;
  try {
    if (!statSync(path).isFile()) return false;
    return name === 'config.json' || readdirSync(dirname(path)).includes('config.json');
  } catch {
    return false;
  }
}

/**
 * Refuses a file given where a model is meant (a checkpoint directory or a Hub id): a config.json
 * or weights file says to pass its directory.
 */
export function checkModelArg(source: string | undefined): void {
  if (source === undefined) return;
  let isFile = false;
  try {
    isFile = statSync(source).isFile();
  } catch {
    return; // not on disk: a Hub id, or the loader's own "no such" message
  }
  if (!isFile) return;
  const dir = dirname(source);
  if (isCheckpointFile(source) || CHECKPOINT_FILE.test(basename(source))) {
    throw new AttnscopeError(`${source} is one file of a checkpoint: pass the checkpoint directory (${dir === '.' ? '.' : dir}) instead`);
  }
  throw new AttnscopeError(`${source} is a file: pass a checkpoint directory (config.json and weights) or a Hub id`);
}
