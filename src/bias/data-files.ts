/**
 * The bias data shipped in the package (data/bias: CrowS-Pairs, WinoGender, WinoBias, with their
 * licences; see data/bias/README.md), found from this module's location (src/ or dist/src/).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AttnscopeError } from '../core/errors.js';
import { parseCrowsPairs, type CrowsPair } from '../analysis/bias/crows-pairs.js';
import { parseOccupationStats, parseWinobias, parseWinogender, type PronounItem } from '../analysis/bias/wino.js';
import { crowsLexicons, genderLexicon, occupationLexicon, type GroupLexicon } from '../analysis/bias/groups.js';

/** The package's data/bias directory. */
export function biasDataDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'data', 'bias');
    if (existsSync(join(candidate, 'README.md'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('the bias data (data/bias) is missing from the package');
}

/** A file of the shipped data, as text. */
export async function readBiasData(...path: string[]): Promise<string> {
  return readFile(join(biasDataDir(), ...path), 'utf8');
}

/** CrowS-Pairs' rows: the shipped crows_pairs_anonymized.csv, or `file` (same layout). */
export async function loadCrowsPairs(file?: string): Promise<CrowsPair[]> {
  if (file === undefined) return parseCrowsPairs(await readBiasData('crows-pairs', 'crows_pairs_anonymized.csv'), 'crows_pairs_anonymized.csv');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new AttnscopeError(`--data ${file}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return parseCrowsPairs(text, file);
}

/** WinoGender's 720 sentences as pronoun-probe items. */
export async function loadWinogender(): Promise<PronounItem[]> {
  return parseWinogender(await readBiasData('winogender', 'all_sentences.tsv'));
}

/** WinoBias' pro/anti file pairs of the given splits (type1/type2 × dev/test) as pronoun-probe items, and the pairs skipped (see parseWinobias). */
export async function loadWinobias(splits: readonly string[] = WINOBIAS_SPLITS): Promise<{ items: PronounItem[]; skipped: string[] }> {
  const items: PronounItem[] = [];
  const skipped: string[] = [];
  for (const split of splits) {
    const [type, part] = split.split('.') as [string, string];
    const r = parseWinobias(await readBiasData('winobias', `pro_stereotyped_${type}.txt.${part}`), await readBiasData('winobias', `anti_stereotyped_${type}.txt.${part}`), split);
    items.push(...r.items);
    skipped.push(...r.skipped);
  }
  return { items, skipped };
}

export const WINOBIAS_SPLITS = ['type1.dev', 'type1.test', 'type2.dev', 'type2.test'] as const;

/** WinoGender's occupation statistics (share of women, %). */
export async function loadOccupationStats(): Promise<Map<string, { bls: number; bergsma: number }>> {
  return parseOccupationStats(await readBiasData('winogender', 'occupations-stats.tsv'));
}

/** Group names the probe knows: gender, occupation and CrowS-Pairs' bias types. */
export const GROUP_NAMES = ['gender', 'occupation', 'race-color', 'nationality', 'religion', 'age', 'socioeconomic', 'sexual-orientation', 'physical-appearance', 'disability'] as const;

/** The built-in group lexicons (see analysis/bias/groups.ts), or those named. */
export async function loadGroupLexicons(names?: readonly string[]): Promise<GroupLexicon[]> {
  const wanted = names ?? GROUP_NAMES;
  const out: GroupLexicon[] = [];
  if (wanted.includes('gender')) out.push(genderLexicon(await readBiasData('winobias', 'generalized_swaps.txt'), await readBiasData('winobias', 'extra_gendered_words.txt')));
  if (wanted.includes('occupation')) {
    const winogender = [...(await loadOccupationStats()).keys()].join('\n');
    out.push(occupationLexicon(await readBiasData('winobias', 'male_occupations.txt'), await readBiasData('winobias', 'female_occupations.txt'), winogender));
  }
  const crows = wanted.filter((n) => n !== 'gender' && n !== 'occupation');
  if (crows.length > 0) {
    const lexicons = crowsLexicons(await loadCrowsPairs());
    for (const n of crows) {
      const l = lexicons.find((x) => x.name === n);
      if (l) out.push(l);
    }
  }
  return out;
}
