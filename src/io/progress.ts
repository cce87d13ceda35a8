/**
 * One-line progress bars on stderr: downloads (`file  ████░░░░  45%  12.3 MB / 27.1 MB  8.2 MB/s`)
 * and counts of items done. Redrawn in place on a terminal; on anything else printed every 10%.
 */
import { isTrue, type Env } from './hf-cache.js';

/** Files at least this large get a progress bar (smaller ones finish before it would help). */
export const PROGRESS_MIN_BYTES = 10 * 1024 * 1024;

/** The part of a stream the bar needs (process.stderr, or a capture in tests). */
export interface ProgressStream {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface Progress {
  /** Reports the number of bytes received so far. */
  update(bytes: number): void;
  /** Draws the final state and ends the line. */
  done(): void;
}

const NO_PROGRESS: Progress = { update() {}, done() {} };

/**
 * Whether a download of `total` bytes shows a bar: `option` true forces it (when the size is
 * known), false disables it; undefined means "when the stream is a terminal and the file is large".
 */
export function wantsProgress(
  total: number | undefined,
  option: boolean | undefined,
  stream: ProgressStream,
  env: Env = process.env,
): boolean {
  if (option === false || total === undefined) return false;
  if (total < PROGRESS_MIN_BYTES) return false;
  if (option === true) return true;
  return stream.isTTY === true && !isTrue(env.HF_HUB_DISABLE_PROGRESS_BARS);
}

/**
 * A line redrawn in place on a terminal (at most 10 times a second) and printed at each tenth of
 * the total elsewhere; `render` draws it from the amount done, the total and the seconds elapsed.
 */
function progressLine(
  stream: ProgressStream,
  now: () => number,
  render: (current: number, total: number, seconds: number) => string,
): { set(current: number, total: number): void; done(): void } {
  const tty = stream.isTTY === true;
  const start = now();
  let lastDraw = -Infinity;
  let lastDecile = -1;
  let current = 0;
  let all = 0;
  const line = (): string => render(current, all, Math.max((now() - start) / 1000, 1e-3));
  return {
    set(done: number, total: number): void {
      current = done;
      all = total;
      if (tty) {
        const t = now();
        if (t - lastDraw < 100) return;
        lastDraw = t;
        stream.write(`\r\x1b[2K${line()}`);
      } else {
        const decile = total <= 0 ? 10 : Math.floor((Math.min(done, total) / total) * 10);
        if (decile === lastDecile || decile >= 10) return;
        lastDecile = decile;
        stream.write(`${line()}\n`);
      }
    },
    done(): void {
      stream.write(tty ? `\r\x1b[2K${line()}\n` : `${line()}\n`);
    },
  };
}

/** `████░░░░  45%` for a fraction done. */
function bar(fraction: number): string {
  const filled = Math.round(fraction * BAR_WIDTH);
  return `${'█'.repeat(filled)}${'░'.repeat(BAR_WIDTH - filled)} ${`${Math.floor(fraction * 100)}%`.padStart(4)}`;
}

export function createProgress(
  label: string,
  total: number,
  stream: ProgressStream = process.stderr,
  now: () => number = Date.now,
): Progress {
  if (total <= 0) return NO_PROGRESS;
  const line = progressLine(stream, now, (current, all, seconds) =>
    `${shorten(label)}  ${bar(Math.min(1, current / all))}  ${formatBytes(current)} / ${formatBytes(all)}  ${formatBytes(current / seconds)}/s`);
  return { update: (bytes) => line.set(bytes, total), done: () => line.done() };
}

/** A counter of items done (`crows-pairs  ████░░░░  45%  680/1508  3.2/s  ETA 5m`). */
export interface CountProgress {
  update(done: number, total: number): void;
  done(): void;
}

const duration = (s: number): string => (s < 60 ? `${Math.round(s)}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${(s / 3600).toFixed(1)}h`);

/** Items done out of a total with rate and ETA, for long runs; `quiet` prints nothing. */
export function countProgress(label: string, quiet = false, stream: ProgressStream = process.stderr, now: () => number = Date.now): CountProgress {
  if (quiet) return { update() {}, done() {} };
  const line = progressLine(stream, now, (current, all, seconds) => {
    const rate = current / seconds;
    const eta = rate > 0 && current < all ? `  ETA ${duration((all - current) / rate)}` : '';
    return `${label}  ${bar(all === 0 ? 1 : Math.min(1, current / all))}  ${current}/${all}  ${rate.toFixed(1)}/s${eta}`;
  });
  return { update: (done, total) => line.set(done, total), done: () => line.done() };
}

const BAR_WIDTH = 24;

export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return unit === 0 ? `${Math.round(value)} B` : `${value.toFixed(1)} ${units[unit]}`;
}

function shorten(label: string): string {
  return label.length <= 40 ? label : `…${label.slice(label.length - 39)}`;
}
