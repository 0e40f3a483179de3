import { Type } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import type { AppError, ErrorCode } from '../../../core/errors.ts';
import { type Presented, statusOf } from '../../errors.ts';

/**
 * OpenAI's error `type` and default `code` per domain error. The body shape is
 * `{error: {message, type, param, code}}` (openai-openapi `ErrorResponse`); the SDK
 * picks its error class from the status alone, so `type` and `code` are for humans
 * and for clients that branch on them.
 */
const OPENAI_ERRORS: Record<ErrorCode, { type: string; code: string | null }> = {
  missing_api_key: { type: 'authentication_error', code: 'missing_api_key' },
  invalid_api_key: { type: 'authentication_error', code: 'invalid_api_key' },
  tenant_suspended: { type: 'permission_error', code: 'tenant_suspended' },
  insufficient_credits: { type: 'insufficient_quota', code: 'insufficient_credits' },
  validation_error: { type: 'invalid_request_error', code: null },
  not_found: { type: 'not_found_error', code: 'not_found' },
  idempotency_conflict: { type: 'invalid_request_error', code: 'idempotency_conflict' },
  idempotency_in_progress: { type: 'invalid_request_error', code: 'idempotency_in_progress' },
  rate_limited: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  quota_exceeded: { type: 'insufficient_quota', code: 'monthly_quota_exceeded' },
  upstream_error: { type: 'server_error', code: 'upstream_error' },
  version_conflict: { type: 'invalid_request_error', code: 'conflict' },
  internal_error: { type: 'server_error', code: 'internal_error' },
};

/**
 * Errors the SDK would retry by status (409, 429) but that a retry cannot fix before
 * the client changes something: the monthly quota resets next month, a reused
 * Idempotency-Key stays bound to its first body. (An in-progress key is worth retrying:
 * the retry replays the first answer.)
 */
const DO_NOT_RETRY: ReadonlySet<ErrorCode> = new Set([
  'quota_exceeded',
  'idempotency_conflict',
  'version_conflict',
]);

export const OpenAIErrorBody = Type.Object(
  {
    error: Type.Object({
      message: Type.String(),
      type: Type.String({
        examples: ['invalid_request_error'],
        description:
          'invalid_request_error | authentication_error | permission_error | insufficient_quota | not_found_error | rate_limit_error | server_error',
      }),
      param: Type.Union([Type.String(), Type.Null()]),
      code: Type.Union([Type.String(), Type.Null()]),
    }),
  },
  { description: "OpenAI's error shape" },
);

export function isOpenAIPath(url: string): boolean {
  return url === '/v1' || url.startsWith('/v1/') || url.startsWith('/v1?');
}

/** The /v1 surface's error body; `details.code` refines the default code where the core knows better. */
export function presentOpenAIError(error: AppError): Presented {
  const { type, code } = OPENAI_ERRORS[error.code];
  const refined = typeof error.details.code === 'string' ? error.details.code : code;
  return {
    statusCode: statusOf(error),
    body: {
      error: {
        message: error.message,
        type,
        param: error.param ?? null,
        code: refined,
      },
    },
  };
}

/** Tells OpenAI SDKs not to retry what a retry cannot fix. */
export function openAIRetryHeader(error: AppError, reply: FastifyReply): void {
  if (DO_NOT_RETRY.has(error.code)) reply.header('x-should-retry', 'false');
}
