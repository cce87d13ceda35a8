/**
 * The fuzz suite's child process (see child.ts): runs one case per line of stdin, with native
 * code (the tokenizers binding, onnxruntime) that could abort the process, and answers one JSON
 * line per case on stdout. A crash or a hang shows in the parent as a failed case.
 *
 * Requests:
 *   {"kind": "tokenizer", "tokenizerJson": "...", "tokenizerConfig"?: "...", "texts": ["..."]}
 *   {"kind": "model", "dir": "...", "text": "...", "decoderText"?: "..."}
 * Answers: {"ok": true, "summary": "..."} or {"ok": false, "name": "...", "message": "..."}.
 */
import { createInterface } from 'node:readline';
import { loadModel } from '../../src/engine/load.js';
import { createTokenizer } from '../../src/tokenizer/load-tokenizer.js';

interface TokenizerRequest {
  kind: 'tokenizer';
  tokenizerJson: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
  texts: string[];
}

interface ModelRequest {
  kind: 'model';
  dir: string;
  text: string;
  decoderText?: string;
}

type Request = TokenizerRequest | ModelRequest;

async function run(request: Request): Promise<string> {
  if (request.kind === 'tokenizer') {
    const tokenizer = createTokenizer(request);
    const counts: number[] = [];
    for (const text of request.texts) {
      const tokens = await tokenizer.encode(text);
      counts.push(tokens.length);
      tokenizer.decode(tokens.map((t) => t.id));
    }
    return `tokens ${counts.join(',')}`;
  }
  const model = await loadModel(request.dir, { offline: true, graphCache: false, threads: 1 });
  try {
    const trace = await model.trace(request.text, request.decoderText !== undefined ? { decoderText: request.decoderText } : {});
    return `${trace.tokens.length} tokens, stacks ${Object.keys(trace.attention).join(',')}`;
  } finally {
    await model.dispose();
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let answer: Record<string, unknown>;
  try {
    answer = { ok: true, summary: await run(JSON.parse(line) as Request) };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    answer = { ok: false, name: e.name, message: e.message, stack: e.stack };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
