// List commands: one page (`--limit`, `--cursor`) or every page (`--all`), using the API's
// keyset cursors (`nextCursor` is the id to resume after).
import { InvalidArgumentError, Option, type Command } from 'commander';
import type { Page } from './api-types.ts';
import type { ApiClient } from './client.ts';
import { parseId, parsePositiveInt } from './context.ts';

export interface PageOptions {
  limit: number;
  cursor?: string;
  all?: boolean;
}

export function addPageOptions(command: Command): Command {
  return command
    .addOption(new Option('--limit <n>', 'items per page (1-100)').argParser(parseLimit).default(20))
    .addOption(new Option('--cursor <id>', 'start after this item (a previous page\'s nextCursor)').argParser(parseId))
    .option('--all', 'follow nextCursor through every page');
}

export async function fetchPages<T>(
  client: ApiClient,
  path: string,
  { limit, cursor, all }: PageOptions,
  query: Record<string, string | undefined> = {},
): Promise<Page<T>> {
  const items: T[] = [];
  let next: string | null | undefined = cursor;
  for (;;) {
    const page: Page<T> = await client.json<Page<T>>('GET', path, {
      query: { ...query, limit: all ? 100 : limit, cursor: next ?? undefined },
    });
    items.push(...page.items);
    next = page.nextCursor;
    if (!all || !next) return { items, nextCursor: next };
  }
}

function parseLimit(value: string): number {
  const n = parsePositiveInt(value);
  if (n > 100) throw new InvalidArgumentError(`at most 100 per page (use --all for more): ${value}`);
  return n;
}
