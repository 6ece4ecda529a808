/**
 * The one parser of StorPool's positional CLI grammar (API.md Appendix A):
 *
 *   storpool [-B] [-j] [-M] <noun> <list-word>
 *   storpool [-B] [-j] [-M] <noun> [<object>] (<keyword> <value> | <flag> | <verb> [<arg>])...
 *
 * Keyword/value pairs and flags may come in any order around the verb (`volume X size S update`
 * and `volume X update size S shrinkOk` are the same). Each noun is a table (nouns.ts): its list
 * words, its keywords (taking a value or not), its verbs and which keywords each verb accepts.
 */
import type { StorpoolApi } from '@storpool/api-client';
import { UsageError } from './values.js';

export interface Format {
  /** `-B`: no colours, no prompts, tab-separated tables with raw numbers. */
  batch: boolean;
  color: boolean;
}

/** What a parsed command line does: one or more API calls, then how to show the answer. */
export interface Action {
  run(api: StorpoolApi): Promise<unknown>;
  /** Renders the data of a read; absent for changes, which print `OK`. */
  render?: (data: unknown, format: Format) => string;
}

export interface KeywordSpec {
  /** `value` keywords take the next word; `flag` keywords stand alone. */
  kind: 'value' | 'flag';
  /** May be given more than once (`tag k=v tag k2=v2`). */
  repeat?: boolean;
  /** Placeholder of the value in help, e.g. `SIZE`. */
  value?: string;
  help: string;
}

export interface ParsedWords {
  noun: string;
  object: string | undefined;
  verb: string;
  arg: string | undefined;
  values: ReadonlyMap<string, readonly string[]>;
  flags: ReadonlySet<string>;
}

export interface VerbSpec {
  summary: string;
  /** A word right after the verb: required (`delete V`), optional (`snapshot [S]`) or none. */
  arg?: 'required' | 'optional';
  argName?: string;
  /** Keywords (and flags) this verb accepts. */
  keywords?: readonly string[];
  /** Keywords of which at least one must be given, e.g. for `update`. */
  needsOneOf?: readonly string[];
  build(p: ParsedWords): Action;
}

export interface ListSpec {
  summary: string;
  build(): Action;
}

export interface NounSpec {
  name: string;
  summary: string;
  /** The object word right after the noun (`volume V ...`); absent for attach/detach. */
  object?: string;
  /** Words that stand alone after the noun: `volume list`, `template status`. */
  lists: Record<string, ListSpec>;
  keywords: Record<string, KeywordSpec>;
  verbs: Record<string, VerbSpec>;
  /** Verb used when none is given (`snapshot S tag k=v` = update). */
  implicitVerb?: string;
  examples: readonly string[];
}

export interface GlobalFlags {
  json: boolean;
  batch: boolean;
  multiCluster: boolean;
}

const GLOBAL_LETTERS: Record<string, keyof GlobalFlags> = { j: 'json', B: 'batch', M: 'multiCluster' };
const GLOBAL_LONG: Record<string, keyof GlobalFlags> = { '--json': 'json', '--batch': 'batch', '--multicluster': 'multiCluster' };

/** True for `-j`, `-B`, `-M`, combinations such as `-Bj`, and their long forms. */
export function isGlobalFlag(word: string): boolean {
  if (GLOBAL_LONG[word] !== undefined) return true;
  return /^-[jBM]+$/.test(word);
}

/**
 * Removes the global flags from anywhere in the words (StorPool puts them first; we also accept
 * them later). Words after a `--` are never flags.
 */
export function splitGlobalFlags(argv: readonly string[]): { flags: GlobalFlags; words: string[] } {
  const flags: GlobalFlags = { json: false, batch: false, multiCluster: false };
  const words: string[] = [];
  let rawFromHere = false;
  for (const word of argv) {
    if (rawFromHere) words.push(word);
    else if (word === '--') rawFromHere = true;
    else if (GLOBAL_LONG[word] !== undefined) flags[GLOBAL_LONG[word]] = true;
    else if (isGlobalFlag(word)) for (const letter of word.slice(1)) flags[GLOBAL_LETTERS[letter] ?? 'json'] = true;
    else words.push(word);
  }
  return { flags, words };
}

function help(noun: NounSpec): string {
  return `(see: storpool ${noun.name} --help)`;
}

/** Parses the words after the noun into an Action, or throws a UsageError naming the problem. */
export function parseNounWords(noun: NounSpec, words: readonly string[]): Action {
  const first = words[0];
  if (first === undefined) throw new UsageError(`storpool ${noun.name}: missing arguments ${help(noun)}`);
  const list = noun.lists[first];
  if (list !== undefined) {
    if (words.length > 1) throw new UsageError(`storpool ${noun.name} ${first}: unexpected '${words[1]}' ${help(noun)}`);
    return list.build();
  }
  if (noun.object === undefined && noun.implicitVerb === undefined && noun.verbs[first] === undefined && noun.keywords[first] === undefined) {
    throw new UsageError(`storpool ${noun.name}: unknown word '${first}' ${help(noun)}`);
  }
  const object = noun.object === undefined ? undefined : first;
  const rest = noun.object === undefined ? words : words.slice(1);
  const parsed = scan(noun, object, rest);
  const verb = noun.verbs[parsed.verb];
  if (verb === undefined) throw new UsageError(`storpool ${noun.name}: unknown verb '${parsed.verb}' ${help(noun)}`);
  checkKeywords(noun, parsed, verb);
  return verb.build(parsed);
}

function scan(noun: NounSpec, object: string | undefined, rest: readonly string[]): ParsedWords {
  const where = object === undefined ? `storpool ${noun.name}` : `storpool ${noun.name} ${object}`;
  const values = new Map<string, string[]>();
  const flags = new Set<string>();
  let verb: string | undefined;
  let arg: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const word = rest[i] as string;
    const next = rest[i + 1];
    const verbSpec = noun.verbs[word];
    const keyword = noun.keywords[word];
    if (verbSpec !== undefined) {
      if (verb !== undefined) throw new UsageError(`${where}: more than one verb ('${verb}' and '${word}') ${help(noun)}`);
      verb = word;
      if (verbSpec.arg === 'required') {
        if (next === undefined) throw new UsageError(`${where} ${word}: missing ${verbSpec.argName ?? 'argument'}`);
        arg = next;
        i++;
      } else if (verbSpec.arg === 'optional' && next !== undefined && noun.keywords[next] === undefined && noun.verbs[next] === undefined) {
        arg = next;
        i++;
      }
    } else if (keyword !== undefined) {
      if (keyword.kind === 'flag') {
        flags.add(word);
        continue;
      }
      if (next === undefined) throw new UsageError(`${where}: '${word}' needs a value (${keyword.value ?? 'VALUE'})`);
      const seen = values.get(word);
      if (seen !== undefined && keyword.repeat !== true) throw new UsageError(`${where}: '${word}' given more than once`);
      values.set(word, [...(seen ?? []), next]);
      i++;
    } else {
      throw new UsageError(`${where}: unknown word '${word}' ${help(noun)}`);
    }
  }
  verb ??= noun.implicitVerb;
  if (verb === undefined) {
    throw new UsageError(`${where}: missing verb, one of: ${Object.keys(noun.verbs).join(', ')}`);
  }
  return { noun: noun.name, object, verb, arg, values, flags };
}

function checkKeywords(noun: NounSpec, parsed: ParsedWords, verb: VerbSpec): void {
  const allowed = new Set(verb.keywords ?? []);
  const target = parsed.object === undefined ? noun.name : `${noun.name} ${parsed.object}`;
  for (const word of [...parsed.values.keys(), ...parsed.flags]) {
    if (!allowed.has(word)) throw new UsageError(`storpool ${target} ${parsed.verb}: '${word}' does not apply here ${help(noun)}`);
  }
  if (verb.needsOneOf !== undefined && !verb.needsOneOf.some((k) => parsed.values.has(k) || parsed.flags.has(k))) {
    throw new UsageError(`storpool ${target} ${parsed.verb}: nothing to do, give at least one of: ${verb.needsOneOf.join(', ')}`);
  }
}

/** The single value of a keyword, if given. */
export function one(p: ParsedWords, keyword: string): string | undefined {
  return p.values.get(keyword)?.[0];
}

export function all(p: ParsedWords, keyword: string): readonly string[] {
  return p.values.get(keyword) ?? [];
}

/** The object word; nouns with an object always have one after parsing. */
export function objectOf(p: ParsedWords): string {
  if (p.object === undefined) throw new UsageError(`storpool ${p.noun}: missing name`);
  return p.object;
}
