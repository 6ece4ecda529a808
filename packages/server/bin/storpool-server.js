#!/usr/bin/env -S node --initial-old-space-size=64
// Runs the TypeScript sources through tsx's loader (no build step).
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
