#!/usr/bin/env node
// Pre-transpiled daemons and CLI for the Vagrant VMs (docs/vagrant.md): under QEMU TCG, running the
// TypeScript sources through tsx costs minutes of CPU per process start. esbuild (tsx's own
// dependency) bundles the project's sources (@storpool/* included) into ESM files under
// .vagrant-dist/ (git-ignored); third-party packages that the repo's node_modules hoists (lmdb,
// @node-rs/crc32, etcd3, pino, @oclif/core, zod, ...) stay external and load from
// /opt/storpool/node_modules at run time, so native modules and data files need no special care.
// A package only a workspace's own node_modules holds (another version) is bundled instead.
//
// Output:  .vagrant-dist/storpool-server.mjs, storpool-mgmt.mjs, storpool-block.mjs (run the
//          daemon like packages/*/bin/*.js), storpool.mjs (the CLI; oclif's package root is
//          .vagrant-dist/, its commands and help class are
//          cli-commands.mjs, cli-help.mjs), chunk-*.mjs (shared code).
// Usage:   node vm-test/scripts/build-dist.mjs [--check]   (--check: run each with --help)
// Plain JavaScript: runs with node alone, no tsx.
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const OUT = join(REPO, '.vagrant-dist');
const require = createRequire(join(REPO, 'package.json'));
// esbuild is tsx's dependency: resolve it the way tsx does
const esbuild = await import(createRequire(require.resolve('tsx/package.json')).resolve('esbuild'));

const HOISTED = join(REPO, 'node_modules') + '/';
const externalThirdParty = {
  name: 'external-third-party',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, async (args) => {
      if (args.path.startsWith('@storpool/') || args.pluginData?.inner) return undefined;
      if (args.path.startsWith('node:')) return { external: true };
      const r = await build.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, importer: args.importer, pluginData: { inner: true } });
      if (r.errors.length > 0) return { errors: r.errors };
      // hoisted: the same file resolves from .vagrant-dist at run time
      if (r.external || r.path.startsWith(HOISTED)) return { path: args.path, external: true };
      return r; // a workspace-local version: bundle it
    });
  },
};

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
const t0 = Date.now();
const result = await esbuild.build({
  absWorkingDir: REPO,
  entryPoints: [
    { in: 'packages/server/src/main.ts', out: 'storpool-server' },
    { in: 'packages/mgmt/src/main.ts', out: 'storpool-mgmt' },
    { in: 'packages/block/src/main.ts', out: 'storpool-block' },
    { in: 'packages/cli/src/main.ts', out: 'cli-main' },
    { in: 'packages/cli/src/commands.ts', out: 'cli-commands' },
    { in: 'packages/cli/src/help.ts', out: 'cli-help' },
  ],
  outdir: OUT,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  splitting: true, // one copy of shared modules (the CLI's two entries share error classes)
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: false,
  logLevel: 'warning',
  plugins: [externalThirdParty],
  banner: { js: "import { createRequire as __spCreateRequire } from 'node:module'; const require = __spCreateRequire(import.meta.url);" },
});
if (result.errors.length > 0) process.exit(1);

// The CLI: oclif reads its configuration from a package root; .vagrant-dist/ is that root here.
const cliPkg = JSON.parse(readFileSync(join(REPO, 'packages/cli/package.json'), 'utf8'));
cliPkg.oclif.commands.target = './cli-commands.mjs';
cliPkg.oclif.helpClass = './cli-help.mjs';
delete cliPkg.scripts;
delete cliPkg.devDependencies;
cliPkg.type = 'module';
writeFileSync(join(OUT, 'package.json'), JSON.stringify(cliPkg, null, 2) + '\n');
writeFileSync(join(OUT, 'storpool.mjs'), `#!/usr/bin/env node
// The storpool CLI, pre-transpiled (vm-test/scripts/build-dist.mjs); oclif's package root is this directory.
const { main } = await import('./cli-main.mjs');
await main(process.argv.slice(2), new URL('.', import.meta.url));
`);
console.log(`build-dist: ${OUT} in ${Date.now() - t0} ms`);

if (process.argv.includes('--check')) {
  // every module loads: --help answers (storpool-block has no --help: its "Unknown option" will do)
  for (const bin of ['storpool-server', 'storpool-mgmt', 'storpool-block', 'storpool']) {
    const t = Date.now();
    const r = spawnSync(process.execPath, [join(OUT, `${bin}.mjs`), '--help'], { encoding: 'utf8' });
    const text = `${r.stdout}${r.stderr}`;
    if (r.status !== 0 && !/Unknown option '--help'/.test(text)) {
      console.error(`build-dist: ${bin}.mjs --help failed (status ${r.status}):\n${text}`);
      process.exit(1);
    }
    console.log(`build-dist: ${bin}.mjs --help OK in ${Date.now() - t} ms (${text.split('\n')[0]})`);
  }
}
