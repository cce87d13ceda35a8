/** Timing for the bench scripts: wall clock and this process's CPU time, median of several runs. */

export interface Timing {
  /** Milliseconds of wall clock. */
  wall: number;
  /** Milliseconds of CPU (user + system) of this process. */
  cpu: number;
}

/** One run of `f`, timed. */
export async function timeOnce(f: () => unknown): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}

/** The median wall and CPU time of `runs` runs of `f`, after one warm-up run unless `warmUp` is false. */
export async function measure(f: () => unknown, runs: number, warmUp = true): Promise<Timing> {
  if (warmUp) await f();
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = await timeOnce(f);
    walls.push(t.wall);
    cpus.push(t.cpu);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { wall: median(walls), cpu: median(cpus) };
}
