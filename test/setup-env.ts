// Runs in every test worker before the test files: points `loadConfig()` at the services that
// test/global-setup.ts started for this run. The run's values win over the caller's environment,
// so a developer's DATABASE_URL can never be the database the tests truncate.
import { inject } from 'vitest';

const env = inject('testEnv');
for (const [name, value] of Object.entries(env)) process.env[name] = value;
// tfjs wasm loads everywhere (STACK.md); a developer may still pick another backend explicitly.
process.env.ML_BACKEND ||= 'wasm';
