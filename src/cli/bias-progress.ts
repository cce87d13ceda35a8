/** A counter on stderr for long benchmark runs: `crows-pairs  ████░░░░  45%  680/1508  3.2/s  ETA 5m`. */

export interface CountProgress {
  update(done: number, total: number): void;
  done(): void;
}

const WIDTH = 24;

const duration = (s: number): string => (s < 60 ? `${Math.round(s)}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${(s / 3600).toFixed(1)}h`);

/**
 * On a terminal the line is redrawn in place (at most 10 times a second); elsewhere (a log, a
 * pipe) a line is printed at each tenth done; `quiet` prints nothing.
 */
export function countProgress(label: string, quiet = false, stream: NodeJS.WriteStream = process.stderr, now: () => number = Date.now): CountProgress {
  if (quiet) return { update() {}, done() {} };
  const tty = stream.isTTY === true;
  const start = now();
  let lastDraw = -Infinity;
  let lastDecile = -1;
  let current = 0;
  let all = 0;
  const line = (): string => {
    const fraction = all === 0 ? 1 : Math.min(1, current / all);
    const seconds = Math.max((now() - start) / 1000, 1e-3);
    const filled = Math.round(fraction * WIDTH);
    const rate = current / seconds;
    const eta = rate > 0 && current < all ? `  ETA ${duration((all - current) / rate)}` : '';
    return `${label}  ${'█'.repeat(filled)}${'░'.repeat(WIDTH - filled)} ${`${Math.floor(fraction * 100)}%`.padStart(4)}  ${current}/${all}  ${rate.toFixed(1)}/s${eta}`;
  };
  return {
    update(done: number, total: number): void {
      current = done;
      all = total;
      if (tty) {
        const t = now();
        if (t - lastDraw < 100) return;
        lastDraw = t;
        stream.write(`\r\x1b[2K${line()}`);
      } else {
        const decile = total === 0 ? 10 : Math.floor((done / total) * 10);
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
