// What every command gets from the global options: an API client and the output mode.
import { InvalidArgumentError, type Command } from 'commander';
import { ApiClient } from './client.ts';

export const DEFAULT_URL = 'http://127.0.0.1:3000';

export interface GlobalOptions {
  url: string;
  apiKey?: string;
  json?: boolean;
}

export interface Context {
  client: ApiClient;
  /** `--json`: print the API's bodies as they came, nothing else on stdout. */
  json: boolean;
}

export function contextOf(command: Command): Context {
  const options = command.optsWithGlobals<GlobalOptions>();
  return { client: new ApiClient({ url: options.url, apiKey: options.apiKey }), json: Boolean(options.json) };
}

export function parseUrl(value: string): string {
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('not http(s)');
    return value;
  } catch {
    throw new InvalidArgumentError(`not an http(s) URL: ${value}`);
  }
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`not a positive integer: ${value}`);
  return n;
}

/** Canonical 8-4-4-4-12 UUIDs only, as the API takes them: a typo fails here, not as a 400. */
export function parseId(value: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value)) {
    throw new InvalidArgumentError(`not an id (a UUID such as 0b6e2c4e-…): ${value}`);
  }
  return value;
}
