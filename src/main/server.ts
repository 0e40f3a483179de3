import { pathToFileURL } from 'node:url';
import { type Config, ConfigError, loadConfig } from '../config.ts';
import { buildApp } from '../http/app.ts';
import { createServices, type Services } from '../services.ts';
import { startWorker } from '../worker/worker.ts';

export const DEMO_TENANT_ID = 'user_demo_001';

/** First run only: a tenant to try the API with, its key printed once. */
async function ensureDemoTenant(services: Services, baseUrl: string): Promise<void> {
  if (await services.store.getTenant(DEMO_TENANT_ID)) {
    process.stdout.write(
      `Demo tenant ${DEMO_TENANT_ID} already exists (its key was printed on the first run).\n` +
        `New key: npx reelpostly keys create ${DEMO_TENANT_ID}\n`,
    );
    return;
  }
  const { apiKey, balance } = await services.accounts.createTenant({
    tenantId: DEMO_TENANT_ID,
    email: 'demo@reelpostly.dev',
    planId: 'starter',
    credits: 100,
    keyName: 'demo',
  });
  const body = JSON.stringify({
    prompt: 'Tea farms at sunrise, cinematic',
    model: 'sora-2',
    seconds: 8,
    size: '1280x720',
  });
  process.stdout.write(
    [
      `Demo tenant ${DEMO_TENANT_ID} created with ${balance} credits.`,
      `API key: ${apiKey.plaintext}`,
      'Try it:',
      `  curl -X POST "${baseUrl}/video/generate" -H "x-api-key: ${apiKey.plaintext}" -H "Content-Type: application/json" -d '${body}'`,
      `  curl "${baseUrl}/video/status/VIDEO_ID" -H "x-api-key: ${apiKey.plaintext}"`,
      '',
    ].join('\n'),
  );
}

/** Migrates, listens, runs the worker; resolves once listening. Stops cleanly on SIGINT/SIGTERM. */
export async function startServer(config: Config): Promise<{ close(): Promise<void> }> {
  const services = createServices(config);
  await services.store.migrate();
  const app = await buildApp(services);
  await app.listen({ port: config.port, host: config.host });
  const worker = config.worker.enabled ? startWorker(services) : null;
  process.stdout.write(`ReelPostly gateway listening on ${config.publicUrl}\n`);
  if (config.demo) await ensureDemoTenant(services, config.publicUrl);

  let closing: Promise<void> | null = null;
  const close = () => {
    // Stop accepting and drain requests while the worker finishes the jobs under way
    // (releasing their leases); the store closes only when both are done.
    closing ??= (async () => {
      await Promise.all([app.close(), worker?.stop()]);
      await services.close();
    })();
    return closing;
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      services.logger.info({ signal }, 'shutting down');
      close().then(
        () => process.exit(0),
        (error: unknown) => {
          services.logger.error({ err: error }, 'shutdown failed');
          process.exit(1);
        },
      );
    });
  }
  return { close };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  try {
    await startServer(loadConfig());
  } catch (error) {
    process.stderr.write(
      `${error instanceof ConfigError ? error.message : (error as Error).stack}\n`,
    );
    process.exit(1);
  }
}
