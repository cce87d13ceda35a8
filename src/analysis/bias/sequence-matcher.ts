/**
 * The opcodes of Python's difflib.SequenceMatcher (isjunk=None, autojunk=True), for sequences of
 * numbers or strings: what CrowS-Pairs' metric.py and bias-bench use to find the tokens two
 * sentences share. Written from difflib's documented algorithm (Ratcliff/Obershelp: the longest
 * matching block, then recursively left and right of it), with its tie-breaking and its "popular
 * element" heuristic (sequences of 200 or more elements: an element of the second sequence
 * occurring more than 1% + 1 times is not used to start a match, only to extend one), so the
 * blocks are the ones difflib finds, not merely an equally long alignment.
 */

export type OpcodeTag = 'replace' | 'delete' | 'insert' | 'equal';

/** [tag, i1, i2, j1, j2]: a[i1:i2] relates to b[j1:j2] as `tag` says (difflib's get_opcodes). */
export type Opcode = readonly [OpcodeTag, number, number, number, number];

/** A matching block: a[i:i+size] equals b[j:j+size]. */
export interface MatchBlock {
  i: number;
  j: number;
  size: number;
}

type Item = number | string;

/** Positions of each element of b, in increasing order, less difflib's popular elements. */
function indexOf(b: readonly Item[], autojunk: boolean): Map<Item, number[]> {
  const b2j = new Map<Item, number[]>();
  b.forEach((x, j) => {
    const list = b2j.get(x);
    if (list) list.push(j);
    else b2j.set(x, [j]);
  });
  const n = b.length;
  if (autojunk && n >= 200) {
    const ntest = Math.floor(n / 100) + 1;
    for (const [x, list] of [...b2j]) if (list.length > ntest) b2j.delete(x);
  }
  return b2j;
}

/**
 * The longest block a[i:i+k] == b[j:j+k] inside a[alo:ahi], b[blo:bhi]; of equally long ones the
 * one starting earliest in a, then earliest in b (difflib's find_longest_match).
 */
function longestMatch(a: readonly Item[], b: readonly Item[], b2j: Map<Item, number[]>, alo: number, ahi: number, blo: number, bhi: number): MatchBlock {
  let besti = alo;
  let bestj = blo;
  let bestsize = 0;
  let j2len = new Map<number, number>();
  for (let i = alo; i < ahi; i++) {
    const next = new Map<number, number>();
    for (const j of b2j.get(a[i]!) ?? []) {
      if (j < blo) continue;
      if (j >= bhi) break;
      const k = (j2len.get(j - 1) ?? 0) + 1;
      next.set(j, k);
      if (k > bestsize) {
        besti = i - k + 1;
        bestj = j - k + 1;
        bestsize = k;
      }
    }
    j2len = next;
  }
  // Popular elements cannot start a match but may extend one (there is no other junk here).
  while (besti > alo && bestj > blo && a[besti - 1] === b[bestj - 1]) {
    besti--;
    bestj--;
    bestsize++;
  }
  while (besti + bestsize < ahi && bestj + bestsize < bhi && a[besti + bestsize] === b[bestj + bestsize]) bestsize++;
  return { i: besti, j: bestj, size: bestsize };
}

/** difflib's get_matching_blocks: non-adjacent blocks in order, ending with the dummy (len(a), len(b), 0). */
export function matchingBlocks(a: readonly Item[], b: readonly Item[], autojunk = true): MatchBlock[] {
  const b2j = indexOf(b, autojunk);
  const queue: [number, number, number, number][] = [[0, a.length, 0, b.length]];
  const blocks: MatchBlock[] = [];
  while (queue.length > 0) {
    const [alo, ahi, blo, bhi] = queue.pop()!;
    const m = longestMatch(a, b, b2j, alo, ahi, blo, bhi);
    if (m.size === 0) continue;
    blocks.push(m);
    if (alo < m.i && blo < m.j) queue.push([alo, m.i, blo, m.j]);
    if (m.i + m.size < ahi && m.j + m.size < bhi) queue.push([m.i + m.size, ahi, m.j + m.size, bhi]);
  }
  blocks.sort((x, y) => x.i - y.i || x.j - y.j || x.size - y.size);
  const merged: MatchBlock[] = [];
  let cur: MatchBlock = { i: 0, j: 0, size: 0 };
  for (const m of blocks) {
    if (cur.i + cur.size === m.i && cur.j + cur.size === m.j) cur = { ...cur, size: cur.size + m.size };
    else {
      if (cur.size > 0) merged.push(cur);
      cur = m;
    }
  }
  if (cur.size > 0) merged.push(cur);
  merged.push({ i: a.length, j: b.length, size: 0 });
  return merged;
}

/** difflib's get_opcodes: how to turn a into b, as replace/delete/insert/equal spans. */
export function opcodes(a: readonly Item[], b: readonly Item[], autojunk = true): Opcode[] {
  let i = 0;
  let j = 0;
  const out: Opcode[] = [];
  for (const m of matchingBlocks(a, b, autojunk)) {
    const tag: OpcodeTag | null = i < m.i && j < m.j ? 'replace' : i < m.i ? 'delete' : j < m.j ? 'insert' : null;
    if (tag) out.push([tag, i, m.i, j, m.j]);
    i = m.i + m.size;
    j = m.j + m.size;
    if (m.size > 0) out.push(['equal', m.i, i, m.j, j]);
  }
  return out;
}

/**
 * The positions the two sequences share, as CrowS-Pairs' get_span takes them: every index of the
 * 'equal' opcodes, in order, in a (`first`) and in b (`second`), paired one to one.
 */
export function sharedPositions(a: readonly Item[], b: readonly Item[]): { first: number[]; second: number[] } {
  const first: number[] = [];
  const second: number[] = [];
  for (const [tag, i1, i2, j1] of opcodes(a, b)) {
    if (tag !== 'equal') continue;
    for (let k = 0; k < i2 - i1; k++) {
      first.push(i1 + k);
      second.push(j1 + k);
    }
  }
  return { first, second };
}
