import type { FastifyReply, FastifyRequest } from 'fastify';
import type { RateLimits } from '@finetune/core';
import type { Bucket, BucketState, TokenBuckets } from '../rate-limit/token-buckets.ts';
import { sendProblem } from './problem-details.ts';

/**
 * The buckets a request draws from: every /v1 call from `default`; model predictions and dataset
 * uploads, which cost far more than a read, also from their own lower ones.
 */
export function bucketsFor(method: string, route: string | undefined, limits: RateLimits): Bucket[] {
  const buckets: Bucket[] = [];
  if (limits.default) buckets.push({ name: 'default', limit: limits.default });
  if (method === 'POST' && route === '/v1/models/:id/predict' && limits.predict) buckets.push({ name: 'predict', limit: limits.predict });
  if (method === 'POST' && (route === '/v1/datasets' || route === '/v1/datasets/uploads') && limits.upload) buckets.push({ name: 'upload', limit: limits.upload });
  return buckets;
}

/** The bucket a client should hear about: the one that refused, else the one nearest empty. */
function tightest(states: BucketState[]): BucketState {
  return states.reduce((a, b) => (b.msUntilToken > a.msUntilToken || (b.msUntilToken === a.msUntilToken && b.remaining < a.remaining) ? b : a));
}

const seconds = (ms: number) => Math.ceil(ms / 1000);

/**
 * Rate-limit headers as in the IETF draft "RateLimit header fields for HTTP" (RateLimit-Limit,
 * -Remaining, -Reset, -Policy): the limit is the bucket's burst, Reset the seconds until it is full.
 */
function setHeaders(reply: FastifyReply, state: BucketState): void {
  const { limit, name } = state.bucket;
  reply.header('ratelimit-limit', limit.burst);
  reply.header('ratelimit-remaining', state.remaining);
  reply.header('ratelimit-reset', seconds(state.msUntilFull));
  reply.header('ratelimit-policy', `${limit.perMinute};w=60;burst=${limit.burst};policy="${name}"`);
}

/**
 * The onRequest hook after `authenticate`: one token per request from the caller's key's buckets,
 * else 429 with Retry-After. Should Redis be unreachable the request goes through (logged): a
 * limiter outage must not become an API outage, and what needs Redis to work fails on its own.
 */
export function rateLimit(buckets: TokenBuckets, limits: RateLimits) {
  return async function onRequest(request: FastifyRequest, reply: FastifyReply) {
    const caller = request.caller;
    if (!caller) return;
    const applicable = bucketsFor(request.method, request.routeOptions.url, limits);
    if (applicable.length === 0) return;
    let result;
    try {
      result = await buckets.take(caller.keyPrefix, applicable);
    } catch (error) {
      request.log.warn({ err: error }, 'rate limiter unavailable; request not limited');
      return;
    }
    const state = tightest(result.buckets);
    setHeaders(reply, state);
    if (!result.allowed) {
      reply.header('retry-after', Math.max(1, seconds(state.msUntilToken)));
      return sendProblem(
        reply,
        { status: 429, code: 'rate_limited', detail: `rate limit "${state.bucket.name}" exceeded: ${state.bucket.limit.perMinute} requests per minute, bursts of ${state.bucket.limit.burst}; retry after the Retry-After seconds` },
        { rateLimit: state.bucket.name },
      );
    }
  };
}
