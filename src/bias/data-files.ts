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
