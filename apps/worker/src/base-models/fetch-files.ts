// Downloads a hosted tfjs layers model: model.json, then every weight file its manifest names,
// relative to model.json's URL. The URL is the tenant's, so the requests are guarded: http and
// https only, redirects followed a few times and re-checked, every response capped in size and
// time, and — unless the deployment allows it — no private, loopback or link-local address,
// checked on the address actually connected to (a DNS answer cannot swap it in afterwards).
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { DomainError, retryTransient } from '@finetune/core';
import { checkWeightBytes, parseModelJson, type BaseModelFiles } from '@finetune/ml';

export interface FetchLimits {
  /** model.json and all weight files together. */
  maxBytes: number;
  /** One request, from connecting to its last byte. */
  timeoutMs: number;
  /** Allow private, loopback and link-local addresses (a deployment fetching from its own network). */
  allowPrivate: boolean;
  /** How long transient failures (a reset, a 5xx) are retried per file. */
  maxRetryTimeMs: number;
}

const MAX_REDIRECTS = 3;

const PRIVATE = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  PRIVATE.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['::ffff:0:0', 96],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  PRIVATE.addSubnet(net, prefix, 'ipv6');
}

function isPrivate(address: string): boolean {
  const family = isIP(address);
  return family !== 0 && PRIVATE.check(address, family === 6 ? 'ipv6' : 'ipv4');
}

/** A fetch that cannot succeed as asked (422): the base fails with this reason. */
function refused(code: string, message: string): DomainError {
  return new DomainError(code, message, 422);
}

/** A 5xx or 429 answer: worth another try (isTransientError reads `$retryable`). */
class RetryableHttpError extends Error {
  readonly $retryable = true;
}

function guardedLookup(allowPrivate: boolean): typeof dnsLookup {
  return ((hostname: string, options: object, callback: (err: Error | null, address: string | LookupAddress[], family?: number) => void) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const list = addresses as LookupAddress[];
      const allowed = allowPrivate ? list : list.filter((a) => !isPrivate(a.address));
      if (allowed.length === 0) return callback(refused('url_not_allowed', `${hostname} resolves only to private or loopback addresses`), '');
      if ((options as { all?: boolean }).all) return callback(null, allowed);
      callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  }) as typeof dnsLookup;
}

export function checkUrl(raw: string, allowPrivate: boolean): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refused('invalid_url', `not a URL: ${raw.slice(0, 200)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw refused('invalid_url', `only http and https URLs are fetched (got ${url.protocol})`);
  if (url.username || url.password) throw refused('invalid_url', 'URLs with credentials are not fetched');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivate && (isPrivate(host) || host === 'localhost')) throw refused('url_not_allowed', `${url.hostname} is a private or loopback address`);
  return url;
}

/** One GET with the guards; follows redirects itself so each hop is checked again. */
function getOnce(url: URL, limits: FetchLimits, budget: number, hops = 0): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const client = url.protocol === 'https:' ? https : http;
    const request = client.get(url, { lookup: guardedLookup(limits.allowPrivate), timeout: limits.timeoutMs, headers: { accept: '*/*' } }, (response) => {
      const status = response.statusCode ?? 0;
      if (status >= 300 && status < 400 && response.headers.location) {
        response.resume();
        if (hops >= MAX_REDIRECTS) return reject(refused('fetch_failed', `${url.href}: more than ${MAX_REDIRECTS} redirects`));
        let next: URL;
        try {
          next = checkUrl(new URL(response.headers.location, url).href, limits.allowPrivate);
        } catch (error) {
          return reject(error);
        }
        return getOnce(next, limits, budget, hops + 1).then(resolve, reject);
      }
      if (status >= 500 || status === 429) {
        response.resume();
        return reject(new RetryableHttpError(`${url.href}: HTTP ${status}`));
      }
      if (status !== 200) {
        response.resume();
        return reject(refused('fetch_failed', `${url.href}: HTTP ${status}`));
      }
      const declared = Number(response.headers['content-length']);
      if (Number.isFinite(declared) && declared > budget) {
        response.destroy();
        return reject(refused('model_too_large', `the model's files exceed ${limits.maxBytes} bytes`));
      }
      const chunks: Buffer[] = [];
      let total = 0;
      response.on('data', (chunk: Buffer) => {
        total += chunk.length;
        if (total > budget) {
          response.destroy();
          reject(refused('model_too_large', `the model's files exceed ${limits.maxBytes} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      response.on('end', () => resolve(Buffer.concat(chunks, total)));
      response.on('error', reject);
    });
    // A response that stalls mid-way times out like one that never starts.
    request.setTimeout(limits.timeoutMs, () => request.destroy(Object.assign(new Error(`${url.href}: timed out after ${limits.timeoutMs} ms`), { code: 'ETIMEDOUT' })));
    request.on('error', reject);
  });
}

/** model.json and its weights, checked against the manifest as for a zip upload. */
export async function fetchModelFiles(rawUrl: string, limits: FetchLimits): Promise<BaseModelFiles> {
  const url = checkUrl(rawUrl, limits.allowPrivate);
  let budget = limits.maxBytes;
  const get = async (target: URL) => {
    const body = await retryTransient(() => getOnce(target, limits, budget), { maxRetryTimeMs: limits.maxRetryTimeMs });
    budget -= body.length;
    return body;
  };
  const modelJson = await get(url);
  const parsed = parseModelJson(modelJson);
  const shards: Buffer[] = [];
  for (const path of parsed.weightPaths) shards.push(await get(checkUrl(new URL(path, url).href, limits.allowPrivate)));
  const weights = Buffer.concat(shards);
  checkWeightBytes(parsed, weights);
  return { modelJson, parsed, weights };
}
