/** Node's file errors as attnscope's one line (io only: core stays free of Node's types). */
import { AttnscopeError } from '../core/errors.js';

/** A file that could not be opened or read, as one line: `<path>: no such file`, else the system's message. */
export function fileError(path: string, e: unknown): AttnscopeError {
  return new AttnscopeError(`${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
}
