/**
 * The graph cache: the first run of a checkpoint leaves its prepared graph and weights on disk,
 * later runs open them without reading the checkpoint, and give bit-identical traces; a cache
 * that is damaged or cannot be written is never trusted and never stops a trace.
 */
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import { FIXTURES, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-graph-cache-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function traceWith(cache: string | false, qk = false) {
  const model = await loadModel(join(FIXTURES, 'bert'), { graphCache: cache });
  try {
    return await model.trace('The weather is nice today.', { pair: "Let's go for a walk.", qk });
  } finally {
    await model.dispose();
  }
}

/** Every file below `dir`, with its modification time. */
function files(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const sub of existsSync(dir) ? readdirSync(dir) : []) {
    for (const f of readdirSync(join(dir, sub))) out.set(join(sub, f), statSync(join(dir, sub, f)).mtimeMs);
  }
  return out;
}

describe('graph cache', () => {
  it('writes the graph and its large weights on the first run and reuses them unchanged', async () => {
    const root = join(tmp, 'a');
    const uncached = await traceWith(false);
    const first = await traceWith(root);
    const written = files(root);
    expect([...written.keys()].filter((f) => f.endsWith('.onnx'))).toHaveLength(1);
    expect([...written.keys()].some((f) => f.includes('word_embeddings') && f.endsWith('.bin'))).toBe(true);
    expect([...written.keys()].some((f) => f.endsWith('.tmp'))).toBe(false);
    const second = await traceWith(root);
    const after = files(root);
    const usage = [...written.keys()].find((f) => f.endsWith('checkpoint.json'))!;
    expect(after.get(usage)).toBeGreaterThan(written.get(usage)!); // marked as used (least-recently-used eviction)
    after.delete(usage);
    written.delete(usage);
    expect(after).toEqual(written); // nothing rewritten
    expect(stackValues(first.attention.self)).toEqual(stackValues(uncached.attention.self));
    expect(stackValues(second.attention.self)).toEqual(stackValues(uncached.attention.self));
  });

  it('keeps one graph per set of taps, sharing the weight files', async () => {
    const root = join(tmp, 'b');
    await traceWith(root);
    const weights = [...files(root).keys()].filter((f) => f.endsWith('.bin'));
    await traceWith(root, true);
    const after = [...files(root).keys()];
    expect(after.filter((f) => f.endsWith('.onnx'))).toHaveLength(2);
    expect(after.filter((f) => f.endsWith('.bin'))).toEqual(weights);
  });

  it('does not trust a damaged weight file: rewrites it and still traces correctly', async () => {
    const root = join(tmp, 'c');
    const good = await traceWith(root);
    const bin = [...files(root).keys()].find((f) => f.includes('word_embeddings'))!;
    truncateSync(join(root, bin), 100);
    const again = await traceWith(root);
    expect(stackValues(again.attention.self)).toEqual(stackValues(good.attention.self));
    expect(statSync(join(root, bin)).size).toBeGreaterThan(100);
  });

  it('traces when the cache cannot be written', async () => {
    // A regular file where the cache directory should be: mkdir fails even for root.
    const blocker = join(tmp, 'not-a-directory');
    writeFileSync(blocker, 'x');
    const uncached = await traceWith(false);
    const trace = await traceWith(join(blocker, 'graphs'));
    expect(stackValues(trace.attention.self)).toEqual(stackValues(uncached.attention.self));
  });

  it('writes nothing when disabled, not even to the default location', async () => {
    const root = join(tmp, 'default-root');
    const saved = process.env.ATTNSCOPE_CACHE;
    process.env.ATTNSCOPE_CACHE = root;
    try {
      await traceWith(false);
      expect(existsSync(root)).toBe(false);
      process.env.ATTNSCOPE_CACHE = 'off';
      const model = await loadModel(join(FIXTURES, 'bert'));
      await model.trace('hello');
      await model.dispose();
      expect(existsSync(root)).toBe(false);
      process.env.ATTNSCOPE_CACHE = root;
      const cached = await loadModel(join(FIXTURES, 'bert'));
      await cached.trace('hello');
      await cached.dispose();
      expect(files(root).size).toBeGreaterThan(0); // the environment variable is the default
    } finally {
      if (saved === undefined) delete process.env.ATTNSCOPE_CACHE;
      else process.env.ATTNSCOPE_CACHE = saved;
    }
  });
});
