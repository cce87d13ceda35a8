export { loadTokenizer, createTokenizer } from './load-tokenizer.js';
export type { AttnTokenizer, TokenizerFiles, TokenizerSources } from './load-tokenizer.js';
export { SPECIAL_TOKEN_ROLES } from './special-tokens.js';
export type { SpecialToken, SpecialTokenRole } from './special-tokens.js';
export type { TemplateFlags } from './post-processor.js';
export { codePointToUtf16 } from './offsets.js';
