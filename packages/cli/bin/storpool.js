#!/usr/bin/env node
// The `storpool` CLI. Runs the TypeScript sources through tsx's loader (no build step).
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
await main(process.argv.slice(2), new URL('..', import.meta.url));
