// Standalone config for this package (no repo-wide globalSetup: nothing here needs Postgres,
// Redis or S3). Run from the repo root: npx vitest run --config packages/ml/vitest.config.ts
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Workspace packages resolve to their TypeScript sources (the `development` export condition),
  // whatever NODE_ENV says: Vitest's default is `node` plus `development` or, under
  // NODE_ENV=production, `production`. Vitest also passes these to its worker processes as
  // `--conditions`; `module` must stay out (it picks bundler-only builds Node cannot load).
  ssr: { resolve: { conditions: ['node', 'development'] } },
  test: {
    root: import.meta.dirname,
    include: ['test/**/*.test.ts'],
    // tfjs wasm is single-threaded under Node: two files in parallel use both cores.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
