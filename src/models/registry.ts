/** Every supported architecture family, keyed by config.json `model_type`. */
import { AttnscopeError } from '../core/errors.js';
import type { Architecture } from './architecture.js';
import { albertFamily } from './albert.js';
import { bartFamily } from './bart.js';
import { bertFamily } from './bert.js';
import { distilbertFamily } from './distilbert.js';
import { gpt2Family } from './gpt2.js';
import { gptNeoxFamily } from './gpt-neox.js';
import { llamaFamily } from './llama.js';
import { t5Family } from './t5.js';
import { optFamily } from './opt.js';

const FAMILIES: readonly Architecture[] = [bertFamily, distilbertFamily, albertFamily, gpt2Family, gptNeoxFamily, llamaFamily, t5Family, bartFamily, optFamily];

const BY_TYPE = new Map<string, Architecture>();
for (const family of FAMILIES) for (const t of family.modelTypes) BY_TYPE.set(t, family);

export function supportedModelTypes(): string[] {
  return [...BY_TYPE.keys()].sort();
}

export function architectureFor(modelType: string): Architecture {
  const arch = BY_TYPE.get(modelType);
  if (!arch) {
    throw new AttnscopeError(`unsupported model_type '${modelType}' (supported: ${supportedModelTypes().join(', ')})`);
  }
  return arch;
}
