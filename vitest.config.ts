import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'integrations/*/test/**/*.test.ts', 'bench/test/**/*.test.ts', 'vm-test/test/**/*.test.ts', 'fault-test/test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes; two cores, so two files at a time.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
