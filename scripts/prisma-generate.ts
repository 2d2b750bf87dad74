// Generates the Prisma client into packages/db/src/generated.
//
// Why the stub engine: the Prisma CLI downloads its native schema engine at start-up and fails
// offline, even for `generate`, which never uses it. The `prisma-client` generator with
// @prisma/adapter-pg needs no native engine at run time, so any executable will do here.
// Where PRISMA_SCHEMA_ENGINE_BINARY is already set (a real engine), it is left alone.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const env = { ...process.env };
if (!env.PRISMA_SCHEMA_ENGINE_BINARY && !env.FINETUNE_PRISMA_ONLINE) {
  env.PRISMA_SCHEMA_ENGINE_BINARY = existsSync('/bin/true') ? '/bin/true' : process.execPath;
}
const prismaCli = require.resolve('prisma/build/index.js');
execFileSync(process.execPath, [prismaCli, 'generate'], { stdio: 'inherit', env });
