/**
 * For netns.test.ts: makes a lab with a process in it, prints the lab's names, then waits to be
 * SIGKILLed (no cleanup runs: what a crashed test run leaves behind).
 */
import { NetnsLab } from '@storpool/testkit';

const lab = await NetnsLab.create({ hosts: 2, prefix: process.argv[2] ?? 'spfcrash' });
const sleeper = lab.spawn(1, 'sleep', ['600']);
process.stdout.write(`${JSON.stringify({ id: lab.id, rootLink: lab.rootLink, namespaces: [lab.switchNetns, ...lab.hosts.map((h) => h.netns)], sleeper: sleeper.pid })}\n`);
setInterval(() => undefined, 1_000);
