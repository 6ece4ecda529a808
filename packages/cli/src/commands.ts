/**
 * oclif commands: one per noun, all built from the grammar tables. oclif gives the entry point,
 * `--help` for every noun and the root topic list; the words themselves go to the one parser.
 */
import { Command, Flags } from '@oclif/core';
import type { NounSpec } from './grammar.js';
import { NOUNS } from './nouns.js';
import { runWords } from './run.js';

const GLOBAL_FLAGS = {
  json: Flags.boolean({ char: 'j', summary: "print the API's JSON answer (envelope) exactly as returned" }),
  batch: Flags.boolean({ char: 'B', summary: 'batch mode: no colours or prompts, tab-separated tables, sizes in bytes' }),
  multicluster: Flags.boolean({ char: 'M', summary: 'use the MultiCluster/ API paths' }),
};

/** Help is wrapped here (oclif would re-wrap at 80 columns and lose the hanging indent). */
const HELP_WIDTH = 76;
const HELP_TAB = 28;

function entry(left: string, text: string): string[] {
  const lines: string[] = [];
  let line = left.length >= HELP_TAB - 1 ? left : left.padEnd(HELP_TAB);
  if (left.length >= HELP_TAB - 1) {
    lines.push(line);
    line = ''.padEnd(HELP_TAB);
  }
  for (const word of text.split(' ')) {
    if (line.trim() !== '' && line.length + 1 + word.length > HELP_WIDTH && line.length > HELP_TAB) {
      lines.push(line.trimEnd());
      line = ''.padEnd(HELP_TAB);
    }
    line += line.length > HELP_TAB || (line.trim() !== '' && !line.endsWith(' ')) ? ` ${word}` : word;
  }
  lines.push(line.trimEnd());
  return lines;
}

/** Help text of a noun: its list words, verbs and keywords, from the same table the parser uses. */
export function describeNoun(noun: NounSpec): string {
  const lines: string[] = [];
  const lists = Object.entries(noun.lists);
  if (lists.length > 0) {
    lines.push('Words on their own:');
    for (const [word, spec] of lists) lines.push(...entry(`  ${noun.name} ${word}`, spec.summary));
    lines.push('');
  }
  const verbs = Object.entries(noun.verbs).filter(([word]) => !word.startsWith('<'));
  if (verbs.length > 0) {
    const byDefault = noun.implicitVerb !== undefined && !noun.implicitVerb.startsWith('<') ? `; without a verb: ${noun.implicitVerb}` : '';
    lines.push(`Verbs (after ${noun.object ?? 'the keywords'}${byDefault}):`);
    for (const [word, spec] of verbs) {
      const arg = spec.arg === 'required' ? ` ${spec.argName ?? 'ARG'}` : spec.arg === 'optional' ? ` [${spec.argName ?? 'ARG'}]` : '';
      const accepts = spec.keywords !== undefined && spec.keywords.length > 0 ? `; keywords: ${spec.keywords.join(' ')}` : '';
      lines.push(...entry(`  ${word}${arg}`, spec.summary + accepts));
    }
    lines.push('');
  }
  const keywords = Object.entries(noun.keywords);
  if (keywords.length > 0) {
    lines.push('Keywords (any order, before or after the verb):');
    for (const [word, spec] of keywords) lines.push(...entry(`  ${word}${spec.kind === 'value' ? ` ${spec.value ?? 'VALUE'}` : ''}`, spec.help));
  }
  return lines.join('\n').trimEnd();
}

function usageOf(noun: NounSpec): string[] {
  const usage: string[] = [];
  const lists = Object.keys(noun.lists);
  if (lists.length > 0) usage.push(`${noun.name} ${lists.length === 1 ? lists[0] : `${lists.join('|')}`}`);
  const verbs = Object.keys(noun.verbs).filter((v) => !v.startsWith('<'));
  if (noun.object !== undefined && verbs.length > 0) usage.push(`${noun.name} ${noun.object} [KEYWORD VALUE]... ${noun.implicitVerb !== undefined ? '[VERB]' : 'VERB'}`);
  if (noun.object === undefined && Object.keys(noun.keywords).length > 0) usage.push(`${noun.name} KEYWORD VALUE...`);
  return usage;
}

function nounCommand(noun: NounSpec): typeof Command {
  return class NounCommand extends Command {
    static override summary = noun.summary;
    static override usage = usageOf(noun);
    static override examples = noun.examples.map((e) => `$ ${e}`);
    static override strict = false;
    static override flags = GLOBAL_FLAGS;

    async run(): Promise<void> {
      // The words are parsed by the grammar tables, not by oclif's flag parser.
      this.parsed = true;
      process.exitCode = await runWords([noun.name, ...this.argv], {
        stdout: (t) => process.stdout.write(t),
        stderr: (t) => process.stderr.write(t),
        isTty: process.stdout.isTTY === true,
        env: process.env,
      });
    }
  };
}

/** oclif's explicit command discovery reads this (package.json "oclif.commands"). */
export const COMMANDS: Record<string, typeof Command> = Object.fromEntries(
  Object.values(NOUNS).map((noun) => [noun.name, nounCommand(noun)]),
);
