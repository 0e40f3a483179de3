import { type FastifyPluginAsyncTypebox, type Static, Type } from '@fastify/type-provider-typebox';
import type { ModelEntry } from '../../../core/catalog.ts';
import { AppError } from '../../../core/errors.ts';
import { quotaPeriod } from '../../../core/limits.ts';
import type { Services } from '../../../services.ts';
import { callerOf } from '../../auth.ts';
import { OpenAIErrorBody } from './errors.ts';

const Errors = { '4xx': OpenAIErrorBody, '5xx': OpenAIErrorBody };

/** OpenAI's Model object plus what a caller needs to build a valid, priced request. */
const ModelSchema = Type.Object({
  id: Type.String({ examples: ['sora-2'] }),
  object: Type.Literal('model'),
  created: Type.Integer({ description: 'Always 0: catalog entries carry no creation date' }),
  owned_by: Type.String({ examples: ['reelpostly'] }),
  description: Type.Union([Type.String(), Type.Null()]),
  seconds: Type.Array(Type.String(), { examples: [['4', '8', '12']] }),
  sizes: Type.Array(Type.String(), { examples: [['720x1280', '1280x720']] }),
  price: Type.Object({
    credits: Type.Integer({ examples: [1] }),
    per: Type.Union([Type.Literal('video'), Type.Literal('second')]),
  }),
  remix: Type.Boolean({ description: 'Whether POST /v1/videos/{id}/remix works for it' }),
  input_reference: Type.Boolean({ description: 'Whether it takes input_reference' }),
});

const AccountSchema = Type.Object({
  object: Type.Literal('account'),
  tenant: Type.Object({
    id: Type.String(),
    email: Type.String(),
    status: Type.String({ examples: ['active'] }),
    created_at: Type.Integer(),
  }),
  plan: Type.Object({
    id: Type.String({ examples: ['starter'] }),
    rate_per_second: Type.Number({ examples: [10] }),
    burst: Type.Integer({ examples: [20] }),
    monthly_quota: Type.Integer({ examples: [1000] }),
  }),
  credits: Type.Object({ balance: Type.Integer({ examples: [99] }) }),
  usage: Type.Object(
    {
      period: Type.String({ examples: ['2026-12'] }),
      requests: Type.Integer({ description: 'Requests this month, this one included' }),
      quota: Type.Integer(),
      remaining: Type.Integer(),
    },
    { description: 'Requests counted against the monthly quota of the calling API key (UTC)' },
  ),
  rate_limit: Type.Object(
    {
      limit: Type.Integer({ description: 'Burst size' }),
      remaining: Type.Integer(),
      reset_seconds: Type.Integer({ description: 'Until the burst is fully available again' }),
    },
    { description: 'The calling key after this request, as in the RateLimit-* headers' },
  ),
});

/** `GET /v1/models` (OpenAI list shape, with catalog extras) and `GET /v1/account`. */
export function catalogRoutes(services: Services): FastifyPluginAsyncTypebox {
  const present = (model: ModelEntry): Static<typeof ModelSchema> => {
    const provider = services.providers.get(model.routes[0]?.provider ?? '');
    return {
      id: model.id,
      object: 'model',
      created: 0,
      owned_by: 'reelpostly',
      description: model.description ?? null,
      seconds: model.seconds.map(String),
      sizes: model.sizes,
      price: model.price,
      remix: provider?.capabilities.remix ?? false,
      input_reference: provider?.capabilities.inputReference ?? false,
    };
  };

  return async (app) => {
    app.get(
      '/models',
      {
        schema: {
          summary: 'List models',
          description: 'Every model the caller may use, with allowed seconds, sizes and price.',
          tags: ['catalog'],
          response: {
            200: Type.Object({ object: Type.Literal('list'), data: Type.Array(ModelSchema) }),
            ...Errors,
          },
        },
      },
      async () => ({
        object: 'list' as const,
        data: [...services.catalog.models.values()].map(present),
      }),
    );

    app.get(
      '/models/:model',
      {
        schema: {
          summary: 'Retrieve a model',
          tags: ['catalog'],
          params: Type.Object({ model: Type.String({ examples: ['sora-2'] }) }),
          response: { 200: ModelSchema, ...Errors },
        },
      },
      async (request) => {
        const model = services.catalog.models.get(request.params.model);
        if (!model) {
          throw new AppError('not_found', `Model not found: ${request.params.model}`, {
            param: 'model',
            details: { code: 'model_not_found' },
          });
        }
        return present(model);
      },
    );

    app.get(
      '/account',
      {
        schema: {
          summary: 'Your account',
          description:
            "The caller's tenant, plan, credit balance, this month's usage against the quota and the current rate limit.",
          tags: ['catalog'],
          response: { 200: AccountSchema, ...Errors },
        },
      },
      async (request) => {
        const { tenant, plan, rate, quota } = callerOf(request);
        const balance = await services.accounts.balance(tenant.tenantId);
        return {
          object: 'account' as const,
          tenant: {
            id: tenant.tenantId,
            email: tenant.email,
            status: tenant.status,
            created_at: Math.floor(tenant.createdAt / 1000),
          },
          plan: {
            id: plan.planId,
            rate_per_second: plan.ratePerSecond,
            burst: plan.burst,
            monthly_quota: plan.monthlyQuota,
          },
          credits: { balance },
          usage: {
            period: quotaPeriod(services.clock.now()),
            requests: quota.used,
            quota: quota.limit,
            remaining: quota.remaining,
          },
          rate_limit: {
            limit: rate.limit,
            remaining: rate.remaining,
            reset_seconds: Math.ceil(rate.resetMs / 1000),
          },
        };
      },
    );
  };
}
