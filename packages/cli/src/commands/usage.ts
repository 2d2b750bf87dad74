import type { Command } from 'commander';
import type { Limit, Usage } from '../api-types.ts';
import { contextOf } from '../context.ts';
import { bytes, printJson, printLine, printTable, text } from '../output.ts';

export function usageCommand(program: Command): void {
  program
    .command('usage')
    .description("your tenant's usage against its quotas, and the rate limits its keys get")
    .action(async (_options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const usage = await ctx.client.json<Usage>('GET', '/v1/usage');
      if (ctx.json) return printJson(usage);
      const { quotas } = usage;
      const limit = (l: Limit, format: (n: number) => string = String) => (l.limit === null || l.limit === 0 ? 'unlimited' : format(l.limit));
      printTable(
        [
          { quota: 'concurrent jobs', usage: String(quotas.concurrentJobs.usage), limit: limit(quotas.concurrentJobs) },
          { quota: 'stored bytes', usage: bytes(quotas.storedBytes.usage), limit: limit(quotas.storedBytes, bytes) },
          { quota: 'models', usage: String(quotas.models.usage), limit: limit(quotas.models) },
        ],
        [
          { header: 'QUOTA', value: (r) => r.quota },
          { header: 'USAGE', value: (r) => r.usage, right: true },
          { header: 'LIMIT', value: (r) => r.limit, right: true },
        ],
      );
      const breakdown = quotas.storedBytes.breakdown;
      if (breakdown) {
        const parts = Object.entries(breakdown).filter(([name]) => name !== 'total');
        printLine(`stored: ${parts.map(([name, n]) => `${name} ${bytes(n)}`).join(', ')}`);
      }
      printLine();
      printTable(Object.entries(usage.rateLimits), [
        { header: 'RATE LIMIT', value: ([name]) => name },
        { header: 'PER MINUTE', value: ([, l]) => (l ? l.perMinute : 'unlimited'), right: true },
        { header: 'BURST', value: ([, l]) => text(l?.burst), right: true },
      ]);
    });
}
