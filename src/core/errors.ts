/**
 * Domain errors. Codes are transport-neutral: the HTTP layer owns the one
 * ErrorCode -> status table (src/http/errors.ts).
 */
export type ErrorCode =
  | 'missing_api_key'
  | 'invalid_api_key'
  | 'tenant_suspended'
  | 'insufficient_credits'
  | 'validation_error'
  | 'not_found'
  | 'idempotency_conflict'
  | 'idempotency_in_progress'
  | 'rate_limited'
  | 'quota_exceeded'
  | 'upstream_error'
  | 'version_conflict'
  | 'internal_error';

export class AppError extends Error {
  readonly code: ErrorCode;
  /** Name of the offending request field, when there is one. */
  readonly param: string | undefined;
  /** Extra facts for the presenter (e.g. retryAfterMs for limits); never secrets. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: ErrorCode,
    message: string,
    options: { param?: string; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.param = options.param;
    this.details = options.details ?? {};
  }
}

export function isAppError(error: unknown, code?: ErrorCode): error is AppError {
  return error instanceof AppError && (code === undefined || error.code === code);
}

/**
 * An upstream provider refused or failed a call. `certain` tells whether the
 * upstream surely did NOT accept the work (connection refused, 4xx/5xx answer):
 * only then may a submit be retried elsewhere or refunded without doubt.
 */
export class ProviderError extends Error {
  readonly provider: string;
  readonly httpStatus: number | undefined;
  readonly certain: boolean;
  readonly retryable: boolean;

  constructor(
    provider: string,
    message: string,
    options: { httpStatus?: number; certain: boolean; retryable: boolean; cause?: unknown },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProviderError';
    this.provider = provider;
    this.httpStatus = options.httpStatus;
    this.certain = options.certain;
    this.retryable = options.retryable;
  }
}
