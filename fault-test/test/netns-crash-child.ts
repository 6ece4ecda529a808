/**
 * For netns.test.ts: makes a lab with a process in it, prints the lab's names, then waits to be
 * SIGKILLed (no cleanup runs: what a crashed test run leaves behind).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NetnsLab } from '@storpool/testkit';

const lab = await NetnsLab.create({ hosts: 2, prefix: process.argv[2] ?? 'spfcrash' });
const sleeper = lab.spawn(1, 'sleep', ['600']);
// A root-namespace process and a temp dir of the run, recorded for the sweeper.
const rootSleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
lab.adopt(rootSleeper.pid);
const dir = mkdtempSync(join(tmpdir(), 'storpool-fault-crash-'));
lab.adoptDir(dir);
process.stdout.write(`${JSON.stringify({ id: lab.id, rootLink: lab.rootLink, namespaces: [lab.switchNetns, ...lab.hosts.map((h) => h.netns)], sleeper: sleeper.pid, rootSleeper: rootSleeper.pid, dir })}\n`);
setInterval(() => undefined, 1_000);
