// `finetune` entry point: runs the command tree and turns every outcome into an exit code
// (errors.ts). Messages go to stderr; stdout carries only results.
import { CommanderError } from 'commander';
import { CliError, EXIT } from './errors.ts';
import { buildProgram } from './program.ts';

export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT.ok;
  } catch (error) {
    // Commander has already printed its message (or the help text).
    if (error instanceof CommanderError) return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    if (error instanceof CliError) {
      process.stderr.write(`finetune: ${error.message}\n`);
      return error.exitCode;
    }
    process.stderr.write(`finetune: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return EXIT.internal;
  }
}

process.exitCode = await run(process.argv.slice(2));
