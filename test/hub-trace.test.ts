/**
 * End to end through the Hub path: a model id is downloaded from a local server that speaks the
 * Hub's URL layout into a Hugging Face cache, traced (matching PyTorch's reference), and traced
 * again offline from that cache without a single request.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import { fakeCommit, fixtureFiles, restoreEnv, startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-hub-trace-'));
const saved = { ...process.env };
let hub: FakeHub;

beforeAll(async () => {
  const files = await fixtureFiles(join(FIXTURES, 'gpt2-bin')); // pytorch_model.bin, served as an LFS file
  hub = await startFakeHub({ 'test-org/tiny-gpt2': { files } });
  process.env.HF_ENDPOINT = hub.url;
  process.env.HF_HUB_CACHE = join(tmp, 'hub');
  process.env.ATTNSCOPE_CACHE = join(tmp, 'graphs');
  delete process.env.HF_HUB_OFFLINE;
  delete process.env.HF_TOKEN;
});

afterAll(async () => {
  restoreEnv(saved);
  await hub?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('a Hub model id', () => {
  const ref = readReference('gpt2-bin');
  const input = ref.inputs[1]!;

  it('downloads into the Hugging Face cache layout and traces as PyTorch does', async () => {
    const model = await loadModel('test-org/tiny-gpt2');
    try {
      const trace = await model.trace(input.text, { qk: true });
      expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expect(maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!))).toBeLessThanOrEqual(1e-4);
      expect(trace.model.name).toBe('test-org/tiny-gpt2');
    } finally {
      await model.dispose();
    }
    const snapshot = join(tmp, 'hub', 'models--test-org--tiny-gpt2', 'snapshots', fakeCommit('test-org/tiny-gpt2'));
    expect(readdirSync(snapshot)).toEqual(expect.arrayContaining(['config.json', 'pytorch_model.bin', 'tokenizer.json']));
    expect(hub.requests.some((r) => r.path.endsWith('/pytorch_model.bin'))).toBe(true);
  });

  it('traces again offline from the cache, with no request', async () => {
    const before = hub.requests.length;
    process.env.HF_HUB_OFFLINE = '1';
    try {
      const model = await loadModel(`test-org/tiny-gpt2@${fakeCommit('test-org/tiny-gpt2')}`);
      const trace = await model.trace(input.text);
      await model.dispose();
      expect(maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
    } finally {
      delete process.env.HF_HUB_OFFLINE;
    }
    expect(hub.requests.length).toBe(before);
  });

  it('an unknown id is a clear error', async () => {
    await expect(loadModel('test-org/no-such-model')).rejects.toThrow(/test-org\/no-such-model.*not found/);
  });
});
