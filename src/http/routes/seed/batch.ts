import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { Batch, Job } from '../../../core/ports.ts';
import type { Services } from '../../../services.ts';
import { authenticate, callerOf } from '../../auth.ts';
import { presentSeedError } from '../../errors.ts';
import { idempotent } from '../../idempotency.ts';

const ErrorBody = Type.Object({ error: Type.String() }, { additionalProperties: true });

const BatchBody = Type.Object({
  items: Type.Array(
    Type.Object(
      {
        prompt: Type.String(),
        model: Type.Optional(Type.String()),
        seconds: Type.Optional(Type.Integer()),
        size: Type.Optional(Type.String()),
      },
      { additionalProperties: true },
    ),
    { minItems: 1 },
  ),
});

const BatchResponse = Type.Object({
  success: Type.Boolean(),
  batch_id: Type.String(),
  status: Type.String({ description: 'running | completed' }),
  tenant: Type.String(),
  credits_reserved: Type.Integer(),
  credits_remaining: Type.Optional(Type.Integer()),
  items: Type.Array(
    Type.Object({
      video_id: Type.String(),
      status: Type.String({ description: 'queued | processing | completed | failed' }),
      progress: Type.Integer(),
      error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
      credits_refunded: Type.Optional(Type.Integer()),
    }),
  ),
});

function present(batch: Batch, jobs: Job[], tenant: string) {
  return {
    success: true,
    batch_id: batch.batchId,
    status: batch.status,
    tenant,
    credits_reserved: batch.cost,
    items: jobs.map((job) => ({
      video_id: job.jobId,
      status: job.state === 'in_progress' ? 'processing' : job.state,
      progress: Math.round(job.progress),
      ...(job.state === 'failed' && job.error
        ? { error: job.error, credits_refunded: job.cost }
        : {}),
    })),
  };
}

/** Batches on the original API's surface: `POST /video/batch`, `GET /video/batch/{id}`. */
export function seedBatchRoutes(services: Services): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.addHook('onRequest', authenticate(services));

    app.post(
      '/video/batch',
      {
        schema: {
          summary: 'Create many video jobs at once, paid in one atomic reservation',
          tags: ['original'],
          body: BatchBody,
          response: { 200: BatchResponse, '4xx': ErrorBody, '5xx': ErrorBody },
        },
      },
      async (request, reply) => {
        const caller = callerOf(request);
        return idempotent(services, request, reply, {
          presentError: presentSeedError,
          run: async () => {
            const { batch, jobs, balance } = await services.batches.create({
              tenantId: caller.tenant.tenantId,
              keyId: caller.key.keyId,
              items: request.body.items,
            });
            return {
              statusCode: 200,
              body: {
                ...present(batch, jobs, caller.tenant.tenantId),
                credits_remaining: balance,
              },
            };
          },
        });
      },
    );

    app.get(
      '/video/batch/:id',
      {
        schema: {
          summary: 'Check a batch and the state of each of its videos',
          tags: ['original'],
          params: Type.Object({ id: Type.String() }),
          response: { 200: BatchResponse, '4xx': ErrorBody, '5xx': ErrorBody },
        },
      },
      async (request) => {
        const caller = callerOf(request);
        const { batch, jobs } = await services.batches.get(
          caller.tenant.tenantId,
          request.params.id,
        );
        return present(batch, jobs, caller.tenant.tenantId);
      },
    );
  };
}
