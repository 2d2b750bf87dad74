import { Redis } from 'ioredis';

/**
 * Deletes every key under a queue prefix (BullMQ's keys are `<prefix>:<queue>:…`): for the
 * test runs and benchmarks that give each run a prefix of its own on a shared Redis.
 * SCAN, not KEYS, so a large Redis is not blocked.
 */
export async function deleteKeysWithPrefix(redisUrl: string, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true });
  let deleted = 0;
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (found.length > 0) deleted += await redis.del(...found);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}
