import type { FastifyInstance } from 'fastify';
import type { Services } from '../../services.ts';

/** A dependency that has not answered by then counts as down: probes must be quick. */
const READY_TIMEOUT_MS = 2000;

type CheckResult = 'ok' | 'failed' | 'timeout';

async function check(
  services: Services,
  name: string,
  ping: () => Promise<void>,
): Promise<CheckResult> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), READY_TIMEOUT_MS);
  });
  const answered = ping().then(
    (): CheckResult => 'ok',
    (error: unknown): CheckResult => {
      services.logger.warn({ err: error, dependency: name }, 'readiness check failed');
      return 'failed';
    },
  );
  try {
    return await Promise.race([answered, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Operator endpoints: liveness, readiness, Prometheus metrics. No key, no rate limit
 * (they sit outside the authenticated plugins) and hidden from the OpenAPI document,
 * which describes the tenant API. Bodies name which dependency failed, never why.
 */
export function opsRoutes(services: Services) {
  return async (app: FastifyInstance) => {
    app.get('/healthz', { schema: { hide: true } }, async () => ({ status: 'ok' }));

    app.get('/readyz', { schema: { hide: true } }, async (_request, reply) => {
      const [store, blobs] = await Promise.all([
        check(services, 'store', () => services.store.ping()),
        check(services, 'blobs', () => services.blobs.ping()),
      ]);
      const ready = store === 'ok' && blobs === 'ok';
      return reply
        .code(ready ? 200 : 503)
        .send({ status: ready ? 'ok' : 'unavailable', checks: { store, blobs } });
    });

    app.get('/metrics', { schema: { hide: true } }, async (_request, reply) => {
      const { contentType, body } = await services.metrics.exposition();
      return reply.type(contentType).send(body);
    });
  };
}
