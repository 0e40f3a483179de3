import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import { AppError, ProviderError } from '../../core/errors.ts';
import type { Services } from '../../services.ts';

/**
 * `POST /webhooks/upstream/{provider}?job=ID`: an upstream reporting that a job ended.
 * The signature is checked on the raw body by the provider's adapter; then the job is
 * advanced at once (polling stays the fallback, so a lost webhook only costs latency).
 */
export function upstreamWebhookRoutes(services: Services): FastifyPluginAsyncTypebox {
  return async (app) => {
    // Signatures cover the exact bytes: keep the body raw, whatever its content type.
    app.removeAllContentTypeParsers();
    app.addContentTypeParser(
      '*',
      { parseAs: 'buffer', bodyLimit: 1024 * 1024 },
      (_req, body, done) => done(null, body),
    );

    app.post(
      '/webhooks/upstream/:provider',
      {
        schema: {
          summary: 'Receive an upstream provider webhook (signature verified on the raw body)',
          tags: ['webhooks'],
          params: Type.Object({ provider: Type.String() }),
          querystring: Type.Object({
            job: Type.String({
              description: 'Our video id, set in the callback URL we gave the upstream',
            }),
          }),
          response: {
            200: Type.Object({ received: Type.Boolean(), status: Type.String() }),
          },
        },
      },
      async (request) => {
        const provider = services.providers.get(request.params.provider);
        if (!provider?.verifyWebhook) {
          throw new AppError('not_found', `No webhooks for provider ${request.params.provider}`);
        }
        const rawBody = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
        const headers = Object.fromEntries(
          Object.entries(request.headers).map(([name, value]) => [
            name.toLowerCase(),
            Array.isArray(value) ? value.join(',') : value,
          ]),
        );
        let providerJobId: string;
        try {
          ({ providerJobId } = await provider.verifyWebhook({
            rawBody,
            headers,
            now: services.clock.now(),
          }));
        } catch (error) {
          if (error instanceof ProviderError && error.httpStatus === 401) {
            throw new AppError('validation_error', 'Invalid webhook signature', {
              cause: error,
              details: { statusCode: 401 },
            });
          }
          throw error;
        }
        const job = await services.store.getJob(request.query.job);
        const expected =
          job?.providerJobId && (provider.webhookIdOf?.(job.providerJobId) ?? job.providerJobId);
        if (!job || job.provider !== provider.id || expected !== providerJobId) {
          throw new AppError('not_found', 'No such job for this webhook');
        }
        const advanced = (await services.pipeline.advance(job.jobId)) ?? job;
        return { received: true, status: advanced.state };
      },
    );
  };
}
