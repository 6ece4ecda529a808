#!/usr/bin/env -S node --initial-old-space-size=64
import { register } from 'tsx/esm/api';
register();
await import('../src/main.ts');
