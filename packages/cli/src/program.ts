// The command tree. Built apart from running it (main.ts) so its shape can be inspected alone.
import { Command, Option } from 'commander';
import { datasetCommands } from './commands/datasets.ts';
import { jobCommands } from './commands/jobs.ts';
import { modelCommands } from './commands/models.ts';
import { predictCommand } from './commands/predict.ts';
import { usageCommand } from './commands/usage.ts';
import { DEFAULT_URL, parseUrl } from './context.ts';
import { EXIT } from './errors.ts';

const EXIT_CODES = `
Exit codes:
  ${EXIT.ok}  success
  ${EXIT.usage}  usage error (bad arguments or options, unreadable local file)
  ${EXIT.notFound}  not found (404)
  ${EXIT.auth}  authentication or permission (401, 403)
  ${EXIT.limited}  rate limited or over a quota (429, 403 quota_exceeded)
  ${EXIT.clientError}  other request error (4xx)
  ${EXIT.server}  server or network error (5xx, connection refused)
  ${EXIT.jobFailed}  watched job ended failed or canceled`;

export function buildProgram(): Command {
  const program = new Command('finetune')
    .description('Command-line client for the finetune transfer-learning API')
    // Usage errors become exceptions (main.ts maps them to exit code 2) instead of process.exit.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    .addOption(new Option('--url <url>', 'API base URL').env('FINETUNE_URL').default(DEFAULT_URL).argParser(parseUrl))
    .addOption(new Option('--api-key <key>', 'API key (sent as Authorization: Bearer)').env('FINETUNE_API_KEY'))
    .option('--json', 'print the API\'s JSON on stdout instead of tables')
    .addHelpText('after', EXIT_CODES);
  datasetCommands(program);
  jobCommands(program);
  modelCommands(program);
  predictCommand(program);
  usageCommand(program);
  return program;
}
