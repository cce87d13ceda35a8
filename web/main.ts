/**
 * Entry point of the standalone page: reads the header and the base64 blobs the page carries,
 * decodes attention (then queries and keys in the background), and mounts the app. Touches no
 * network: everything is in the page.
 */
import { inflateSync } from 'fflate';
import { type Inflate, type PayloadHeader, type PayloadSource, decodeTensor, decodeTrace, fromBase64, placeTensor } from '../src/views/html/payload.js';
import { App } from './app.js';
import { attentionSource, attentionStacks, withAttentionLayers } from '../src/core/attention-on-demand.js';
import type { Trace } from '../src/core/trace.js';
import { LONG_TOKENS } from '../src/views/layout/heatmap-tiles.js';
import { bootCompare } from './views/compare.js';
import { bootBiasReport } from './views/bias-report.js';
import { rememberScript, runFlowWorker } from './flow-worker.js';

/** Raw deflate with the browser's DecompressionStream, or fflate where that is missing. */
const inflate: Inflate = async (data, rawLength) => {
  if (typeof DecompressionStream === 'function') {
    try {
      const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
      return new Uint8Array(await new Response(stream).arrayBuffer());
    } catch {
      // fall through to fflate (older browsers reject 'deflate-raw')
    }
  }
  return inflateSync(data, { out: new Uint8Array(rawLength) });
};

/** On-demand traces up to this many bytes of attention, and LONG_TOKENS tokens, are computed whole in the page. */
const SMALL_BYTES = 256 * 2 ** 20;

function smallEnough(trace: Trace): boolean {
  let bytes = 0;
  for (const stack of attentionStacks(trace)) {
    const s = attentionSource(trace, stack);
    if (Math.max(s.numQueries, s.numKeys) > LONG_TOKENS) return false;
    bytes += 4 * s.numLayers * s.numHeads * s.numQueries * s.numKeys;
  }
  return bytes <= SMALL_BYTES;
}

/** The base64 text of data block i; the element is emptied (each block is decoded once, and long pages hold tens of MB). */
function blobText(i: number): string {
  const el = document.getElementById(`attnscope-blob-${i}`);
  if (!el) throw new Error(`the page is missing data block ${i}`);
  const text = el.textContent ?? '';
  el.textContent = '';
  return text;
}

async function boot(): Promise<void> {
  const mount = document.getElementById('attnscope-app')!;
  const t0 = performance.now();
  try {
    const compareEl = document.getElementById('attnscope-compare');
    if (compareEl) {
      // A comparison page (src/views/html/compare-page.ts).
      await bootCompare(mount, compareEl, (i) => fromBase64(blobText(i)), inflate);
      document.body.dataset.ready = 'true';
      return;
    }
    const biasEl = document.getElementById('attnscope-bias-report');
    if (biasEl) {
      // A bias report (src/views/html/bias-report.ts).
      bootBiasReport(mount, biasEl);
      document.body.dataset.ready = 'true';
      return;
    }
    const headerEl = document.getElementById('attnscope-header');
    if (!headerEl) throw new Error('the page holds no attnscope data');
    const header = JSON.parse(headerEl.textContent ?? '') as PayloadHeader;
    const source: PayloadSource = {
      header,
      blob: (i) => fromBase64(blobText(i)),
      rawLength: (i) => header.blobRawLengths[i]!,
    };
    // A long trace carries queries, keys and score terms instead of attention (computed on demand): decode them first.
    const onDemand = !header.tensors.some((t) => t.kind === 'attention');
    const decoded = await decodeTrace(source, inflate, onDemand ? ['attention', 'scoreBias', 'queries', 'keys'] : ['attention']);
    // A short one gets its layers computed on first read, so that every view shows it as a dense trace.
    const trace = onDemand && smallEnough(decoded) ? withAttentionLayers(decoded, SMALL_BYTES) : decoded;
    const qkReady = (async () => {
      await new Promise((r) => setTimeout(r, 0));
      for (const t of header.tensors) {
        if (t.kind === 'attention' || onDemand) continue;
        placeTensor(trace, header, t, await decodeTensor(source, t, inflate));
      }
      document.body.dataset.qkReady = 'true';
    })();
    qkReady.catch((e: unknown) => console.error('attnscope: decoding queries and keys failed', e));
    new App(trace, header, qkReady, mount);
    document.body.dataset.ready = 'true';
    document.body.dataset.readyAt = performance.now().toFixed(1);
    document.body.dataset.bootMs = (performance.now() - t0).toFixed(1);
  } catch (e) {
    mount.replaceChildren();
    const p = document.createElement('p');
    p.className = 'boot-error';
    p.dataset.testid = 'boot-error';
    p.textContent = `attnscope could not open this page's data: ${(e as Error).message}`;
    mount.append(p);
    document.body.dataset.ready = 'error';
    throw e;
  }
}

// The same script runs as the attention-flow worker (flow-worker.ts): there is no document there.
if (typeof document === 'undefined') runFlowWorker();
else {
  rememberScript();
  void boot();
}
