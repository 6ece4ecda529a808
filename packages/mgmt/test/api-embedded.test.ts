import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openMetaStore, type MetaStore } from '@storpool/meta';
import { afterAll } from 'vitest';
import { apiSuite } from './api-suite.js';

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

apiSuite('embedded metadata store', {
  async open(): Promise<MetaStore> {
    const dir = await mkdtemp(join(tmpdir(), 'storpool-mgmt-meta-'));
    dirs.push(dir);
    return openMetaStore({ backend: 'embedded', dir });
  },
});
