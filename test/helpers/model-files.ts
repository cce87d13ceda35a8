/** A ModelFiles over a local directory, as the real model sources provide. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelFiles } from '../../src/io/model-files.js';

export function dirFiles(dir: string): ModelFiles {
  return {
    name: dir,
    dir,
    async path(file: string) {
      const path = join(dir, file);
      return (await stat(path).catch(() => undefined))?.isFile() ? path : undefined;
    },
  };
}
