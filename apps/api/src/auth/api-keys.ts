import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

// API keys: `ft_<prefix>_<secret>`. The prefix (8 hex characters) is public — it names the key in
// logs and listings and finds its row; the secret is 32 random bytes (256 bits) in base64url.
// Only HMAC-SHA-256(server secret, whole key) is stored, and a presented key is compared with it
// in constant time. A fast keyed hash is the right tool here, unlike for passwords: the key has
// 256 bits of entropy, so there is nothing to brute-force from the hash, and without the server
// secret the hash cannot even be checked against a guess.

const KEY_PATTERN = /^ft_([0-9a-f]{8})_([A-Za-z0-9_-]{43})$/;

export interface GeneratedKey {
  key: string;
  prefix: string;
}

export function generateApiKey(): GeneratedKey {
  const prefix = randomBytes(4).toString('hex');
  return { key: `ft_${prefix}_${randomBytes(32).toString('base64url')}`, prefix };
}

/** The prefix of a well-formed key, or null. */
export function keyPrefix(key: string): string | null {
  return KEY_PATTERN.exec(key)?.[1] ?? null;
}

export function hashApiKey(secret: string, key: string): Buffer {
  return createHmac('sha256', secret).update(key, 'utf8').digest();
}

/** Constant-time comparison of two HMACs (equal lengths by construction). */
export function sameHash(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
