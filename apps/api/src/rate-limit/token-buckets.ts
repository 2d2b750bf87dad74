import type { Redis } from 'ioredis';
import type { RateLimit } from '@finetune/core';

// Token buckets in Redis, so every API replica draws from the same ones. A bucket holds up to
// `burst` tokens and gains `perMinute / 60000` per millisecond; a request takes one token from
// each bucket that applies to it, all or none, in one atomic script. Time is Redis's own clock
// (TIME), so replicas whose clocks disagree still agree on the buckets.

// KEYS: the buckets. ARGV: per bucket, its capacity then its refill per millisecond.
// Returns {allowed, then per bucket: whole tokens left, ms until a token, ms until full}.
// (Lua numbers become integers on the way out, hence the rounding here.)
const TAKE_SCRIPT = `
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local levels = {}
local allowed = 1
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local state = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local level = tonumber(state[1]) or capacity
  local at = tonumber(state[2]) or now
  level = math.min(capacity, level + math.max(0, now - at) * rate)
  levels[i] = level
  if level < 1 then allowed = 0 end
end
local out = { allowed }
for i = 1, #KEYS do
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local level = levels[i]
  if allowed == 1 then level = level - 1 end
  local untilFull = math.ceil((capacity - level) / rate)
  redis.call('HSET', KEYS[i], 'tokens', tostring(level), 'at', now)
  redis.call('PEXPIRE', KEYS[i], untilFull + 1000)
  local untilToken = 0
  if level < 1 then untilToken = math.ceil((1 - level) / rate) end
  out[#out + 1] = math.floor(level)
  out[#out + 1] = untilToken
  out[#out + 1] = untilFull
end
return out
`;

export interface Bucket {
  /** Names the bucket in its Redis key and in RateLimit-Policy. */
  name: string;
  limit: RateLimit;
}

export interface BucketState {
  bucket: Bucket;
  /** Whole tokens left after this request. */
  remaining: number;
  /** Until the bucket holds a token again (0 when it does). */
  msUntilToken: number;
  /** Until the bucket is full again. */
  msUntilFull: number;
}

export interface TakeResult {
  allowed: boolean;
  buckets: BucketState[];
}

type WithTakeCommand = Redis & { finetuneTakeTokens(...args: (string | number)[]): Promise<number[]> };

export class TokenBuckets {
  private readonly redis: WithTakeCommand;

  constructor(
    redis: Redis,
    private readonly keyPrefix: string,
  ) {
    // defineCommand sends the script by hash (EVALSHA) and reloads it when Redis lost it.
    redis.defineCommand('finetuneTakeTokens', { lua: TAKE_SCRIPT });
    this.redis = redis as WithTakeCommand;
  }

  /** Takes one token from each of `buckets` for `subject` (an API key), or none when any is empty. */
  async take(subject: string, buckets: Bucket[]): Promise<TakeResult> {
    const keys = buckets.map((b) => `${this.keyPrefix}:ratelimit:${b.name}:${subject}`);
    const args = buckets.flatMap((b) => [b.limit.burst, b.limit.perMinute / 60_000]);
    const reply = await this.redis.finetuneTakeTokens(keys.length, ...keys, ...args);
    return {
      allowed: reply[0] === 1,
      buckets: buckets.map((bucket, i) => ({
        bucket,
        remaining: Math.max(0, reply[1 + 3 * i]!),
        msUntilToken: reply[2 + 3 * i]!,
        msUntilFull: reply[3 + 3 * i]!,
      })),
    };
  }
}
