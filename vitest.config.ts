import { defineConfig } from 'vitest/config';

export default defineConfig({
  // Workspace packages resolve to their TypeScript sources (the `development` export condition),
  // whatever NODE_ENV says: Vitest's default is `node` plus `development` or, under
  // NODE_ENV=production, `production` (a stale or missing dist/). `ssr` is where test files run
  // (Vitest also passes these to its worker processes as `--conditions`, so `module`, which picks
  // bundler-only builds Node cannot load, stays out); `__vitest__` is where globalSetup runs.
  ssr: { resolve: { conditions: ['node', 'development'] } },
  environments: { __vitest__: { resolve: { conditions: ['node', 'development'] } } },
  test: {
    include: ['packages/*/test/**/*.test.ts', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Copies the services global-setup started into process.env for loadConfig().
    setupFiles: ['test/setup-env.ts'],
    // Test files share one Postgres, Redis and S3 server; tfjs wasm uses one core per process
    // (WASM_THREADS unset; the threaded build is tested in child processes).
    fileParallelism: false,
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 300_000,
  },
});
