// `node --import tsx scripts/create-credentials.ts <dir>`: creates the API key secret and an admin
// API key in <dir> (mode 600) unless they exist, and prints the admin key the one time it is
// created. docker-compose.yml runs it as a one-shot before the API, so `docker compose up` needs
// no secrets set by hand.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ADMIN_KEY_FILE, ensureCredentialFiles } from './launcher/credentials.ts';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: create-credentials.ts <dir>');
  process.exit(2);
}
await mkdir(dir, { recursive: true, mode: 0o700 });
const { secret, admin } = await ensureCredentialFiles(dir);
console.log(secret.created ? `created the API key secret in ${join(dir, 'api-key-secret')}` : 'API key secret exists');
if (admin.created) {
  console.log(`created an admin API key (shown once; kept in ${join(dir, ADMIN_KEY_FILE)}):`);
  console.log(`  ${admin.value}`);
} else {
  console.log(`admin API key exists in ${join(dir, ADMIN_KEY_FILE)}`);
}
