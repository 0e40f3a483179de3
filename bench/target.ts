/**
 * The servers under load, in their own process so the load generator does not share
 * their event loop: a bare Fastify route (the baseline) and the full gateway, each on
 * its own port, measured one after the other. Prints one JSON line once listening.
 * argv: <dataDir> <catalogPath>
 */
import Fastify from 'fastify';
import { pino } from 'pino';
import { loadConfig } from '../src/config.ts';
import { buildApp } from '../src/http/app.ts';
import { createServices } from '../src/services.ts';

const [dataDir, catalogPath] = process.argv.slice(2) as [string, string];

const bare = Fastify();
bare.get('/bare/:id', async (request) => ({ id: (request.params as { id: string }).id }));
await bare.listen({ port: 0, host: '127.0.0.1' });

const config = loadConfig({
  PORT: '0',
  HOST: '127.0.0.1',
  REELPOSTLY_DATA_DIR: dataDir,
  REELPOSTLY_CATALOG: catalogPath,
  REELPOSTLY_SIMULATED_SECONDS: '1',
  REELPOSTLY_DEMO: 'false',
  LOG_LEVEL: 'silent',
});
const services = createServices(config, { logger: pino({ level: 'silent' }) });
await services.store.migrate();
// No worker: the figures are the request path's; jobs simply stay queued.
const app = await buildApp(services);
await app.listen({ port: 0, host: '127.0.0.1' });

const portOf = (server: typeof bare.server) => (server.address() as { port: number }).port;
process.stdout.write(
  `${JSON.stringify({ bare: portOf(bare.server), gateway: portOf(app.server) })}\n`,
);
process.on('SIGTERM', async () => {
  await Promise.all([bare.close(), app.close()]);
  await services.close();
  process.exit(0);
});
