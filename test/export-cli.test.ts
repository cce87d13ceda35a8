/**
 * `attnscope export` end to end, run as a real process: SVG and PNG images of every view from the
 * default model and from trace files (JSON, .safetensors, the PyTorch-written t5 trace), PNGs
 * decoded and checked for size, atomic writes, and one-line errors for bad arguments. Also the
 * PNG rasteriser's fonts (CJK) in-process.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzlibSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { pngSize, svgToPng } from '../src/views/png.js';
import { FONT_FAMILY } from '../src/views/theme.js';
import { ROOT, runCli, type Run } from './helpers/cli.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const T5 = join(ROOT, 'test/fixtures/traces/t5-encdec.safetensors');
const TEXT = 'Once upon a time, there was a little girl named Lily.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-export-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function attnscope(...args: string[]): Run {
  return runCli(tmp, args);
}

function expectOk(run: Run): void {
  expect(run.status, run.stderr).toBe(0);
  expect(run.stderr).toMatch(/^wrote /);
}

/** A user error: non-zero exit, exactly one line on stderr, no stack trace. */
function expectCleanError(run: Run, pattern: RegExp): void {
  expect(run.status, run.stderr).not.toBe(0);
  expect(run.status).not.toBeNull();
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^attnscope: /);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
}

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Decodes an 8-bit RGB/RGBA PNG fully: signature, chunk CRCs, IHDR, zlib stream, scanline
 * filters. Returns RGBA pixels.
 */
function decodePng(bytes: Uint8Array): { width: number; height: number; rgba: Uint8Array } {
  expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  let o = 8;
  let width = 0;
  let height = 0;
  let colorType = -1;
  const idat: Uint8Array[] = [];
  let sawEnd = false;
  while (o < bytes.length) {
    const len = v.getUint32(o);
    const type = String.fromCharCode(...bytes.subarray(o + 4, o + 8));
    let c = 0xffffffff;
    for (let i = o + 4; i < o + 8 + len; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
    expect((c ^ 0xffffffff) >>> 0, `CRC of ${type}`).toBe(v.getUint32(o + 8 + len));
    if (type === 'IHDR') {
      width = v.getUint32(o + 8);
      height = v.getUint32(o + 12);
      expect(bytes[o + 16]).toBe(8);
      colorType = bytes[o + 17]!;
    } else if (type === 'IDAT') idat.push(bytes.subarray(o + 8, o + 8 + len));
    else if (type === 'IEND') sawEnd = true;
    o += 12 + len;
  }
  expect(sawEnd).toBe(true);
  expect([2, 6]).toContain(colorType);
  const bpp = colorType === 6 ? 4 : 3;
  const raw = unzlibSync(Buffer.concat(idat));
  const stride = width * bpp;
  expect(raw.length).toBe(height * (stride + 1));
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)]!;
    if (f > 4) throw new Error(`PNG: bad filter type ${f} on row ${y}`);
    for (let x = 0; x < stride; x++) {
      const r = raw[y * (stride + 1) + 1 + x]!;
      const a = x >= bpp ? out[y * stride + x - bpp]! : 0;
      const b = y > 0 ? out[(y - 1) * stride + x]! : 0;
      const c = x >= bpp && y > 0 ? out[(y - 1) * stride + x - bpp]! : 0;
      const p = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c);
      out[y * stride + x] = (r + p) & 0xff;
    }
  }
  const rgba = new Uint8Array(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    rgba.set(out.subarray(i * bpp, i * bpp + 3), i * 4);
    rgba[i * 4 + 3] = bpp === 4 ? out[i * bpp + 3]! : 255;
  }
  return { width, height, rgba };
}

function svgSize(path: string): { width: number; height: number } {
  const root = parseXml(readFileSync(path, 'utf8'));
  return { width: Number(root.attrs.width), height: Number(root.attrs.height) };
}

function noTempFiles(dir: string): void {
  expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
}

let traceJson: string; // default model, no queries/keys
let traceQk: string; // default model with queries/keys, .safetensors

beforeAll(async () => {
  const model = await loadModel();
  try {
    const plain: Trace = await model.trace(TEXT);
    traceJson = join(tmp, 'stories.json');
    await writeTraceFile(traceJson, plain);
    const withQk = await model.trace(TEXT, { qk: true });
    traceQk = join(tmp, 'stories-qk.safetensors');
    await writeTraceFile(traceQk, withQk);
  } finally {
    await model.dispose();
  }
});

describe('attnscope export', () => {
  it('exports the head view of the default model as a valid PNG at scale 3', () => {
    const dir = mkdtempSync(join(tmp, 'png-'));
    const svg = join(dir, 'head.svg');
    const png = join(dir, 'head.png');
    expectOk(attnscope('export', '--text', TEXT, '--view', 'head', '--layer', '2', '--format', 'svg', '--out', svg));
    expectOk(attnscope('export', '--text', TEXT, '--view', 'head', '--layer', '2', '--format', 'png', '--scale', '3', '--out', png));
    const size = svgSize(svg);
    const bytes = new Uint8Array(readFileSync(png));
    const img = decodePng(bytes);
    expect(pngSize(bytes)).toEqual({ width: img.width, height: img.height });
    expect(img.width).toBe(Math.round(size.width * 3));
    expect(img.height).toBe(Math.round(size.height * 3));
    // The light background fills the corner; the image is not blank.
    expect([...img.rgba.subarray(0, 4)]).toEqual([255, 255, 255, 255]);
    let dark = 0;
    for (let i = 0; i < img.rgba.length; i += 4) if (img.rgba[i]! < 100 && img.rgba[i + 1]! < 100) dark++;
    expect(dark).toBeGreaterThan(1000);
    noTempFiles(dir);
  });

  it('exports every view of the default model as SVG, in both themes (format from the extension)', () => {
    const dir = mkdtempSync(join(tmp, 'views-'));
    for (const [view, extra] of [
      ['head', ['--heads', '0,3', '--query', '4']],
      ['model', ['--layers', '0,2', '--heads', '1,2,3']],
      ['neuron', ['--layer', '1', '--head', '6', '--query', '9']],
      ['heatmap', ['--layer', '4', '--aggregate', 'mean', '--log']],
    ] as const) {
      for (const theme of ['light', 'dark']) {
        const out = join(dir, `${view}-${theme}.svg`);
        expectOk(attnscope('export', '--text', TEXT, '--view', view, '--theme', theme, ...extra, '--out', out));
        const root = parseXml(readFileSync(out, 'utf8'));
        expect(root.attrs['data-theme']).toBe(theme);
        if (view === 'model') expect(findAll(root, 'g', (a) => a.class === 'cell')).toHaveLength(6);
        if (view === 'neuron') expect(findAll(root, 'text', (a) => a.class === 'softmax')).toHaveLength(16); // the engine was asked for q/k
        if (view === 'head') expect([...new Set(findAll(root, 'line', (a) => a['data-head'] !== undefined).map((l) => l.attrs['data-head']))].sort()).toEqual(['0', '3']);
      }
    }
    noTempFiles(dir);
  });

  it('applies --hide-special and --merge-subwords', () => {
    const out = join(tmp, 'merged.svg');
    expectOk(attnscope('export', '--text', TEXT, '--view', 'heatmap', '--head', '2', '--hide-special', '--merge-subwords', '--out', out));
    const keys = findAll(parseXml(readFileSync(out, 'utf8')), 'text', (a) => a.class === 'token key').map(textOf);
    expect(keys).toEqual(['Once', 'upon', 'a', 'time,', 'there', 'was', 'a', 'little', 'girl', 'named', 'Lily.']);
  });

  it('reads trace files: JSON, .safetensors with q/k (neuron view), and the PyTorch t5 trace (cross attention)', () => {
    const dir = mkdtempSync(join(tmp, 'traces-'));
    expectOk(attnscope('export', traceJson, '--view', 'heatmap', '--layer', '0', '--head', '1', '--out', join(dir, 'a.svg')));
    expectOk(attnscope('export', traceQk, '--view', 'neuron', '--layer', '3', '--head', '2', '--out', join(dir, 'n.png'), '--scale', '1'));
    expect(decodePng(new Uint8Array(readFileSync(join(dir, 'n.png')))).width).toBeGreaterThan(100);
    const cross = join(dir, 'cross.svg');
    expectOk(attnscope('export', T5, '--view', 'head', '--stack', 'cross', '--layer', '1', '--out', cross));
    const root = parseXml(readFileSync(cross, 'utf8'));
    expect(findAll(root, 'text', (a) => a.class === 'token query')).toHaveLength(18);
    expect(findAll(root, 'text', (a) => a.class === 'token key')).toHaveLength(88);
    expectOk(attnscope('export', T5, '--view', 'model', '--stack', 'decoder', '--out', join(dir, 'dec.svg')));
  });

  it('exports generation traces written by attnscope generate (JSON, .safetensors, T5) at a --step', async () => {
    const dir = mkdtempSync(join(tmp, 'generation-'));
    const json = join(dir, 'gen.json');
    const st = join(dir, 'gen.safetensors');
    const t5 = join(dir, 't5.safetensors');
    for (const [out, model] of [[json, []], [st, []], [t5, [join(ROOT, 'test/fixtures/t5')]]] as const) {
      const r = attnscope('generate', ...model, '--text', 'Once upon a time', '--max-new-tokens', '6', '--qk', '--out', out);
      expect(r.status, r.stderr).toBe(0);
    }
    const trace = await readTraceFile(json);
    const P = trace.generation!.promptLength;
    expect(trace.tokens).toHaveLength(P + 6);
    const labels = (root: ReturnType<typeof parseXml>, side: string) => findAll(root, 'text', (a) => /^token /.test(a.class ?? '') && a.class!.split(' ').includes(side));
    // Head view at step 3: prompt + 3 tokens in each column, the lines of the newest one.
    for (const src of [json, st]) {
      const out = join(dir, 'head-3.svg');
      expectOk(attnscope('export', src, '--view', 'head', '--layer', '2', '--step', '3', '--out', out));
      const root = parseXml(readFileSync(out, 'utf8'));
      expect(labels(root, 'query')).toHaveLength(P + 3);
      expect(labels(root, 'key')).toHaveLength(P + 3);
      expect(labels(root, 'query').filter((l) => l.attrs.class!.includes('generated'))).toHaveLength(3);
      const lines = findAll(root, 'line', (a) => a['data-q'] !== undefined);
      expect(lines).toHaveLength(8 * (P + 3));
      const W = trace.attention.self!.layers[2]!;
      const n = trace.tokens.length;
      for (const l of lines) {
        const h = Number(l.attrs['data-head']);
        expect(l.attrs['data-q']).toBe(String(P + 2));
        const w = W[(h * n + P + 2) * n + Number(l.attrs['data-k'])]!;
        expect(Math.abs(Number(l.attrs['stroke-opacity']) - w)).toBeLessThanOrEqual(w * 1e-5);
      }
      expect(textOf(root)).toContain('prompt | generated · greedy');
    }
    // Every view, whole sequence and steps; PNG too.
    expectOk(attnscope('export', json, '--view', 'heatmap', '--layer', '1', '--head', '4', '--step', '0', '--out', join(dir, 'heat-0.png'), '--scale', '1'));
    expect(decodePng(new Uint8Array(readFileSync(join(dir, 'heat-0.png')))).width).toBeGreaterThan(100);
    expectOk(attnscope('export', st, '--view', 'neuron', '--layer', '1', '--head', '4', '--step', '5', '--out', join(dir, 'neuron-5.svg')));
    expect(findAll(parseXml(readFileSync(join(dir, 'neuron-5.svg'), 'utf8')), 'g', (a) => a.class === 'key-row')).toHaveLength(P + 5);
    expectOk(attnscope('export', json, '--view', 'model', '--step', '6', '--theme', 'dark', '--out', join(dir, 'model-6.svg')));
    expect(findAll(parseXml(readFileSync(join(dir, 'model-6.svg'), 'utf8')), 'rect', (a) => a.class === 'newest-row')).toHaveLength(5 * 8);
    expectOk(attnscope('export', json, '--view', 'heatmap', '--head', '0', '--out', join(dir, 'heat-all.svg')));
    expect(labels(parseXml(readFileSync(join(dir, 'heat-all.svg'), 'utf8')), 'query')).toHaveLength(P + 6);
    // An encoder-decoder generation: cross attention of the decoder's first 1 + 2 tokens over every encoder token.
    const t5trace = await readTraceFile(t5);
    const cross = join(dir, 't5-cross.svg');
    expectOk(attnscope('export', t5, '--view', 'head', '--stack', 'cross', '--step', '2', '--out', cross));
    const root = parseXml(readFileSync(cross, 'utf8'));
    expect(labels(root, 'query')).toHaveLength(3);
    expect(labels(root, 'key')).toHaveLength(t5trace.tokens.length);
    expectOk(attnscope('export', t5, '--view', 'neuron', '--stack', 'decoder', '--step', '4', '--out', join(dir, 't5-neuron.svg')));
    // Bad steps.
    expectCleanError(attnscope('export', traceJson, '--view', 'head', '--step', '1', '--out', join(dir, 'x.svg')), /--step applies to generation traces/);
    expectCleanError(attnscope('export', json, '--view', 'head', '--step', '7', '--out', join(dir, 'x.svg')), /step 7 is out of range .*steps 0–6/);
    expectCleanError(attnscope('export', json, '--view', 'head', '--step', 'last', '--out', join(dir, 'x.svg')), /--step: expected a non-negative integer/);
    expect(existsSync(join(dir, 'x.svg'))).toBe(false);
    noTempFiles(dir);
  });

  it('fails with one line for bad arguments, leaving no file behind', () => {
    const out = join(tmp, 'bad.svg');
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--layer', '5', '--out', out), /layer 5 is out of range \(the trace has 5: 0–4\)/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'attention-flow', '--out', out), /unknown view 'attention-flow'/);
    expectCleanError(attnscope('export', traceJson, '--view', 'neuron', '--out', out), /needs the queries and keys.*--qk/);
    expectCleanError(attnscope('export', T5, '--view', 'neuron', '--stack', 'cross', '--out', out), /--qk/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--head', '9', '--out', out), /head 9 is out of range/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'neuron', '--query', '16', '--out', out), /query token 16 is out of range/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head'), /--out/);
    expectCleanError(attnscope('export', '--text', TEXT, '--out', out), /--view/);
    expectCleanError(attnscope('export', '--view', 'head', '--out', out), /--text/);
    expectCleanError(attnscope('export', traceJson, '--text', 'hi', '--view', 'head', '--out', out), /--text does not apply to a trace file/);
    expectCleanError(attnscope('export', join(tmp, 'missing.json'), '--view', 'head', '--out', out), /missing\.json: no such trace file/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--theme', 'blue', '--out', out), /unknown theme 'blue'/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--out', join(tmp, 'x.gif')), /--format svg\|png/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--format', 'gif', '--out', out), /unknown format 'gif'/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--aggregate', 'mean', '--out', out), /--aggregate does not apply to the head view/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'heatmap', '--head', '1', '--aggregate', 'max', '--out', out), /either a head or an aggregate/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--stack', 'cross', '--out', out), /no 'cross' attention/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--scale', '0', '--format', 'png', '--out', join(tmp, 'bad.png')), /--scale/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--format', 'png', '--out', out), /--out \S*bad\.svg: export --format png writes \.png files, not \.svg/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--out', tmp), /is a directory/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--truncte', '--out', out), /unknown option '--truncte' \(did you mean --truncate\?\); see 'attnscope export --help'/);
    expectCleanError(attnscope('export', '--text', TEXT, '--view', 'head', '--out', join(tmp, 'no-such-dir', 'x.svg')), /no such directory/);
    expect(existsSync(out)).toBe(false);
    noTempFiles(tmp);
  });

  it('lists the command in the help', () => {
    const r = attnscope('export', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('attnscope export');
  });
});

describe('PNG rasteriser', () => {
  it('renders CJK and accented tokens with the system fonts', () => {
    const draw = (s: string) => {
      const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="120" height="40"><rect width="120" height="40" fill="#fff"/><text x="10" y="28" font-size="20" font-family="${FONT_FAMILY.replace(/"/g, '&quot;')}">${s}</text></svg>`;
      const img = decodePng(svgToPng(svg, { scale: 1 }));
      let ink = 0;
      for (let i = 0; i < img.rgba.length; i += 4) if (img.rgba[i]! < 128) ink++;
      return ink;
    };
    expect(draw('猫')).toBeGreaterThan(20);
    expect(draw('日本語')).toBeGreaterThan(60);
    expect(draw('café')).toBeGreaterThan(20);
    expect(draw('')).toBe(0);
  });

  it('scales the image', () => {
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="50" height="20"><rect width="50" height="20" fill="#123456"/></svg>';
    expect(pngSize(svgToPng(svg, { scale: 3 }))).toEqual({ width: 150, height: 60 });
    expect(pngSize(svgToPng(svg))).toEqual({ width: 100, height: 40 });
  });
});

// Keep the temp-file check honest: a file we write ourselves is noticed.
it('notices leftover temp files', () => {
  const dir = mkdtempSync(join(tmp, 'leftover-'));
  writeFileSync(join(dir, '.x.svg.1.tmp'), '');
  expect(() => noTempFiles(dir)).toThrow();
});
