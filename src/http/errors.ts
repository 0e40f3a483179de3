import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, type ErrorCode } from '../core/errors.ts';
import type { RateDecision } from '../core/ports.ts';

/** The one ErrorCode -> HTTP status table. */
export const STATUS: Record<ErrorCode, number> = {
  missing_api_key: 401,
  invalid_api_key: 401,
  tenant_suspended: 403,
  insufficient_credits: 402,
  validation_error: 400,
  not_found: 404,
  idempotency_conflict: 409,
  idempotency_in_progress: 409,
  rate_limited: 429,
  quota_exceeded: 429,
  upstream_error: 502,
  version_conflict: 409,
  internal_error: 500,
};

export interface Presented {
  statusCode: number;
  body: unknown;
}

/** The seed surface's shape: `{ "error": "..." }`, plus ids where the original added them. */
export function presentSeedError(error: AppError): Presented {
  const body: Record<string, unknown> = { error: error.message };
  if (error.code === 'upstream_error' && error.details.videoId !== undefined) {
    body.video_id = error.details.videoId;
    body.credits_remaining = error.details.creditsRemaining;
  }
  return { statusCode: statusOf(error), body };
}

export function statusOf(error: AppError): number {
  return (error.details.statusCode as number | undefined) ?? STATUS[error.code];
}

/** Turns anything thrown into an AppError; unknown errors never leak their message. */
export function toAppError(error: unknown): AppError {
  if (error instanceof AppError) return error;
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const first = fastifyError.validation[0];
    const field = first?.instancePath.replace(/^\//, '').replaceAll('/', '.');
    if (first?.keyword === 'required') {
      const missing = String((first.params as { missingProperty?: string }).missingProperty);
      return new AppError('validation_error', `Missing required field: ${missing}`, {
        param: missing,
      });
    }
    if (!field) {
      return new AppError(
        'validation_error',
        `Request ${fastifyError.validationContext ?? 'body'} ${first?.message ?? 'is invalid'}`,
      );
    }
    return new AppError(
      'validation_error',
      `Invalid field ${field}: ${first?.message ?? 'invalid'}`,
      {
        param: field,
      },
    );
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    // Fastify's own client errors (bad JSON, wrong content type, body too large).
    return new AppError(status === 404 ? 'not_found' : 'validation_error', fastifyError.message, {
      details: { statusCode: status },
    });
  }
  return new AppError('internal_error', 'Internal server error', { cause: error });
}

export function rateLimitHeaders(reply: FastifyReply, rate: RateDecision): void {
  reply.header('RateLimit-Limit', rate.limit);
  reply.header('RateLimit-Remaining', rate.remaining);
  reply.header('RateLimit-Reset', Math.ceil(rate.resetMs / 1000));
}

/** Status, headers and logging common to both surfaces. */
export function prepareErrorReply(
  error: AppError,
  request: FastifyRequest,
  reply: FastifyReply,
): number {
  const statusCode = statusOf(error);
  const retryAfterMs = error.details.retryAfterMs;
  if (typeof retryAfterMs === 'number') {
    reply.header('Retry-After', Math.max(1, Math.ceil(retryAfterMs / 1000)));
  }
  const rate = error.details.rate as RateDecision | undefined;
  if (rate) rateLimitHeaders(reply, rate);
  if (statusCode >= 500) {
    request.log.error({ err: error.cause ?? error, code: error.code }, error.message);
  } else {
    request.log.info({ code: error.code }, error.message);
  }
  return statusCode;
}
