/**
 * The bias panel of the app of `attnscope serve` (web/app/bias-panel.ts, POST /api/bias) in
 * Chromium against the real server over test/fixtures: opened from a link on the bert fixture, run
 * with the settings of a `attnscope bias report` process run here, it shows the CLI's numbers (the
 * downloaded JSON equals the CLI's JSON but for the time stamp; the score bars carry its metric);
 * every panel is there, the probe text is shown as text; no page errors, no requests elsewhere;
 * a panel's SVG and PNG downloads work; a second run comes from the cache. Saves a screenshot for
 * review (into ATTNSCOPE_SCREENSHOT_DIR when set; docs/images/app-bias.png is made that way).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { FIXTURES } from '../helpers/reference.js';
import { appServerSuite } from './harness.js';

const suite = appServerSuite('app-bias');
const TEXT = 'The nurse <b>said</b> that [MASK] would be late.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-app-bias-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope serve: the bias panel in Chromium', () => {
  it('shows the numbers `attnscope bias report` gives for the same inputs; panels, probe, exports', async () => {
    const cli = runCli(tmp, ['bias', 'report', join(FIXTURES, 'bert'), '--limit', '5', '--k', '2', '--controls', '1', '--permutations', '19', '--steps', '4', '--bootstrap', '100', '--text', TEXT, '--out', join(tmp, 'report.html'), '--no-cache', '--quiet'], 300_000);
    expect(cli.status, cli.stderr).toBe(0);
    const expected = JSON.parse(readFileSync(join(tmp, 'report.json'), 'utf8')) as { created: string; crowsPairs: { metric: { metric: number } }; notes: string[] };

    const url = new URL(suite.server().url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', 'The man said that [MASK] was late.');
    url.searchParams.set('view', 'bias');
    const p = await suite.open(url.href, { viewport: { width: 1280, height: 1000 } });
    const { page } = p;
    try {
      await page.waitForSelector('[data-testid=bias-panel]', { state: 'visible', timeout: 60_000 });
      // The probe text follows the app's text until edited.
      expect(await page.inputValue('[data-testid=bias-text]')).toBe('The man said that [MASK] was late.');
      await page.fill('[data-testid=bias-text]', TEXT);
      await page.fill('[data-testid=bias-limit]', '5');
      await page.click('[data-testid=bias-settings] summary');
      for (const [id, v] of [['bias-k', '2'], ['bias-controls', '1'], ['bias-permutations', '19'], ['bias-steps', '4'], ['bias-bootstrap', '100']] as const) await page.fill(`[data-testid=${id}]`, v);
      await page.click('[data-testid=bias-run]');
      await page.waitForSelector('[data-testid=bias-metric]', { timeout: 300_000 });
      expect(await page.textContent('[data-testid=bias-error]')).toBe('');

      // Every panel, and the score bars carry the CLI's metric.
      const panels = await page.locator('[data-testid=bias-panels] [data-panel]').evaluateAll((els) => els.map((e) => e.getAttribute('data-panel')));
      expect(panels).toEqual(['scores', 'occupations', 'heads', 'ablation', 'propagation']);
      const first = await page.locator('[data-testid=bias-svg-scores] rect.score-bar').first();
      expect(Number(await first.getAttribute('data-value'))).toBe(expected.crowsPairs.metric.metric);
      expect(Number(await page.getAttribute('[data-testid=bias-metric]', 'data-value'))).toBe(expected.crowsPairs.metric.metric);
      // The probe text is text, not markup.
      expect(await page.textContent('[data-testid=bias-probe-text-0]')).toBe(TEXT);
      expect(await page.locator('[data-testid=bias-probes] b:has-text("said")').count()).toBe(0);
      expect(await page.locator('[data-testid=bias-notes] li').count()).toBe(expected.notes.length);

      // The JSON download is the CLI's report but for the time stamp.
      const [json] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=bias-json]')]);
      const got = JSON.parse(readFileSync((await json.path())!, 'utf8')) as Record<string, unknown>;
      expect({ ...got, created: null }).toEqual({ ...expected, created: null });

      // A panel's SVG and PNG.
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=bias-svg-download-heads]')]);
      expect(svg.suggestedFilename()).toBe('attnscope-bias-heads-bert.svg');
      expect(readFileSync((await svg.path())!, 'utf8')).toMatch(/^<svg[^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=bias-png-download-scores]')]);
      expect(readFileSync((await png.path())!).subarray(1, 4).toString('latin1')).toBe('PNG');

      // Run again: answered from the server's cache.
      await page.click('[data-testid=bias-run]');
      await expect.poll(() => page.textContent('[data-testid=bias-status]'), { timeout: 60_000 }).toMatch(/cache/);

      await page.screenshot({ path: join(process.env.ATTNSCOPE_SCREENSHOT_DIR ?? tmp, 'app-bias.png'), fullPage: true });
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.foreign).toEqual([]);
    } finally {
      await p.close();
    }
  }, 900_000);
});
