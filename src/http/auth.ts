import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { Caller } from '../core/access.ts';
import type { Services } from '../services.ts';
import { rateLimitHeaders } from './errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
  }
}

/** `x-api-key: KEY` (the original) or `Authorization: Bearer KEY` (OpenAI clients). */
export function apiKeyFrom(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key'];
  const direct = Array.isArray(header) ? header[0] : header;
  if (direct) return direct.trim();
  const auth = request.headers.authorization;
  const match = auth ? /^Bearer\s+(.+)$/i.exec(auth) : null;
  return match?.[1]?.trim();
}

/** onRequest hook for authenticated routes: key, tenant, rate, quota. */
export function authenticate(services: Services) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const caller = await services.access.authenticate(apiKeyFrom(request));
    request.caller = caller;
    rateLimitHeaders(reply, caller.rate);
    // The request's own child logger (Fastify makes one per request): cheaper than a child of it.
    (request.log as Logger).setBindings({
      tenantId: caller.tenant.tenantId,
      keyId: caller.key.keyId,
    });
  };
}

/** The authenticated caller; routes behind `authenticate` always have one. */
export function callerOf(request: FastifyRequest): Caller {
  if (!request.caller) throw new Error('route is missing the authenticate hook');
  return request.caller;
}
