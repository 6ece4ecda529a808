import { runLibvirtCli } from './cli.js';

const code = await runLibvirtCli(process.argv.slice(2), {
  stdout: (t) => { process.stdout.write(t); },
  stderr: (t) => { process.stderr.write(t); },
});
process.exitCode = code;
