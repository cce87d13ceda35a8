/**
 * A worker thread of head-table-threads.ts: computes the head table of each part it is sent
 * (analysis/head-table-parts.ts) and replies with its rows, or with the error's message. The part's
 * layers are views of a SharedArrayBuffer that the calling thread fills one layer at a time while it
 * computes its own range; `ready[0]` counts the layers filled so far (layerIndex order), and this
 * thread waits on it (Atomics) before it first reads a layer that is not in yet.
 */
import { parentPort } from 'node:worker_threads';
import { type HeadTablePart, runHeadTablePart } from '../analysis/head-table-parts.js';
import { headKernelStatus } from '../analysis/wasm/head-kernel.js';

export type HeadTableThreadMessage =
  | {
      part: HeadTablePart;
      /** One int32 over a SharedArrayBuffer: how many of the part's layers are in (the calling thread stores and notifies). */
      ready: Int32Array;
    }
  /** Get ready for a part (compile the kernel now); no reply. */
  | { warm: true };

parentPort?.on('message', (m: HeadTableThreadMessage) => {
  if ('warm' in m) {
    headKernelStatus();
    return;
  }
  const { part, ready } = m;
  try {
    const wait = (i: number): void => {
      for (let have = Atomics.load(ready, 0); have <= i; have = Atomics.load(ready, 0)) Atomics.wait(ready, 0, have);
    };
    parentPort!.postMessage({ ok: true, rows: runHeadTablePart(part, undefined, wait) });
  } catch (e) {
    parentPort!.postMessage({ ok: false, message: e instanceof Error ? e.message : String(e) });
  }
});
