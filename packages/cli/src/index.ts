export { main, orderForOclif } from './main.js';
export { runWords, exitCodeFor, errorLine, EXIT_OK, EXIT_API_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_INTERNAL, type CliIo, type RunOptions } from './run.js';
export { parseNounWords, splitGlobalFlags, isGlobalFlag, type NounSpec, type VerbSpec, type KeywordSpec, type ListSpec, type ParsedWords, type Action, type Format, type GlobalFlags } from './grammar.js';
export { NOUNS } from './nouns.js';
export { parseSize, parseDuration, parseTags, formatSize, UsageError } from './values.js';
