/**
 * An error caused by the user's input (a missing file, a corrupt checkpoint, an unsupported
 * model, a text too long...). The CLI prints its message on one line and exits non-zero,
 * without a stack trace.
 */
export class AttnscopeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AttnscopeError';
  }
}
