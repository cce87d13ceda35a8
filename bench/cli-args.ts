/**
 * Command-line options and table cells shared by the bench scripts: the value after a flag, the
 * `--case` / `--limit` / `--cases` options of the benches that run each case in a child process
 * (bench/child-case.ts), their cases' specs and prompt ids, the machine and load lines they print,
 * the row of a case stopped at the limit, and number cells that print '–' for a figure a case did
 * not give.
 */
import os from 'node:os';

/** The value after `flag` in `args` (this process's arguments by default), or undefined. */
export function option(flag: string, args: readonly string[] = process.argv.slice(2)): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** The options of a bench whose cases run each in a child process. */
export interface CaseOptions {
  /** `--case <spec>`: this process is the child running that one case. */
  one: string | undefined;
  /** `--limit <GB>` (default 6: the machine is shared), in MiB as spawnCase takes it. */
  limitMb: number;
  /** `--cases a,b,...`, or the bench's default list. */
  cases: string[];
}

export function caseOptions(defaultCases: readonly string[], args: readonly string[] = process.argv.slice(2)): CaseOptions {
  return {
    one: option('--case', args),
    limitMb: Number(option('--limit', args) ?? 6) * 1024,
    cases: (option('--cases', args) ?? defaultCases.join(',')).split(','),
  };
}

/** A case spec `a:b:mode` of the benches that trace both ways: its two leading fields and the attention mode. */
export const attentionCase = (spec: string): [string, string, 'dense' | 'on-demand'] => spec.split(':') as [string, string, 'dense' | 'on-demand'];

/** A case's prompt: `n` ids spread over the vocabulary, past ids 0 and 1 (2 + 7919·i mod (vocab − 2)). */
export const caseIds = (n: number, vocab: number): number[] => Array.from({ length: n }, (_, i) => 2 + ((i * 7919) % (vocab - 2)));

/** The 1-, 5- and 15-minute load averages, one decimal each, joined by `separator`. */
export const loadAverage = (separator = ', '): string => os.loadavg().map((x) => x.toFixed(1)).join(separator);

/** "machine: <CPU>, <n> cores, Node <version>" (the start of the benches' machine line). */
export const machineLine = (): string => `machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}`;

/** "<machine line>; each case in its own process<how>, stopped above <limit> GB" (the benches' second line). */
export const casesLine = (limitMb: number, how = ''): string => `${machineLine()}; each case in its own process${how}, stopped above ${limitMb / 1024} GB`;

/** The row of a case stopped (above the limit, or failed): its spec, why, `blanks` empty cells, then `last` if given. */
export const stoppedRow = (spec: string, stopped: unknown, blanks: number, last?: string): string =>
  `| ${spec} | ${String(stopped)} |${' |'.repeat(blanks)}${last === undefined ? '' : ` ${last} |`}`;

/** A number with no decimals; '–' for anything else (a figure the case did not give). */
export const fixed0 = (x: unknown): string => (typeof x === 'number' ? x.toFixed(0) : '–');

/** A number with one decimal; '–' for anything else. */
export const fixed1 = (x: unknown): string => (typeof x === 'number' ? x.toFixed(1) : '–');

/** Two decimals below 10, none from 10 up; '–' for anything else. */
export const fixedSmall = (x: unknown): string => (typeof x === 'number' ? (x < 10 ? x.toFixed(2) : x.toFixed(0)) : '–');
