/** `attnscope models`: the architecture families attnscope runs, with their config.json model_types. */
import { supportedFamilies } from '../models/registry.js';
import { parseCommandArgs, UsageError } from './parse.js';

export const MODELS_USAGE = `attnscope models

  Lists the supported architecture families, one a line: the family, then every config.json
  \`model_type\` it runs. A checkpoint whose model_type is not listed is refused with the closest
  supported one named.`;

export async function modelsCommand(argv: string[]): Promise<void> {
  const { positionals } = parseCommandArgs(argv, {});
  if (positionals.length > 0) throw new UsageError(`models takes no arguments, got ${positionals.join(' ')}`);
  for (const { family, modelTypes } of supportedFamilies()) process.stdout.write(`${family}: ${modelTypes.join(', ')}\n`);
}
