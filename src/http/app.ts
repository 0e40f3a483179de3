import { randomUUID } from 'node:crypto';
import cors from '@fastify/cors';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type RouteOptions } from 'fastify';
import { AppError } from '../core/errors.ts';
import type { Services } from '../services.ts';
import { prepareErrorReply, presentSeedError, toAppError } from './errors.ts';
import { registerOpenApi } from './openapi.ts';
import { filesRoutes } from './routes/files.ts';
import { opsRoutes } from './routes/ops.ts';
import { seedBatchRoutes } from './routes/seed/batch.ts';
import { seedRoutes } from './routes/seed/video.ts';
import { upstreamWebhookRoutes } from './routes/upstream-webhooks.ts';
import { isOpenAIPath, openAIRetryHeader, presentOpenAIError } from './routes/v1/errors.ts';
import { v1Routes } from './routes/v1/routes.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * The whole HTTP surface, without listening: servers, Lambda and tests share it.
 * `onRoute` sees every route as it is added (the OpenAPI test checks each is documented).
 */
export async function buildApp(
  services: Services,
  options: { onRoute?: (route: RouteOptions) => void } = {},
): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: services.logger as FastifyBaseLogger,
    requestIdHeader: false,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
    bodyLimit: 1024 * 1024,
    trustProxy: true,
  }).withTypeProvider<TypeBoxTypeProvider>();

  if (options.onRoute) app.addHook('onRoute', options.onRoute);
  app.decorateRequest('caller', null);
  // Callback hooks: on every request, so they spare the promise an async hook costs.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    done();
  });
  // By route pattern, never the raw URL: ids in paths would explode label cardinality.
  app.addHook('onResponse', (request, reply, done) => {
    services.metrics.httpDuration.observe(
      {
        route: request.routeOptions.url ?? 'unmatched',
        method: request.method,
        status_code: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
    done();
  });

  await app.register(cors, {
    origin: services.config.corsOrigins === '*' ? '*' : services.config.corsOrigins,
    // Joined once here: the plugin joins arrays again on every request.
    methods: 'GET, HEAD, POST, DELETE, OPTIONS',
    allowedHeaders: 'content-type, x-api-key, authorization, idempotency-key, x-request-id',
    exposedHeaders: [
      'x-request-id',
      'retry-after',
      'ratelimit-limit',
      'ratelimit-remaining',
      'ratelimit-reset',
      'idempotent-replayed',
      'content-range',
      'accept-ranges',
      'openai-poll-after-ms',
      'x-should-retry',
    ].join(', '),
    maxAge: 600,
  });

  // One handler, two shapes: /v1 answers as OpenAI did, everything else as the seed.
  app.setErrorHandler((error, request, reply) => {
    const appError = toAppError(error);
    const statusCode = prepareErrorReply(appError, request, reply);
    if (!isOpenAIPath(request.url))
      return reply.code(statusCode).send(presentSeedError(appError).body);
    openAIRetryHeader(appError, reply);
    return reply.code(statusCode).send(presentOpenAIError(appError).body);
  });
  app.setNotFoundHandler((request, reply) => {
    const error = new AppError(
      'not_found',
      `Route not found: ${request.method} ${request.url.split('?')[0]}`,
    );
    const present = isOpenAIPath(request.url) ? presentOpenAIError : presentSeedError;
    return reply.code(404).send(present(error).body);
  });

  await registerOpenApi(app, services);
  await app.register(opsRoutes(services));
  await app.register(seedRoutes(services));
  await app.register(seedBatchRoutes(services));
  await app.register(v1Routes(services), { prefix: '/v1' });
  await app.register(upstreamWebhookRoutes(services));
  if (services.fileServer) await app.register(filesRoutes(services.fileServer));
  return app;
}
