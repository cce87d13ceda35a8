/**
 * The generation length of an encoder-decoder model traced without a decoder text (issue 11 point 2),
 * in real Chromium against the real server over the bart fixture: the "generate N tokens" input is
 * sent as maxNewTokens, the page shows the tokens of the API's answer to that same request, and the
 * length is kept in the link, which restores it.
 */
import { describe, expect, it } from 'vitest';
import { FrameReader, type StreamHeader } from '../../src/server/protocol.js';
import { readReference } from '../helpers/reference.js';
import { appServerSuite } from './harness.js';

const suite = appServerSuite('app-generate');
const MODEL = 'folder:0/bart';

/** The header of the API's answer to a trace request (what the page should show). */
async function apiHeader(body: unknown): Promise<StreamHeader> {
  const res = await fetch(new URL('/api/trace', suite.server().url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  const frames = new FrameReader().push(new Uint8Array(await res.arrayBuffer()));
  const header = frames.find((f) => f.type === 'header');
  if (header?.type !== 'header') throw new Error('no header frame');
  return header.value;
}

describe('attnscope serve: generation length in the app', () => {
  it('sends "generate N tokens" as maxNewTokens, shows what the API generates, and keeps it in the link', async () => {
    const text = readReference('bart').inputs[0]!.text;
    const url = new URL(suite.server().url);
    url.searchParams.set('model', MODEL);
    url.searchParams.set('text', text);
    const app = await suite.open(url.toString());
    const { page } = app;
    const done = (n: number | null) =>
      page.waitForFunction(
        ([t, n]) => {
          if (document.body.dataset.trace !== 'done') return false;
          const r = JSON.parse(document.body.dataset.traced ?? '{}') as { text?: string; maxNewTokens?: number };
          return r.text === t && r.maxNewTokens === (n ?? undefined);
        },
        [text, n] as const,
        { timeout: 120_000 },
      );
    try {
      await done(null);
      // Shown for an encoder-decoder with an empty decoder text, with the server's limit.
      await page.waitForSelector('[data-testid=gen-field]:not([hidden])');
      const limit = ((await (await fetch(new URL('/api/models', suite.server().url))).json()) as { limits: { maxNewTokens: number } }).limits.maxNewTokens;
      expect(await page.getAttribute('[data-testid=gen-input]', 'max')).toBe(String(limit));

      await page.fill('[data-testid=gen-input]', '3');
      await done(3);
      const header = await apiHeader({ model: MODEL, text, maxNewTokens: 3 });
      const steps = header.generation!.steps;
      expect(steps.length).toBeLessThanOrEqual(3);
      if (header.generation!.stoppedBy === 'length') expect(steps.length).toBe(3);
      const n = header.tokens.length + header.decoderTokens!.length;
      expect(await page.textContent('[data-testid=status]')).toMatch(new RegExp(`^${n} tokens `));

      expect(new URL(page.url()).searchParams.get('gen')).toBe('3');
      // A decoder text hides the length (and is traced instead).
      await page.fill('[data-testid=decoder-input]', 'A cat');
      await page.waitForSelector('[data-testid=gen-field][hidden]', { state: 'attached' });
      await page.fill('[data-testid=decoder-input]', '');
      await page.waitForSelector('[data-testid=gen-field]:not([hidden])');
      await done(3);

      // Reopening the link restores the length and traces with it.
      const link = page.url();
      const again = await suite.open(link);
      try {
        await again.page.waitForFunction(
          ([t]) => document.body.dataset.trace === 'done' && (JSON.parse(document.body.dataset.traced ?? '{}') as { text?: string; maxNewTokens?: number }).maxNewTokens === 3 && JSON.parse(document.body.dataset.traced ?? '{}').text === t,
          [text] as const,
          { timeout: 120_000 },
        );
        expect(await again.page.inputValue('[data-testid=gen-input]')).toBe('3');
        expect(await again.page.textContent('[data-testid=status]')).toMatch(new RegExp(`^${n} tokens `));
        expect(again.errors).toEqual([]);
      } finally {
        await again.close();
      }
      expect(app.errors).toEqual([]);
      expect(app.foreign).toEqual([]);
    } finally {
      await app.close();
    }
  }, 300_000);
});
