/**
 * The files of one model checkpoint, wherever they live (a local directory, the Hugging Face
 * cache, or the Hub, fetched on demand).
 */
export interface ModelFiles {
  /** Display name: the Hub id (`org/name`) or the directory's base name. */
  readonly name: string;
  /** Local directory holding the files (a snapshot directory for Hub models). */
  readonly dir: string;
  /**
   * Absolute path of `file` (relative to the model root, e.g. `config.json` or
   * `model-00001-of-00002.safetensors`), downloading it first if the source is the Hub.
   * Resolves to undefined when the model has no such file.
   */
  path(file: string): Promise<string | undefined>;
}
