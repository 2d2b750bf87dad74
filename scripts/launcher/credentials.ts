import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateApiKey } from '../../apps/api/src/auth/api-keys.ts';

// The API's two credentials as files (mode 600): the server secret keys are hashed under, and a
// bootstrap admin key. `npm start` keeps them in DATA_DIR; the compose file's one-shot
// `credentials` service in a volume the API reads through API_KEY_SECRET_FILE / ADMIN_API_KEY_FILE.

export const SECRET_FILE = 'api-key-secret';
export const ADMIN_KEY_FILE = 'admin-api-key';

/** The file's trimmed content, or a new value written to it when it is missing or empty. */
export async function readOrCreate(path: string, create: () => string): Promise<{ value: string; created: boolean }> {
  try {
    const value = (await readFile(path, 'utf8')).trim();
    if (value) {
      await chmod(path, 0o600);
      return { value, created: false };
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const value = create();
  await writeFile(path, `${value}\n`, { mode: 0o600 });
  return { value, created: true };
}

export const newSecret = () => randomBytes(32).toString('hex');
export const newAdminKey = () => generateApiKey().key;

/** Both files in `dir`, created where missing. */
export async function ensureCredentialFiles(dir: string) {
  return {
    secret: await readOrCreate(join(dir, SECRET_FILE), newSecret),
    admin: await readOrCreate(join(dir, ADMIN_KEY_FILE), newAdminKey),
  };
}
