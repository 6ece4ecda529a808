/**
 * oclif help with each noun's grammar (verbs, keywords) appended as preformatted text: oclif's own
 * wrapping trims leading spaces and would flatten the two-column layout.
 */
import { Help, type Command } from '@oclif/core';
import { describeNoun } from './commands.js';
import { NOUNS } from './nouns.js';

export default class StorpoolHelp extends Help {
  override formatCommand(command: Command.Loadable): string {
    const base = super.formatCommand(command);
    const noun = NOUNS[command.id];
    if (noun === undefined) return base;
    const grammar = describeNoun(noun).split('\n').map((l) => (l === '' ? '' : `  ${l}`)).join('\n');
    return `${base}\n\n${process.stdout.isTTY !== true || process.env['NO_COLOR'] !== undefined ? 'GRAMMAR' : '\x1b[1mGRAMMAR\x1b[22m'}\n${grammar}`;
  }
}
