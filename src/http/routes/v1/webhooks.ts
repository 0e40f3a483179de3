import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { Batch, Delivery, Job, WebhookEndpoint } from '../../../core/ports.ts';
import { WEBHOOK_EVENT_TYPES } from '../../../core/webhooks.ts';
import type { Services } from '../../../services.ts';
import { callerOf } from '../../auth.ts';
import { idempotent } from '../../idempotency.ts';
import { OpenAIErrorBody, presentOpenAIError } from './errors.ts';
import { presentVideo, VideoSchema } from './present.ts';

const Errors = { '4xx': OpenAIErrorBody, '5xx': OpenAIErrorBody };
const toSeconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));
const EventType = Type.Union(WEBHOOK_EVENT_TYPES.map((type) => Type.Literal(type)));
const EndpointId = Type.Object({ id: Type.String({ examples: ['wh_0123456789abcdef'] }) });

const EndpointSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('webhook_endpoint'),
  url: Type.String(),
  events: Type.Array(Type.String()),
  status: Type.Union([Type.Literal('enabled'), Type.Literal('disabled')]),
  disabled_reason: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.Integer(),
  previous_secret_expires_at: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Until when the secret before the last rotation still signs too.',
  }),
  secret: Type.Optional(
    Type.String({
      description:
        'Standard Webhooks signing secret (`whsec_...`): returned only on create and rotate.',
    }),
  ),
});

const AttemptSchema = Type.Object({
  at: Type.Integer(),
  latency_ms: Type.Integer(),
  status_code: Type.Union([Type.Integer(), Type.Null()]),
  response_body: Type.String({ description: 'At most the first 256 bytes' }),
  error: Type.Union([Type.String(), Type.Null()]),
});

const DeliverySchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('webhook_delivery'),
  event_id: Type.String({ description: 'Sent as `webhook-id`; receivers dedupe on it.' }),
  event_type: Type.String(),
  status: Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('failed')]),
  attempts: Type.Array(AttemptSchema),
  next_attempt_at: Type.Union([Type.Integer(), Type.Null()]),
  created_at: Type.Integer(),
});

const BatchSchema = Type.Object({
  id: Type.String(),
  object: Type.Literal('video.batch'),
  status: Type.Union([Type.Literal('running'), Type.Literal('completed')]),
  credits_reserved: Type.Integer(),
  created_at: Type.Integer(),
  completed_at: Type.Union([Type.Integer(), Type.Null()]),
  counts: Type.Object({
    total: Type.Integer(),
    queued: Type.Integer(),
    in_progress: Type.Integer(),
    completed: Type.Integer(),
    failed: Type.Integer(),
  }),
  data: Type.Array(VideoSchema),
});

export const BatchItemSchema = Type.Object(
  {
    prompt: Type.String(),
    model: Type.Optional(Type.String()),
    seconds: Type.Optional(Type.Union([Type.String({ pattern: '^[0-9]+$' }), Type.Integer()])),
    size: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

function presentEndpoint(endpoint: WebhookEndpoint, secret?: string) {
  return {
    id: endpoint.endpointId,
    object: 'webhook_endpoint' as const,
    url: endpoint.url,
    events: endpoint.events,
    status: endpoint.status,
    disabled_reason: endpoint.disabledReason,
    created_at: toSeconds(endpoint.createdAt) as number,
    previous_secret_expires_at: toSeconds(endpoint.previousSecretExpiresAt),
    ...(secret ? { secret } : {}),
  };
}

function presentDelivery(delivery: Delivery) {
  return {
    id: delivery.deliveryId,
    object: 'webhook_delivery' as const,
    event_id: delivery.eventId,
    event_type: delivery.eventType,
    status: delivery.status,
    attempts: delivery.attempts.map((attempt) => ({
      at: toSeconds(attempt.at) as number,
      latency_ms: attempt.latencyMs,
      status_code: attempt.statusCode,
      response_body: attempt.responseBody,
      error: attempt.error,
    })),
    next_attempt_at: toSeconds(delivery.nextAttemptAt),
    created_at: toSeconds(delivery.createdAt) as number,
  };
}

export function presentBatch(batch: Batch, jobs: Job[]) {
  const count = (state: Job['state']) => jobs.filter((job) => job.state === state).length;
  return {
    id: batch.batchId,
    object: 'video.batch' as const,
    status: batch.status,
    credits_reserved: batch.cost,
    created_at: toSeconds(batch.createdAt) as number,
    completed_at: toSeconds(batch.completedAt),
    counts: {
      total: batch.jobIds.length,
      queued: count('queued'),
      in_progress: count('in_progress'),
      completed: count('completed'),
      failed: count('failed'),
    },
    data: jobs.map(presentVideo),
  };
}

/** `/v1/webhooks` (tenant endpoints, delivery log, replay) and `/v1/videos/batches`. */
export function webhookRoutes(services: Services): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.post(
      '/webhooks',
      {
        schema: {
          summary: 'Create a webhook endpoint',
          description:
            'Registers an https URL (public addresses only) for the given events. The response carries the signing secret, shown this once.',
          tags: ['webhooks'],
          body: Type.Object({
            url: Type.String({ examples: ['https://example.com/hooks/reelpostly'] }),
            events: Type.Optional(Type.Array(EventType, { minItems: 1 })),
          }),
          response: { 200: EndpointSchema, ...Errors },
        },
      },
      async (request) => {
        const { endpoint, secret } = await services.webhooks.createEndpoint({
          tenantId: callerOf(request).tenant.tenantId,
          url: request.body.url,
          events: request.body.events,
        });
        return presentEndpoint(endpoint, secret);
      },
    );

    app.get(
      '/webhooks',
      {
        schema: {
          summary: 'List webhook endpoints',
          tags: ['webhooks'],
          response: {
            200: Type.Object({ object: Type.Literal('list'), data: Type.Array(EndpointSchema) }),
            ...Errors,
          },
        },
      },
      async (request) => {
        const endpoints = await services.webhooks.listEndpoints(callerOf(request).tenant.tenantId);
        return { object: 'list' as const, data: endpoints.map((e) => presentEndpoint(e)) };
      },
    );

    app.delete(
      '/webhooks/:id',
      {
        schema: {
          summary: 'Delete a webhook endpoint',
          tags: ['webhooks'],
          params: EndpointId,
          response: {
            200: Type.Object({
              id: Type.String(),
              object: Type.Literal('webhook_endpoint.deleted'),
              deleted: Type.Boolean(),
            }),
            ...Errors,
          },
        },
      },
      async (request) => {
        const endpoint = await services.webhooks.deleteEndpoint(
          callerOf(request).tenant.tenantId,
          request.params.id,
        );
        return {
          id: endpoint.endpointId,
          object: 'webhook_endpoint.deleted' as const,
          deleted: true,
        };
      },
    );

    app.post(
      '/webhooks/:id/rotate',
      {
        schema: {
          summary: 'Rotate a webhook signing secret',
          description:
            'Issues a new secret (shown this once). The old one keeps signing alongside it, both signatures in `webhook-signature`, for `overlap_seconds` (default 24 h). Also re-enables a disabled endpoint.',
          tags: ['webhooks'],
          params: EndpointId,
          body: Type.Optional(
            Type.Object({ overlap_seconds: Type.Optional(Type.Integer({ minimum: 0 })) }),
          ),
          response: { 200: EndpointSchema, ...Errors },
        },
      },
      async (request) => {
        const overlap = request.body?.overlap_seconds;
        const { endpoint, secret } = await services.webhooks.rotateSecret(
          callerOf(request).tenant.tenantId,
          request.params.id,
          overlap === undefined ? {} : { overlapMs: overlap * 1000 },
        );
        return presentEndpoint(endpoint, secret);
      },
    );

    app.get(
      '/webhooks/:id/deliveries',
      {
        schema: {
          summary: 'List deliveries of a webhook endpoint',
          description:
            'Newest first: status, every attempt with latency, status code and a response prefix.',
          tags: ['webhooks'],
          params: EndpointId,
          querystring: Type.Object({
            after: Type.Optional(Type.String()),
            limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
          }),
          response: {
            200: Type.Object({
              object: Type.Literal('list'),
              data: Type.Array(DeliverySchema),
              has_more: Type.Boolean(),
              last_id: Type.Union([Type.String(), Type.Null()]),
            }),
            ...Errors,
          },
        },
      },
      async (request) => {
        const { after, limit } = request.query;
        const page = await services.webhooks.listDeliveries(
          callerOf(request).tenant.tenantId,
          request.params.id,
          { ...(after === undefined ? {} : { after }), limit },
        );
        return {
          object: 'list' as const,
          data: page.items.map(presentDelivery),
          has_more: page.next !== null,
          last_id: page.items.at(-1)?.deliveryId ?? null,
        };
      },
    );

    app.post(
      '/webhooks/:id/replay',
      {
        schema: {
          summary: 'Replay a webhook event',
          description:
            'Sends an earlier event to this endpoint again (same `webhook-id`), named by `event_id` or `delivery_id`.',
          tags: ['webhooks'],
          params: EndpointId,
          body: Type.Object({
            event_id: Type.Optional(Type.String()),
            delivery_id: Type.Optional(Type.String()),
          }),
          response: { 200: DeliverySchema, ...Errors },
        },
      },
      async (request) => {
        const delivery = await services.webhooks.replay(
          callerOf(request).tenant.tenantId,
          request.params.id,
          { eventId: request.body.event_id, deliveryId: request.body.delivery_id },
        );
        return presentDelivery(delivery);
      },
    );

    app.post(
      '/videos/batches',
      {
        schema: {
          summary: 'Create a batch of videos',
          description:
            'Validates every item, then reserves the whole batch price in one atomic step (402 and nothing charged when the balance cannot cover it). Items that fail are refunded one by one; `batch.completed` is sent when all have ended.',
          tags: ['videos'],
          body: Type.Object({ items: Type.Array(BatchItemSchema, { minItems: 1 }) }),
          response: { 200: BatchSchema, ...Errors },
        },
      },
      async (request, reply) => {
        const caller = callerOf(request);
        return idempotent(services, request, reply, {
          presentError: presentOpenAIError,
          run: async () => {
            const { batch, jobs } = await services.batches.create({
              tenantId: caller.tenant.tenantId,
              keyId: caller.key.keyId,
              items: request.body.items.map(({ prompt, model, seconds, size }) => ({
                prompt,
                ...(model === undefined ? {} : { model }),
                ...(seconds === undefined ? {} : { seconds: Number(seconds) }),
                ...(size === undefined ? {} : { size }),
              })),
            });
            return { statusCode: 200, body: presentBatch(batch, jobs) };
          },
        });
      },
    );

    app.get(
      '/videos/batches/:id',
      {
        schema: {
          summary: 'Retrieve a batch of videos',
          tags: ['videos'],
          params: Type.Object({ id: Type.String() }),
          response: { 200: BatchSchema, ...Errors },
        },
      },
      async (request) => {
        const { batch, jobs } = await services.batches.get(
          callerOf(request).tenant.tenantId,
          request.params.id,
        );
        return presentBatch(batch, jobs);
      },
    );
  };
}
