import { defineConfig } from 'vitest/config';

/** QEMU guests: slow (TCG), so a separate run: `npx vitest run --config vm-test/vitest.config.ts`. */
export default defineConfig({
  test: {
    root: new URL('.', import.meta.url).pathname,
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 300_000,
    hookTimeout: 180_000,
    maxWorkers: 1,
    minWorkers: 1,
  },
});
