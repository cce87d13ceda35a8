/**
 * A one-line download progress bar on stderr: `file  ████░░░░  45%  12.3 MB / 27.1 MB  8.2 MB/s`.
 * Redrawn in place on a terminal; on anything else (when forced on) printed every 10%.
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

export function createProgress(
  label: string,
  total: number,
  stream: ProgressStream = process.stderr,
  now: () => number = Date.now,
): Progress {
  if (total <= 0) return NO_PROGRESS;
  const tty = stream.isTTY === true;
  const start = now();
  let lastDraw = -Infinity;
  let lastDecile = -1;
  let current = 0;

  const line = (): string => {
    const fraction = Math.min(1, current / total);
    const seconds = Math.max((now() - start) / 1000, 1e-3);
    const filled = Math.round(fraction * BAR_WIDTH);
    const bar = '█'.repeat(filled) + '░'.repeat(BAR_WIDTH - filled);
    const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
    const bytes = `${formatBytes(current)} / ${formatBytes(total)}`;
    return `${shorten(label)}  ${bar} ${percent}  ${bytes}  ${formatBytes(current / seconds)}/s`;
  };

  return {
    update(bytes: number): void {
      current = bytes;
      if (tty) {
        const t = now();
        if (t - lastDraw < 100) return;
        lastDraw = t;
        stream.write(`\r\x1b[2K${line()}`);
      } else {
        const decile = Math.floor((Math.min(current, total) / total) * 10);
        if (decile === lastDecile || decile === 10) return;
        lastDecile = decile;
        stream.write(`${line()}\n`);
      }
    },
    done(): void {
      stream.write(tty ? `\r\x1b[2K${line()}\n` : `${line()}\n`);
    },
  };
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
