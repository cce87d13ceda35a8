/** Every supported architecture family, keyed by config.json `model_type`. */
import { AttnscopeError, quote } from '../core/errors.js';
import { closest } from '../core/names.js';
import type { Architecture } from './architecture.js';
import { albertFamily } from './albert.js';
import { bartFamily } from './bart.js';
import { bertFamily } from './bert.js';
import { bloomFamily } from './bloom.js';
import { cohereFamily } from './cohere.js';
import { debertaV2Family } from './deberta-v2.js';
import { distilbertFamily } from './distilbert.js';
import { falconFamily } from './falcon.js';
import { gptNeoxFamily } from './gpt-neox.js';
import { gpt2Family } from './gpt2.js';
import { gptjFamily } from './gptj.js';
import { llamaFamily } from './llama.js';
import { m2m100Family } from './m2m100.js';
import { marianFamily } from './marian.js';
import { mixtralFamily } from './mixtral.js';
import { mpnetFamily } from './mpnet.js';
import { olmoFamily } from './olmo.js';
import { optFamily } from './opt.js';
import { pegasusFamily } from './pegasus.js';
import { phiFamily } from './phi.js';
import { qwen2MoeFamily } from './qwen2-moe.js';
import { stablelmFamily } from './stablelm.js';
import { starcoder2Family } from './starcoder2.js';
import { t5Family } from './t5.js';

/** Encoders, decoders, encoder-decoders; `attnscope models` lists them in this order. */
const FAMILIES: readonly Architecture[] = [
  bertFamily, distilbertFamily, albertFamily, mpnetFamily, debertaV2Family,
  gpt2Family, gptNeoxFamily, gptjFamily, optFamily, bloomFamily, falconFamily, phiFamily,
  llamaFamily, olmoFamily, stablelmFamily, starcoder2Family, cohereFamily, mixtralFamily, qwen2MoeFamily,
  t5Family, bartFamily, marianFamily, pegasusFamily, m2m100Family,
];

const BY_TYPE = new Map<string, Architecture>();
for (const family of FAMILIES) for (const t of family.modelTypes) BY_TYPE.set(t, family);

export function supportedModelTypes(): string[] {
  return [...BY_TYPE.keys()].sort();
}

/** Each family with the config.json `model_type`s it handles (the family named by its first). */
export function supportedFamilies(): { family: string; modelTypes: string[] }[] {
  return FAMILIES.map((f) => ({ family: f.modelTypes[0]!, modelTypes: [...f.modelTypes] }));
}

/**
 * The supported model_type most like an unsupported one: a type that one of ours starts or ends
 * (llama4 → llama), else the nearest by edit distance when it is near.
 */
function nearestModelType(modelType: string): string | undefined {
  const t = modelType.toLowerCase();
  const types = supportedModelTypes();
  const affix = types.filter((s) => t.startsWith(s) || t.endsWith(s) || s.startsWith(t)).sort((a, b) => b.length - a.length)[0];
  return affix ?? closest(t, types);
}

export function architectureFor(modelType: string): Architecture {
  const arch = BY_TYPE.get(modelType);
  if (!arch) {
    const near = nearestModelType(modelType);
    const family = near ? BY_TYPE.get(near)!.modelTypes[0]! : undefined;
    const hint = near ? `; the closest supported is '${near}'${family !== near ? ` (${family} family)` : ''}, which is a different architecture unless config.json says otherwise` : '';
    throw new AttnscopeError(`unsupported model_type ${quote(modelType, 60)}${hint} (supported: ${supportedModelTypes().join(', ')}; see 'attnscope models')`);
  }
  return arch;
}

