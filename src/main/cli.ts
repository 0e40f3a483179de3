import { userInfo } from 'node:os';
import { pino } from 'pino';
import { buildProgram } from '../cli/program.ts';
import { ConfigError, loadConfig } from '../config.ts';
import { isAppError } from '../core/errors.ts';
import { createServices, type Services } from '../services.ts';
import { startServer } from './server.ts';

const program = buildProgram({
  io: { out: (text) => process.stdout.write(`${text}\n`) },
  serve: async () => {
    await startServer(loadConfig());
  },
  withServices: async <T>(fn: (services: Services) => Promise<T>): Promise<T> => {
    const config = loadConfig();
    const services = createServices(config, {
      logger: pino({ level: 'warn' }, pino.destination(2)),
      actor: `cli:${operatorName()}`,
    });
    try {
      await services.store.migrate();
      return await fn(services);
    } finally {
      await services.close();
    }
  },
});

/** Who runs the command, for the audit log; containers may have no passwd entry. */
function operatorName(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? `uid:${process.getuid?.() ?? 'unknown'}`;
  }
}

try {
  await program.parseAsync(process.argv);
} catch (error) {
  // Operator mistakes read as one line; anything else keeps its stack for a bug report.
  const message =
    isAppError(error) || error instanceof ConfigError ? error.message : (error as Error).stack;
  process.stderr.write(`error: ${message}\n`);
  process.exitCode = 1;
}
