/**
 * A worker thread of head-table-threads.ts: computes the head table of each part it is sent
 * (analysis/head-table-parts.ts) and replies with its rows, or with the error's message.
 */
import { parentPort } from 'node:worker_threads';
import { type HeadTablePart, runHeadTablePart } from '../analysis/head-table-parts.js';

parentPort?.on('message', (part: HeadTablePart) => {
  try {
    parentPort!.postMessage({ ok: true, rows: runHeadTablePart(part) });
  } catch (e) {
    parentPort!.postMessage({ ok: false, message: e instanceof Error ? e.message : String(e) });
  }
});
