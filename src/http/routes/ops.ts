import { createHash, timingSafeEqual } from 'node:crypto';
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

/** Compares digests, so the time taken says nothing about the token. */
function bearerMatches(header: string | undefined, token: string): boolean {
  const given = /^Bearer\s+(.+)$/i.exec(header ?? '')?.[1]?.trim() ?? '';
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(token));
}

/**
 * Operator endpoints: liveness, readiness, Prometheus metrics (behind the operators'
 * bearer token when one is configured). No API key, no rate limit
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

    const token = services.config.metricsToken;
    app.get('/metrics', { schema: { hide: true } }, async (request, reply) => {
      if (token !== null && !bearerMatches(request.headers.authorization, token)) {
        return reply
          .code(401)
          .header('www-authenticate', 'Bearer realm="metrics"')
          .send({ error: 'Missing or invalid metrics token' });
      }
      const { contentType, body } = await services.metrics.exposition();
      return reply.type(contentType).send(body);
    });
  };
}
