/**
 * The head-metrics WebAssembly kernel in real Chromium, on a standalone page of the default model
 * (stories260k) on a text long enough for the quantiles' histogram path (over 4,096 entries per
 * head): the page's Content-Security-Policy lets it compile the kernel (no violation, no error),
 * the head-type view computes its table on it (WebAssembly.Module constructed on the page), and the
 * table it downloads is the one Node computes on the same kernel, and equal to the plain JavaScript
 * loops' to within their float64 roundings. With WebAssembly removed from the page, or refused by a
 * policy without 'wasm-unsafe-eval', the view computes the same table on the JavaScript loops.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { HEAD_TABLE_HEADER, type HeadTableRow, headTable, headTableCsv } from '../../src/analysis/head-types.js';
import type { Trace } from '../../src/core/trace.js';
import { openPage, standalonePageSuite, type OpenedPage } from './harness.js';

const SENTENCE = 'Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog. ';
const suite = standalonePageSuite('head-kernel', SENTENCE.repeat(5));
let browser: Browser;
let trace: Trace;
let file: string;
let wasmTable: HeadTableRow[];
let jsTable: HeadTableRow[];
beforeAll(() => {
  [browser, trace, file] = [suite.browser(), suite.trace(), suite.file()];
  wasmTable = headTable(trace, 'self', { kernel: 'wasm' });
  jsTable = headTable(trace, 'self', { kernel: 'js' });
});

/** Counts WebAssembly compilations and records CSP violations, before the page's own script runs. */
const INSTRUMENT = `
  window.__wasm = { modules: 0, failures: [] };
  window.__violations = [];
  document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
  if (globalThis.WebAssembly) {
    const Module = WebAssembly.Module;
    WebAssembly.Module = function (bytes) {
      try {
        const m = new Module(bytes);
        window.__wasm.modules++;
        return m;
      } catch (e) {
        window.__wasm.failures.push(String(e));
        throw e;
      }
    };
  }
`;

/** Opens `path` (a page file) with the instrumentation (and `before`, run first) and no network. */
function open(path: string, before = ''): Promise<OpenedPage> {
  return openPage(browser, path, undefined, { init: before + INSTRUMENT });
}

/** The head-type view's table, as its CSV download. */
async function pageCsv(page: Page): Promise<string> {
  await page.click('[data-testid=tab-types]');
  await page.waitForSelector('[data-testid=types-svg] rect.type-cell');
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-csv]')]);
  return readFileSync((await csv.path())!, 'utf8');
}

const state = (page: Page) => page.evaluate(() => ({ wasm: (window as unknown as { __wasm: { modules: number; failures: string[] } }).__wasm, violations: (window as unknown as { __violations: string[] }).__violations }));

/** The CSV's numbers against a table: within 1e-5 relative (the CSV keeps 6 significant digits), same top types. */
function expectCsvClose(csv: string, table: readonly HeadTableRow[]): void {
  const lines = csv.trimEnd().split('\n');
  expect(lines[0]).toBe(HEAD_TABLE_HEADER.join(','));
  expect(lines).toHaveLength(table.length + 1);
  lines.slice(1).forEach((line, i) => {
    const cells = line.split(',');
    const row = table[i]!;
    HEAD_TABLE_HEADER.forEach((c, j) => {
      const want = (row as unknown as Record<string, number | string | null>)[c];
      if (c === 'top_type') expect(cells[j]).toBe(want ?? '');
      else if (typeof want === 'number' && Number.isFinite(want)) expect(Math.abs(Number(cells[j]) - want), `row ${i} ${c}`).toBeLessThanOrEqual(1e-5 * Math.abs(want) + 1e-12);
      else expect(cells[j], `row ${i} ${c}`).toBe('');
    });
  });
}

describe('head-metrics kernel in the page', () => {
  it('the trace is long enough for the histogram path, and Node’s kernel and JavaScript tables agree', () => {
    const n = trace.tokens.length;
    expect(n * (n + 1) / 2).toBeGreaterThan(4096);
    expectCsvClose(headTableCsv(wasmTable), jsTable);
  });

  it('compiles the kernel under the page’s policy and computes the head table on it: the table Node computes', async () => {
    expect(readFileSync(file, 'utf8')).toContain("'wasm-unsafe-eval'");
    const o = await open(file);
    try {
      const csv = await pageCsv(o.page);
      const s = await state(o.page);
      expect(s.wasm.modules).toBeGreaterThanOrEqual(1);
      expect(s.wasm.failures).toEqual([]);
      expect(s.violations).toEqual([]);
      // The same module on the same weights: the same numbers as Node's kernel, digit for digit.
      expect(csv).toBe(headTableCsv(wasmTable));
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  });

  it('without WebAssembly the view computes the same table on the JavaScript loops', async () => {
    const o = await open(file, 'delete globalThis.WebAssembly;');
    try {
      const csv = await pageCsv(o.page);
      expect((await state(o.page)).wasm.modules).toBe(0);
      expectCsvClose(csv, jsTable);
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  });

  it('a policy without wasm-unsafe-eval refuses the compilation (a violation); the view falls back to the JavaScript loops', async () => {
    // In the suite's temporary folder (removed after the suite).
    const strict = file.replace(/\.html$/, '-strict.html');
    const html = readFileSync(file, 'utf8');
    writeFileSync(strict, html.replace(" 'wasm-unsafe-eval'", ''));
    const o = await open(strict);
    try {
      const csv = await pageCsv(o.page);
      const s = await state(o.page);
      expect(s.wasm.modules).toBe(0);
      expect(s.wasm.failures.length).toBeGreaterThanOrEqual(1);
      await expect.poll(async () => (await state(o.page)).violations.length).toBeGreaterThanOrEqual(1);
      expectCsvClose(csv, jsTable);
      expect(o.errors).toEqual([]);
    } finally {
      await o.close();
    }
  });
});
