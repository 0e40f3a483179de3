import http from 'node:http';
import https from 'node:https';
import { Webhook } from 'standardwebhooks';
import { isAppError } from '../core/errors.ts';
import type { Clock, Delivery, DeliveryAttempt, Store, WebhookEndpoint } from '../core/ports.ts';
import type { WebhookUrlPolicy } from '../core/webhook-safety.ts';
import type { Services } from '../services.ts';

/**
 * Pause before retry n (after failed attempt n), about a day in all: after the last
 * one fails the delivery is given up (the log and replay remain).
 */
export const RETRY_SCHEDULE_MS: readonly number[] = [
  5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000, 43_200_000,
];
/** Longest `Retry-After` honoured; a receiver cannot park a delivery for longer. */
const MAX_RETRY_AFTER_MS = 24 * 3_600_000;
const BODY_PREFIX_BYTES = 256;

export interface DispatcherOptions {
  /** Per-attempt limit from connect to the whole response. */
  timeoutMs: number;
  /** How long a claimed delivery stays invisible to other workers. */
  leaseMs: number;
  /** 0..1, for the jitter (tests pin it; 0.5 means no jitter). */
  random?: () => number;
}

interface Logger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/**
 * Sends outbox deliveries: Standard Webhooks signatures (every valid secret of the
 * endpoint signs: both during a rotation overlap; the tenant's secrets for a job's
 * one-off `webhook_url` endpoint), no redirects followed (a 3xx is a
 * failed attempt), vetted addresses only (checked again at connect time), bounded
 * time and bounded response body. Exponential backoff with jitter, honouring
 * `Retry-After`; a 410 disables the endpoint.
 */
export class WebhookDispatcher {
  readonly #random: () => number;

  constructor(
    private readonly deps: {
      store: Store;
      clock: Clock;
      logger: Logger;
      policy: WebhookUrlPolicy;
      options: DispatcherOptions;
    },
  ) {
    this.#random = deps.options.random ?? Math.random;
  }

  /** Sends every due delivery, `concurrency` at a time; returns how many it looked at. */
  async deliverDue(options: { now: number; limit: number; concurrency: number }): Promise<number> {
    const due = await this.deps.store.listDueDeliveries({ now: options.now, limit: options.limit });
    let next = 0;
    const lane = async () => {
      while (next < due.length) {
        const delivery = due[next++];
        if (!delivery) break;
        try {
          await this.deliver(delivery);
        } catch (error) {
          this.deps.logger.error(
            { deliveryId: delivery.deliveryId, err: error },
            'delivery failed',
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(options.concurrency, due.length) }, lane));
    return due.length;
  }

  /** One attempt at `delivery` if no other worker holds it; returns its new state. */
  async deliver(delivery: Delivery): Promise<Delivery | null> {
    const { store, clock, options } = this.deps;
    let claimed: Delivery;
    try {
      // The lease is the due time moved ahead: a crashed sender's delivery comes due again.
      claimed = await store.updateDelivery(
        delivery.deliveryId,
        { nextAttemptAt: clock.now() + options.leaseMs },
        { expectVersion: delivery.version },
      );
    } catch (error) {
      if (isAppError(error, 'version_conflict') || isAppError(error, 'not_found')) return null;
      throw error;
    }
    const endpoint = await store.getEndpoint(claimed.endpointId);
    if (endpoint?.status !== 'enabled') {
      return this.finish(
        claimed,
        {
          at: clock.now(),
          latencyMs: 0,
          statusCode: null,
          responseBody: '',
          error: endpoint ? 'endpoint disabled' : 'endpoint deleted',
        },
        'failed',
      );
    }
    const attempt = await this.send(endpoint, claimed);
    if (attempt.statusCode !== null && attempt.statusCode >= 200 && attempt.statusCode < 300) {
      return this.finish(claimed, attempt, 'delivered');
    }
    if (attempt.statusCode === 410) {
      await store.updateEndpoint(endpoint.endpointId, {
        status: 'disabled',
        disabledReason: 'receiver answered 410 Gone',
        updatedAt: clock.now(),
      });
      this.deps.logger.warn({ endpointId: endpoint.endpointId }, 'webhook endpoint disabled (410)');
      return this.finish(claimed, attempt, 'failed');
    }
    const failures = claimed.attempts.length + 1;
    if (failures > RETRY_SCHEDULE_MS.length) return this.finish(claimed, attempt, 'failed');
    const base = RETRY_SCHEDULE_MS[failures - 1] as number;
    const jittered = Math.round(base * (0.8 + 0.4 * this.#random()));
    const delay = Math.max(jittered, Math.min(attempt.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
    return this.finish(claimed, attempt, 'pending', clock.now() + delay);
  }

  private finish(
    delivery: Delivery,
    attempt: DeliveryAttempt & { retryAfterMs?: number | null },
    status: Delivery['status'],
    nextAttemptAt: number | null = null,
  ): Promise<Delivery> {
    const { retryAfterMs: _ignored, ...logged } = attempt;
    return this.deps.store.updateDelivery(
      delivery.deliveryId,
      {
        status,
        attempts: [...delivery.attempts, logged],
        nextAttemptAt: status === 'pending' ? nextAttemptAt : null,
        updatedAt: this.deps.clock.now(),
      },
      { expectVersion: delivery.version },
    );
  }

  /**
   * Every secret that signs a delivery to `endpoint` now: its own (and, during a
   * rotation overlap, the previous one), or for a job's one-off endpoint (`webhook_url`)
   * those of all the tenant's registered endpoints, any of which the receiver may hold.
   */
  async signingSecrets(endpoint: WebhookEndpoint): Promise<string[]> {
    const owners =
      endpoint.jobId === null ? [endpoint] : await this.deps.store.listEndpoints(endpoint.tenantId);
    const now = this.deps.clock.now();
    const secrets = owners.flatMap((owner) => {
      const overlap = owner.previousSecretExpiresAt;
      const previous =
        owner.previousSecret && overlap !== null && overlap > now ? [owner.previousSecret] : [];
      return [owner.secret, ...previous];
    });
    return [...new Set(secrets)];
  }

  /** The headers of Standard Webhooks, signed by each of `secrets`. */
  signatureHeaders(secrets: string[], delivery: Delivery, at: Date): Record<string, string> {
    const signatures = secrets.map((secret) =>
      new Webhook(secret).sign(delivery.eventId, at, delivery.payload),
    );
    return {
      'webhook-id': delivery.eventId,
      'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
      'webhook-signature': signatures.join(' '),
    };
  }

  private async send(
    endpoint: WebhookEndpoint,
    delivery: Delivery,
  ): Promise<DeliveryAttempt & { retryAfterMs: number | null }> {
    const { clock, policy, options } = this.deps;
    const at = clock.now();
    const secrets = await this.signingSecrets(endpoint);
    if (secrets.length === 0) {
      // The tenant removed every registered endpoint: nothing to sign with. Retried, so
      // registering one again in time still delivers.
      return {
        at,
        latencyMs: 0,
        statusCode: null,
        responseBody: '',
        error: 'no signing secret: the tenant has no registered webhook endpoint',
        retryAfterMs: null,
      };
    }
    const started = performance.now();
    // The signed timestamp is wall-clock time: receivers compare it with their own clock.
    const headers = this.signatureHeaders(secrets, delivery, new Date());
    const result = await postOnce(endpoint.url, delivery.payload, {
      headers,
      timeoutMs: options.timeoutMs,
      policy,
    });
    return {
      at,
      latencyMs: Math.round(performance.now() - started),
      statusCode: result.statusCode,
      responseBody: result.body,
      error: result.error,
      retryAfterMs: result.retryAfter === null ? null : parseRetryAfter(result.retryAfter, at),
    };
  }
}

/** `Retry-After` as delay-seconds or an HTTP date; null when unparseable. */
export function parseRetryAfter(value: string, now: number): number | null {
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}

/** One POST, no redirects, vetted addresses, whole exchange under `timeoutMs`. */
function postOnce(
  rawUrl: string,
  body: string,
  options: { headers: Record<string, string>; timeoutMs: number; policy: WebhookUrlPolicy },
): Promise<{
  statusCode: number | null;
  body: string;
  error: string | null;
  retryAfter: string | null;
}> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = options.policy.parse(rawUrl);
    } catch (error) {
      resolve({ statusCode: null, body: '', error: (error as Error).message, retryAfter: null });
      return;
    }
    const client = url.protocol === 'https:' ? https : http;
    let settled = false;
    const settle = (value: Parameters<typeof resolve>[0]) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(value);
    };
    const request = client.request(
      url,
      {
        method: 'POST',
        headers: {
          ...options.headers,
          'content-type': 'application/json',
          'content-length': String(Buffer.byteLength(body)),
          'user-agent': 'ReelPostly-Webhooks/1',
        },
        lookup: options.policy.lookup as never,
        agent: false,
      },
      (response) => {
        const chunks: Buffer[] = [];
        let kept = 0;
        const done = () =>
          settle({
            statusCode: response.statusCode ?? null,
            body: Buffer.concat(chunks).subarray(0, BODY_PREFIX_BYTES).toString('utf8'),
            error: null,
            retryAfter: headerOf(response.headers['retry-after']),
          });
        response.on('data', (chunk: Buffer) => {
          if (kept >= BODY_PREFIX_BYTES) return;
          chunks.push(chunk);
          kept += chunk.length;
          // Enough kept: the rest of a receiver's page is not ours to read.
          if (kept >= BODY_PREFIX_BYTES) {
            done();
            response.destroy();
          }
        });
        response.on('end', done);
        response.on('error', done);
      },
    );
    const timer = setTimeout(() => {
      request.destroy();
      settle({
        statusCode: null,
        body: '',
        error: `timed out after ${options.timeoutMs} ms`,
        retryAfter: null,
      });
    }, options.timeoutMs);
    request.on('error', (error) =>
      settle({ statusCode: null, body: '', error: error.message, retryAfter: null }),
    );
    request.end(body);
  });
}

function headerOf(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  return Array.isArray(value) ? (value[0] ?? null) : value;
}

/**
 * The outbox part of a worker tick: completes due batches (enqueueing `batch.completed`),
 * then sends due webhook deliveries. Returns how many rows it looked at.
 */
export async function runOutbox(
  services: Pick<Services, 'batches' | 'dispatcher'>,
  options: { now: number; concurrency: number; batchSize: number },
): Promise<number> {
  const batches = await services.batches.checkDue({ now: options.now, limit: options.batchSize });
  const deliveries = await services.dispatcher.deliverDue({
    now: options.now,
    limit: options.batchSize,
    concurrency: options.concurrency,
  });
  return batches + deliveries;
}
