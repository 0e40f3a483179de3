import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { Job } from '../../../core/ports.ts';
import type { Services } from '../../../services.ts';
import { authenticate, callerOf } from '../../auth.ts';
import { presentSeedError } from '../../errors.ts';
import { idempotent } from '../../idempotency.ts';

const GenerateBody = Type.Object(
  {
    prompt: Type.String({
      description: 'Describe your video scene',
      examples: ['Tea farms at sunrise, cinematic'],
    }),
    model: Type.Optional(
      Type.String({ description: 'Public model id from the catalog', examples: ['sora-2'] }),
    ),
    seconds: Type.Optional(
      Type.Integer({ description: 'Length in seconds (4, 8 or 12 by default)', examples: [8] }),
    ),
    size: Type.Optional(Type.String({ description: 'WIDTHxHEIGHT', examples: ['1280x720'] })),
    webhook_url: Type.Optional(
      Type.String({
        description:
          "Also POST this job's video.completed / video.failed here, signed with your webhook endpoints' secret (register one first)",
        examples: ['https://example.com/hooks/reelpostly'],
      }),
    ),
  },
  { additionalProperties: true },
);

const GenerateResponse = Type.Object({
  success: Type.Boolean(),
  video_id: Type.String(),
  status: Type.String(),
  progress: Type.Integer(),
  tenant: Type.String(),
  credits_remaining: Type.Integer(),
});

const StatusResponse = Type.Object({
  success: Type.Boolean(),
  id: Type.String(),
  status: Type.String({ description: 'queued | processing | completed | failed' }),
  progress: Type.Integer(),
  providerStatus: Type.String(),
  url: Type.Optional(Type.String()),
  filename: Type.Optional(Type.String()),
  size: Type.Optional(Type.Integer()),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() })),
  credits_refunded: Type.Optional(Type.Integer()),
});

const ErrorBody = Type.Object({ error: Type.String() }, { additionalProperties: true });

/** The original's words for our states. */
function seedStatus(job: Job): string {
  return job.state === 'in_progress' ? 'processing' : job.state;
}

/** The original API: `POST /video/generate`, `GET /video/status/{id}`, byte-for-byte shapes. */
export function seedRoutes(services: Services): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.addHook('onRequest', authenticate(services));

    app.post(
      '/video/generate',
      {
        schema: {
          summary: 'Create a video generation job (original API)',
          tags: ['original'],
          body: GenerateBody,
          response: { 200: GenerateResponse, '4xx': ErrorBody, '5xx': ErrorBody },
        },
      },
      async (request, reply) => {
        const caller = callerOf(request);
        const { prompt, model, seconds, size, webhook_url } = request.body;
        return idempotent(services, request, reply, {
          presentError: presentSeedError,
          run: async () => {
            const { job, balance } = await services.videos.generate({
              tenantId: caller.tenant.tenantId,
              keyId: caller.key.keyId,
              prompt,
              ...(model === undefined ? {} : { model }),
              ...(seconds === undefined ? {} : { seconds }),
              ...(size === undefined ? {} : { size }),
              ...(webhook_url === undefined ? {} : { webhookUrl: webhook_url }),
            });
            return {
              statusCode: 200,
              body: {
                success: true,
                video_id: job.jobId,
                status: seedStatus(job),
                progress: job.progress,
                tenant: caller.tenant.tenantId,
                credits_remaining: balance,
              },
            };
          },
        });
      },
    );

    app.get(
      '/video/status/:id',
      {
        schema: {
          summary: 'Check a video job; completed jobs carry a signed download URL (original API)',
          tags: ['original'],
          params: Type.Object({ id: Type.String() }),
          response: { 200: StatusResponse, '4xx': ErrorBody, '5xx': ErrorBody },
        },
      },
      async (request) => {
        const caller = callerOf(request);
        const job = await services.videos.get(caller.tenant.tenantId, request.params.id);
        const asset = job.state === 'completed' ? job.asset : null;
        const error = job.state === 'failed' ? job.error : null;
        const url = asset ? ((await services.videos.signedUrl(job)) as string) : undefined;
        // One literal for every state, absent fields undefined (the serializer leaves them
        // out). Spreading a base object and adding fields gives each response a hidden
        // class of its own on Node 20, which measurably slowed this hot route.
        return {
          success: true,
          id: job.jobId,
          status: seedStatus(job),
          progress: job.progress,
          providerStatus: job.providerStatus,
          url,
          filename: asset?.filename,
          size: asset?.bytes,
          error: error ?? undefined,
          credits_refunded: error ? job.cost : undefined,
        };
      },
    );
  };
}
