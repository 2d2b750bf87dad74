import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Copies the services global-setup started into process.env for loadConfig().
    setupFiles: ['test/setup-env.ts'],
    // Test files share one Postgres, Redis and S3 server; tfjs wasm uses one core per process.
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
