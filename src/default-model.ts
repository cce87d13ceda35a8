/** Where the embedded default model (stories260k, see models/stories260k/PROVENANCE.md) lives. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_MODEL_NAME = 'stories260k';

/** The package's `models/stories260k` directory, found from this module's location (src/ or dist/src/). */
export function defaultModelDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'models', DEFAULT_MODEL_NAME);
    if (existsSync(join(candidate, 'config.json'))) return candidate;
    dir = dirname(dir);
  }
  throw new Error('the embedded default model (models/stories260k) is missing from the package');
}
