import { randomBytes } from 'node:crypto';
import { AppError } from './errors.ts';
import { forwarding } from './forwarding.ts';
import { newId } from './ids.ts';
import type {
  Batch,
  Clock,
  Delivery,
  Job,
  NewLedgerEntry,
  Page,
  Store,
  WebhookEndpoint,
  WebhookEventType,
} from './ports.ts';
import type { WebhookUrlPolicy } from './webhook-safety.ts';

export const WEBHOOK_EVENT_TYPES: readonly WebhookEventType[] = [
  'video.completed',
  'video.failed',
  'video.progress',
  'batch.completed',
  'credits.low',
];

/** Enough for a reseller's few integrations; also bounds the outbox rows one event adds to a transaction. */
export const MAX_ENDPOINTS_PER_TENANT = 10;

export interface WebhookOptions {
  /** How long the secret before a rotation keeps signing alongside the new one. */
  rotationOverlapMs: number;
  /** `credits.low` fires when a charge takes the balance from >= this to below it. */
  lowCreditThreshold: number;
}

/** The events a generate request's `webhook_url` hears: its job's end. */
const JOB_ENDPOINT_EVENTS: readonly WebhookEventType[] = ['video.completed', 'video.failed'];

/** The id of the one-off endpoint a job's `webhook_url` becomes. */
export function jobEndpointId(jobId: string): string {
  return `whjob_${jobId}`;
}

/** A Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64')}`;
}

/** The Standard Webhooks payload shape: `{ type, timestamp, data }`. */
function payloadOf(type: WebhookEventType, data: object, now: number): string {
  return JSON.stringify({ type, timestamp: new Date(now).toISOString(), data });
}

/** What a video event says about its job (the status endpoint's facts, no URLs: they expire). */
export function videoEventData(job: Job): object {
  return {
    id: job.jobId,
    object: 'video',
    status: job.state,
    progress: Math.round(job.progress),
    model: job.model,
    seconds: String(job.seconds),
    size: job.size,
    error: job.error,
    credits_refunded: job.state === 'failed' ? job.cost : 0,
  };
}

/**
 * Tenant webhook endpoints and the events they receive. Events become outbox rows
 * (`Delivery`, one per subscribed endpoint) that the caller commits in the same store
 * write as the change they report; `src/worker/deliveries.ts` sends them.
 */
export class WebhookService {
  constructor(
    private readonly deps: {
      store: Store;
      clock: Clock;
      policy: WebhookUrlPolicy;
      options: WebhookOptions;
      logger: { warn(obj: object, msg: string): void };
    },
  ) {}

  /** For work whose failure must not fail the caller (the charge already happened). */
  warn(error: unknown, what: string): void {
    this.deps.logger.warn({ err: error }, what);
  }

  /** Saves an endpoint after vetting its URL; the secret is returned this once. */
  async createEndpoint(input: {
    tenantId: string;
    url: string | undefined;
    events?: string[] | undefined;
  }): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const { store, clock, policy } = this.deps;
    if (typeof input.url !== 'string') {
      throw new AppError('validation_error', 'Missing required field: url', { param: 'url' });
    }
    const url = await policy.check(input.url);
    const events = validateEvents(input.events);
    const existing = await store.listEndpoints(input.tenantId);
    if (existing.length >= MAX_ENDPOINTS_PER_TENANT) {
      throw new AppError(
        'validation_error',
        `A tenant has at most ${MAX_ENDPOINTS_PER_TENANT} webhook endpoints`,
      );
    }
    const now = clock.now();
    const secret = newWebhookSecret();
    const endpoint: WebhookEndpoint = {
      endpointId: newId('wh'),
      tenantId: input.tenantId,
      url: url.href,
      events,
      secret,
      previousSecret: null,
      previousSecretExpiresAt: null,
      status: 'enabled',
      disabledReason: null,
      jobId: null,
      createdAt: now,
      updatedAt: now,
    };
    await store.createEndpoint(endpoint);
    return { endpoint, secret };
  }

  /**
   * Vets a generate request's `webhook_url` (same rules as an endpoint's URL) and saves
   * it as the job's one-off endpoint, BEFORE the job exists, so no event of the job can
   * miss it. It has no secret of its own: deliveries are signed with the secrets of the
   * tenant's registered endpoints, so one is required. Errors are `validation_error`.
   */
  async createJobEndpoint(input: {
    tenantId: string;
    jobId: string;
    url: string;
  }): Promise<WebhookEndpoint> {
    const { store, clock, policy } = this.deps;
    let url: URL;
    try {
      url = await policy.check(input.url);
    } catch (error) {
      if (!(error instanceof AppError)) throw error;
      throw new AppError(error.code, error.message, {
        param: 'webhook_url',
        details: { ...error.details },
      });
    }
    if ((await store.listEndpoints(input.tenantId)).length === 0) {
      throw new AppError(
        'validation_error',
        'webhook_url needs a signing secret: register a webhook endpoint first (POST /v1/webhooks)',
        { param: 'webhook_url', details: { code: 'webhook_secret_missing' } },
      );
    }
    const now = clock.now();
    const endpoint: WebhookEndpoint = {
      endpointId: jobEndpointId(input.jobId),
      tenantId: input.tenantId,
      url: url.href,
      events: [...JOB_ENDPOINT_EVENTS],
      secret: '',
      previousSecret: null,
      previousSecretExpiresAt: null,
      status: 'enabled',
      disabledReason: null,
      jobId: input.jobId,
      createdAt: now,
      updatedAt: now,
    };
    await store.createEndpoint(endpoint);
    return endpoint;
  }

  listEndpoints(tenantId: string): Promise<WebhookEndpoint[]> {
    return this.deps.store.listEndpoints(tenantId);
  }

  /** The tenant's endpoint; `not_found` for another tenant's too (never leak existence). */
  async getEndpoint(tenantId: string, endpointId: string): Promise<WebhookEndpoint> {
    const endpoint = await this.deps.store.getEndpoint(endpointId);
    if (!endpoint || endpoint.tenantId !== tenantId) {
      throw new AppError('not_found', `Webhook endpoint not found: ${endpointId}`);
    }
    return endpoint;
  }

  async deleteEndpoint(tenantId: string, endpointId: string): Promise<WebhookEndpoint> {
    const endpoint = await this.getEndpoint(tenantId, endpointId);
    await this.deps.store.deleteEndpoint(endpointId);
    return endpoint;
  }

  /**
   * A new secret, returned this once. The old one keeps signing (both signatures are
   * sent) for the overlap window, so receivers can switch without dropping events.
   * Rotating re-enables an endpoint the gateway disabled.
   */
  async rotateSecret(
    tenantId: string,
    endpointId: string,
    options: { overlapMs?: number } = {},
  ): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
    const current = await this.getEndpoint(tenantId, endpointId);
    if (current.jobId !== null) {
      throw new AppError(
        'validation_error',
        "A video's webhook_url has no secret of its own: it is signed with your endpoints' secrets",
      );
    }
    const now = this.deps.clock.now();
    const overlapMs = options.overlapMs ?? this.deps.options.rotationOverlapMs;
    if (!Number.isSafeInteger(overlapMs) || overlapMs < 0 || overlapMs > 7 * 24 * 3600_000) {
      throw new AppError('validation_error', 'overlap must be 0 to 7 days', { param: 'overlap' });
    }
    const secret = newWebhookSecret();
    const endpoint = await this.deps.store.updateEndpoint(endpointId, {
      secret,
      previousSecret: overlapMs > 0 ? current.secret : null,
      previousSecretExpiresAt: overlapMs > 0 ? now + overlapMs : null,
      status: 'enabled',
      disabledReason: null,
      updatedAt: now,
    });
    return { endpoint, secret };
  }

  async listDeliveries(
    tenantId: string,
    endpointId: string,
    options: { after?: string; limit: number },
  ): Promise<Page<Delivery>> {
    await this.getEndpoint(tenantId, endpointId);
    return this.deps.store.listDeliveries({ endpointId, ...options });
  }

  /**
   * Sends an earlier event to the endpoint again, as a new delivery with the SAME
   * `webhook-id` (the event id): replays are the same message, receivers may dedupe.
   */
  async replay(
    tenantId: string,
    endpointId: string,
    target: { eventId?: string | undefined; deliveryId?: string | undefined },
  ): Promise<Delivery> {
    const { store, clock } = this.deps;
    await this.getEndpoint(tenantId, endpointId);
    const deliveryId =
      target.deliveryId ?? (target.eventId ? `${target.eventId}@${endpointId}` : undefined);
    if (!deliveryId) {
      throw new AppError('validation_error', 'Give event_id or delivery_id', {
        param: 'event_id',
      });
    }
    const original = await store.getDelivery(deliveryId);
    if (!original || original.endpointId !== endpointId || original.tenantId !== tenantId) {
      throw new AppError('not_found', `No delivery ${deliveryId} for this endpoint`);
    }
    const now = clock.now();
    const replay: Delivery = {
      ...original,
      deliveryId: `${original.eventId}@${endpointId}#replay-${now}`,
      status: 'pending',
      attempts: [],
      nextAttemptAt: now,
      createdAt: now,
      updatedAt: now,
      version: 1,
    };
    await store.enqueueDeliveries([replay]);
    return replay;
  }

  /**
   * The outbox rows of one event: one per enabled endpoint of the tenant subscribed to
   * it, plus the one-off endpoint of `jobId` (its `webhook_url`) when it has one.
   */
  async deliveriesFor(event: {
    tenantId: string;
    type: WebhookEventType;
    eventId: string;
    data: object;
    jobId?: string;
  }): Promise<Delivery[]> {
    const { store } = this.deps;
    const endpoints = await store.listEndpoints(event.tenantId);
    if (event.jobId !== undefined) {
      const oneOff = await store.getEndpoint(jobEndpointId(event.jobId));
      if (oneOff?.tenantId === event.tenantId) endpoints.push(oneOff);
    }
    const now = this.deps.clock.now();
    const payload = payloadOf(event.type, event.data, now);
    return endpoints
      .filter((endpoint) => endpoint.status === 'enabled' && endpoint.events.includes(event.type))
      .map((endpoint) => ({
        deliveryId: `${event.eventId}@${endpoint.endpointId}`,
        eventId: event.eventId,
        eventType: event.type,
        tenantId: event.tenantId,
        endpointId: endpoint.endpointId,
        payload,
        status: 'pending',
        attempts: [],
        nextAttemptAt: now,
        createdAt: now,
        updatedAt: now,
        version: 1,
      }));
  }

  /**
   * `credits.low` when a ledger entry took the balance from at or above the threshold
   * to below it: once per crossing (event id = the entry id), re-armed by any entry
   * that lifts it back. Not in the charge's transaction: a crash between the two loses
   * the alert, never money (documented trade-off; the alert is advisory).
   */
  async balanceMoved(
    entry: { tenantId: string; entryId: string; amount: number },
    balance: number,
  ) {
    const threshold = this.deps.options.lowCreditThreshold;
    const before = balance - entry.amount;
    if (!(before >= threshold && balance < threshold)) return;
    const deliveries = await this.deliveriesFor({
      tenantId: entry.tenantId,
      type: 'credits.low',
      eventId: `${entry.entryId}.credits.low`,
      data: { balance, threshold },
    });
    if (deliveries.length > 0) await this.deps.store.enqueueDeliveries(deliveries);
  }

  batchCompletedData(batch: Batch, jobs: Job[]): object {
    return {
      id: batch.batchId,
      object: 'video.batch',
      status: 'completed',
      completed: jobs.filter((job) => job.state === 'completed').length,
      failed: jobs.filter((job) => job.state === 'failed').length,
      videos: jobs.map((job) => ({ id: job.jobId, status: job.state })),
    };
  }
}

function validateEvents(events: string[] | undefined): WebhookEventType[] {
  if (events === undefined) return [...WEBHOOK_EVENT_TYPES];
  if (!Array.isArray(events) || events.length === 0) {
    throw new AppError('validation_error', 'events must be a non-empty list', { param: 'events' });
  }
  const unknown = events.filter((type) => !WEBHOOK_EVENT_TYPES.includes(type as WebhookEventType));
  if (unknown.length > 0) {
    throw new AppError(
      'validation_error',
      `Unknown event types: ${unknown.join(', ')}; allowed: ${WEBHOOK_EVENT_TYPES.join(', ')}`,
      { param: 'events' },
    );
  }
  return [...new Set(events)] as WebhookEventType[];
}

/**
 * The store the pipeline and the video service write through: every job write that
 * ends a job (or moves its progress) carries that event's outbox rows in the SAME
 * atomic write (`updateJob`'s `deliveries`), so a crash can never leave an ended job
 * without its event, or an event for a change that did not happen. Event ids are
 * `<jobId>.<type>`, stable across retries of the step. Charges are watched for the
 * low-credit alert. Everything else passes straight through to `store`.
 */
export function withWebhookEvents(store: Store, webhooks: WebhookService): Store {
  const updateJob: Store['updateJob'] = async (jobId, patch, options) => {
    const ending = patch.state === 'completed' || patch.state === 'failed';
    if (!ending && patch.progress === undefined) return store.updateJob(jobId, patch, options);
    const current = await store.getJob(jobId);
    const stale = !current || current.version !== options.expectVersion;
    if (stale || current.state === 'completed' || current.state === 'failed') {
      return store.updateJob(jobId, patch, options);
    }
    const next: Job = { ...current, ...patch };
    let event: { type: WebhookEventType; eventId: string; jobId?: string } | null = null;
    if (ending) {
      const type = next.state === 'completed' ? 'video.completed' : 'video.failed';
      event = { type, eventId: `${jobId}.${type}`, jobId };
    } else if (Math.round(next.progress) > Math.round(current.progress)) {
      const step = Math.round(next.progress);
      event = { type: 'video.progress', eventId: `${jobId}.video.progress.${step}` };
    }
    if (!event) return store.updateJob(jobId, patch, options);
    const deliveries = await webhooks.deliveriesFor({
      tenantId: current.tenantId,
      ...event,
      data: videoEventData(next),
    });
    if (deliveries.length === 0) return store.updateJob(jobId, patch, options);
    return store.updateJob(jobId, patch, {
      ...options,
      deliveries: [...(options.deliveries ?? []), ...deliveries],
    });
  };

  const watch = (entry: NewLedgerEntry, balance: number) =>
    webhooks
      .balanceMoved(entry, balance)
      .catch((error: unknown) => webhooks.warn(error, 'credits.low not enqueued'));

  const overrides: Partial<Store> = {
    updateJob,
    async createJob(job, charge) {
      const result = await store.createJob(job, charge);
      await watch(charge, result.balance);
      return result;
    },
    async createBatch(batch, options) {
      const result = await store.createBatch(batch, options);
      await watch(options.charge, result.balance);
      return result;
    },
    async post(entry) {
      const result = await store.post(entry);
      if (result.applied) await watch(entry, result.balance);
      return result;
    },
  };
  return forwarding(store, overrides);
}
