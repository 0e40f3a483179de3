import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../core/errors.ts';
import type { Services } from '../services.ts';
import { callerOf } from './auth.ts';
import { type Presented, toAppError } from './errors.ts';

const MAX_KEY_LENGTH = 255;

/**
 * Runs a POST under its `Idempotency-Key`: the first answer of a request that did
 * something (a job created, even if the upstream then failed and it was refunded) is
 * stored and replayed to retries; the same key with a different body is a 409. A
 * request rejected before doing anything (bad input, no credits) releases the key,
 * so the client can fix the cause and retry with it.
 */
export async function idempotent(
  services: Services,
  request: FastifyRequest,
  reply: FastifyReply,
  handler: {
    run: () => Promise<Presented>;
    presentError: (error: AppError) => Presented;
    /** What else makes the request what it is, beyond its body (e.g. an uploaded file's digest). */
    fingerprint?: string;
  },
): Promise<FastifyReply> {
  const header = request.headers['idempotency-key'];
  const key = Array.isArray(header) ? header[0] : header;
  if (key === undefined) return send(reply, await handler.run());
  if (key.length === 0 || key.length > MAX_KEY_LENGTH) {
    throw new AppError(
      'validation_error',
      `Idempotency-Key must be 1 to ${MAX_KEY_LENGTH} characters`,
    );
  }
  const ref = { scope: callerOf(request).tenant.tenantId, key };
  const begin = await services.store.beginIdempotent(ref, {
    requestHash: requestHash(request, handler.fingerprint),
    now: services.clock.now(),
    ttlMs: services.config.idempotencyTtlSeconds * 1000,
  });
  if (begin.outcome === 'replay') {
    reply.header('Idempotent-Replayed', 'true');
    return send(reply, begin.response);
  }
  if (begin.outcome === 'conflict') {
    throw new AppError(
      'idempotency_conflict',
      'Idempotency-Key was already used with a different request',
    );
  }
  if (begin.outcome === 'in_progress') {
    throw new AppError(
      'idempotency_in_progress',
      'A request with this Idempotency-Key is still in progress',
    );
  }
  let presented: Presented;
  try {
    presented = await handler.run();
  } catch (error) {
    const appError = toAppError(error);
    if (appError.code !== 'upstream_error') {
      await services.store.abandonIdempotent(ref);
      throw error;
    }
    request.log.warn({ code: appError.code }, appError.message);
    presented = handler.presentError(appError);
  }
  await services.store.completeIdempotent(ref, presented);
  return send(reply, presented);
}

function send(reply: FastifyReply, presented: Presented): FastifyReply {
  return reply.code(presented.statusCode).send(presented.body);
}

function requestHash(request: FastifyRequest, fingerprint = ''): string {
  return createHash('sha256')
    .update(`${request.method} ${request.routeOptions.url}\n${canonicalJson(request.body)}`)
    .update(fingerprint ? `\n${fingerprint}` : '')
    .digest('hex');
}

/** JSON with sorted keys, so `{a,b}` and `{b,a}` are the same request. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
