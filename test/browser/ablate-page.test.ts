/**
 * `attnscope ablate --out page.html` in real Chromium: the page opens on the ablation view of the
 * real run (stories260k, heads 4:0 and 4:1 removed) and states the KL and cosine that
 * `attnscope ablate --json` prints for the same input; the page's other views are there too.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { buildWebClient, launchChromium, withPage } from './harness.js';

const TEXT = 'Lily saw a big dog. She gave the dog a';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-ablate-page-'));
let browser: Browser;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('attnscope ablate --out page.html', () => {
  it('opens on the ablation view with the numbers ablate --json prints', async () => {
    const args = ['ablate', '--text', TEXT, '--heads', '4:0,4:1'];
    const json = runCli(tmp, [...args, '--json'], 120_000, tmp);
    expect(json.status, json.stderr).toBe(0);
    const effect = JSON.parse(json.stdout) as { kl: number; cosine: number; candidates: unknown[] };
    const page = join(tmp, 'ablation.html');
    const html = runCli(tmp, [...args, '--out', page], 120_000, tmp);
    expect(html.status, html.stderr).toBe(0);
    expect(html.stderr).toMatch(/^wrote .*ablation\.html/m);
    expect(readFileSync(page, 'utf8')).toMatch(/^<!doctype html>/i);

    await withPage(browser, page, async (p, opened) => {
      await p.waitForSelector('[data-testid=ablation-svg] rect.ablation-bar');
      expect(await p.getAttribute('[data-testid=tab-ablation]', 'aria-selected')).toBe('true');
      const text = (await p.textContent('[data-testid=ablation-svg]')) ?? '';
      // The page states KL to 3 significant digits and the cosine to 4 decimals.
      const kl = /KL\(before ‖ after\) = ([0-9.e+−-]+) nats/.exec(text);
      expect(kl, text).not.toBeNull();
      const shown = Number(kl![1]!.replace('−', '-'));
      expect(Math.abs(shown - effect.kl)).toBeLessThanOrEqual(Math.abs(effect.kl) * 5e-3);
      expect(text).toContain(`cosine of the last hidden states = ${effect.cosine.toFixed(4)}`);
      expect(text).toContain('removed (zero ablation)');
      // Two bars (before, after) per candidate shown: the view shows at most 10 of the union ablate lists.
      expect(await p.locator('[data-testid=ablation-svg] rect.ablation-bar').count()).toBe(2 * Math.min(10, effect.candidates.length));
      // The model's attention views are on the page too.
      await p.click('[data-testid=tab-heatmap]');
      await p.waitForSelector('[data-testid=heatmap-view]:not([hidden])');
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
      expect(opened.network()).toEqual([]);
    });
  });

  it('refuses --json with a page, and --theme without one, in one line', () => {
    const both = runCli(tmp, ['ablate', '--text', TEXT, '--heads', '4:0', '--json', '--out', join(tmp, 'x.html')], 120_000, tmp);
    expect(both.status).toBe(2);
    expect(both.stderr.trim().split('\n')).toHaveLength(1);
    const theme = runCli(tmp, ['ablate', '--text', TEXT, '--heads', '4:0', '--theme', 'dark'], 120_000, tmp);
    expect(theme.status).toBe(2);
    expect(theme.stderr).toMatch(/--theme applies to --out page\.html only/);
  });
});
