/**
 * Checks a SentencePiece `precompiled_charsmap` (the `Precompiled` normalizer of T5, ALBERT,
 * XLNet... tokenizers) before it reaches the Rust `tokenizers` binding, whose reader
 * (`spm_precompiled`) indexes the data without bounds checks: a corrupt charsmap aborts the whole
 * process (a Rust panic, exit 134) on the first text that walks into the damage.
 *
 * The format: `[u32 trie size in bytes][trie: u32 units][normalized strings, '\0'-separated]`, all
 * little-endian. The trie is a darts-clone double array. Normalizing a text walks it from the root
 * byte by byte exactly as below; every array index such a walk can touch must lie inside the
 * trie, and every replacement it can select must start at a character boundary of the strings.
 * The walk here visits every state reachable by any byte (1-255) from the root once, so a charsmap
 * that passes can be used on any text without a panic.
 */

/** Why the charsmap cannot be used, or null when it is sound. */
export function precompiledCharsmapProblem(base64: string): string | null {
  // The binding's base64 reader is strict (padding, canonical last symbol): so is this check.
  const bytes = Buffer.from(base64, 'base64');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(base64) || bytes.toString('base64') !== base64) return 'is not valid base64';
  if (bytes.length < 4) return 'is too short to hold a trie';
  const trieBytes = bytes.readUInt32LE(0);
  const units = Math.floor(trieBytes / 4);
  if (4 + units * 4 > bytes.length) return `declares a ${trieBytes}-byte trie but holds ${bytes.length - 4} bytes`;
  if (units === 0) return 'has an empty trie';
  const array = new Uint32Array(units);
  for (let i = 0; i < units; i++) array[i] = bytes.readUInt32LE(4 + i * 4);
  const normalized = bytes.subarray(4 + units * 4);
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  try {
    utf8.decode(normalized);
  } catch {
    return 'holds replacement strings that are not valid UTF-8';
  }

  // darts-clone units, as spm_precompiled reads them: offset = (u >> 10) << ((u & 1 << 9) >> 6),
  // label = u & (1 << 31 | 0xff), has_leaf = u >> 8 & 1, value = u & ((1 << 31) - 1). Byte c
  // walks from node to the unit at node ^ c if its label is c, and on to that unit ^ its offset.
  // The children of a node: the units whose label c is not 0 and lies at node ^ c. Grouped by
  // node once (counting sort), so the walk below costs one step per unit, not 255 per node.
  const parentOf = (at: number): number => {
    const u = array[at]!;
    return (u & 0x800000ff) > 0 ? at ^ (u & 0xff) : -1;
  };
  const first = new Uint32Array(units + 1);
  for (let at = 0; at < units; at++) {
    const p = parentOf(at);
    if (p >= 0 && p < units) first[p + 1]!++;
  }
  for (let i = 0; i < units; i++) first[i + 1]! += first[i]!;
  const fill = first.slice(0, units);
  const children = new Uint32Array(first[units]!);
  for (let at = 0; at < units; at++) {
    const p = parentOf(at);
    if (p >= 0 && p < units) children[fill[p]!++] = at;
  }

  const seen = new Uint8Array(units);
  const stack: number[] = [];
  const visit = (node: number): string | null => {
    // The largest index `node ^ c` a walk reaches for c in 1..255 (it stops at a 0 byte).
    const reach = (node & 0xff) === 0xff ? node ^ 1 : node | 0xff;
    if (reach >= units) return `has a trie that points outside itself (unit ${reach} of ${units})`;
    if (seen[node] === 0) {
      seen[node] = 1;
      stack.push(node);
    }
    return null;
  };
  const offset = (u: number): number => (u >>> 10) * (u & 0x200 ? 256 : 1);
  let problem = visit(offset(array[0]!));
  while (problem === null && stack.length > 0) {
    const node = stack.pop()!;
    for (let k = first[node]!; k < first[node + 1]! && problem === null; k++) {
      const at = children[k]!;
      const unit = array[at]!;
      const next = at ^ offset(unit);
      if ((unit >>> 8) & 1) {
        if (next >= units) return `has a trie that points outside itself (unit ${next} of ${units})`;
        const v = array[next]! & 0x7fffffff;
        if (v > normalized.length) return `has a replacement at byte ${v}, past its ${normalized.length} bytes of strings`;
        if (v < normalized.length && (normalized[v]! & 0xc0) === 0x80) return `has a replacement starting inside a character (byte ${v})`;
      }
      problem = visit(next);
    }
  }
  return problem;
}

/** The charsmaps of every `Precompiled` normalizer in a tokenizer.json normalizer value (undefined when one has none). */
export function precompiledCharsmaps(normalizer: unknown): unknown[] {
  const out: unknown[] = [];
  const visit = (n: unknown, depth: number): void => {
    // serde_json stops at 128 levels; look deeper than that.
    if (n === null || typeof n !== 'object' || depth > 256) return;
    const o = n as Record<string, unknown>;
    if (o['type'] === 'Precompiled') out.push(o['precompiled_charsmap']);
    if (o['type'] === 'Sequence' && Array.isArray(o['normalizers'])) for (const inner of o['normalizers'] as unknown[]) visit(inner, depth + 1);
  };
  visit(normalizer, 0);
  return out;
}
