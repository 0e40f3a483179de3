import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { AppError } from '../../core/errors.ts';
import { gcra, quotaPeriod } from '../../core/limits.ts';
import {
  type ApiKey,
  type AuditEntry,
  type Batch,
  type BatchPatch,
  type Delivery,
  type DeliveryPatch,
  type EndpointPatch,
  type IdempotencyBegin,
  type IdempotencyRef,
  type Job,
  type JobPatch,
  type LedgerEntry,
  type LimitDecision,
  MAX_BATCH_JOBS,
  type NewLedgerEntry,
  type Page,
  type PostResult,
  type QuotaParams,
  type RateLimitParams,
  type Store,
  type StoredResponse,
  type Tenant,
  type UnfinishedJobs,
  type WebhookEndpoint,
} from '../../core/ports.ts';
import { applyMigrations } from './migrations.ts';
import { RowCache } from './row-cache.ts';
import {
  batchRow,
  type DeliveryRow,
  deliveryRow,
  endpointRow,
  prepareWebhookStatements,
  toBatch,
  toDelivery,
  toEndpoint,
} from './webhook-sql.ts';

const TENANT_COLUMNS =
  'tenant_id AS tenantId, email, plan_id AS planId, status, created_at AS createdAt';

const KEY_COLUMNS = `key_id AS keyId, tenant_id AS tenantId, name, prefix, hash,
  created_at AS createdAt, last_used_at AS lastUsedAt, expires_at AS expiresAt,
  revoked_at AS revokedAt`;

const ENTRY_COLUMNS = `entry_id AS entryId, tenant_id AS tenantId, kind, amount, reason,
  job_id AS jobId, created_at AS createdAt, balance_after AS balanceAfter`;

const JOB_COLUMNS = `job_id AS jobId, tenant_id AS tenantId, key_id AS keyId, model, provider,
  upstream_model AS upstreamModel, provider_job_id AS providerJobId, prompt, seconds, size,
  state, progress, provider_status AS providerStatus, error, cost, asset,
  remixed_from_job_id AS remixedFromJobId, created_at AS createdAt, updated_at AS updatedAt,
  completed_at AS completedAt, next_check_at AS nextCheckAt, check_failures AS checkFailures,
  lease_owner AS leaseOwner, lease_until AS leaseUntil, version`;

/** Rows deleted per purge transaction. */
const PURGE_BATCH = 500;

interface PendingLimits {
  bucket: string;
  limits: { rate: RateLimitParams; quota: QuotaParams };
  now: number;
  resolve: (decision: LimitDecision) => void;
  reject: (error: unknown) => void;
}

/** The fields `updateJob` may change; anything else in a patch object is ignored. */
const PATCHABLE: readonly (keyof JobPatch)[] = [
  'provider',
  'upstreamModel',
  'providerJobId',
  'state',
  'progress',
  'providerStatus',
  'error',
  'asset',
  'completedAt',
  'nextCheckAt',
  'checkFailures',
  'leaseOwner',
  'leaseUntil',
  'updatedAt',
];

type JobRow = Omit<Job, 'error' | 'asset'> & { error: string | null; asset: string | null };

interface IdempotencyRow {
  requestHash: string;
  state: 'in_progress' | 'completed';
  statusCode: number | null;
  body: string | null;
  expiresAt: number;
}

type Statement<P, R = unknown> = Database.Statement<[P], R>;
type Params = Record<string, unknown>;

function toJob(row: JobRow): Job {
  return {
    ...row,
    error: row.error === null ? null : JSON.parse(row.error),
    asset: row.asset === null ? null : JSON.parse(row.asset),
  };
}

function jobParams(job: Job): Params {
  return {
    ...job,
    error: job.error === null ? null : JSON.stringify(job.error),
    asset: job.asset === null ? null : JSON.stringify(job.asset),
  };
}

function isSqliteError(error: unknown, code: string): boolean {
  return error instanceof Database.SqliteError && error.code === code;
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new AppError('validation_error', 'limit must be a positive integer', { param: 'limit' });
  }
}

/** Fetching limit+1 rows tells whether another page exists without a count query. */
function toPage<T>(rows: T[], limit: number, cursorOf: (item: T) => string): Page<T> {
  if (rows.length <= limit) return { items: rows, next: null };
  const items = rows.slice(0, limit);
  return { items, next: cursorOf(items[items.length - 1] as T) };
}

function invalidCursor(): AppError {
  return new AppError('validation_error', 'Invalid cursor', { param: 'after' });
}

/**
 * The embedded `Store`: one SQLite file shared by the server and the operator CLI.
 * Every read-modify-write runs in a BEGIN IMMEDIATE transaction, so the write lock
 * is held from the first read and concurrent processes queue on `busy_timeout`
 * instead of acting on a stale read. Methods are async only because the port is;
 * the work is synchronous.
 */
export class SqliteStore implements Store {
  readonly #db: Database.Database;
  readonly #sql: ReturnType<typeof prepareStatements>;
  readonly #wh: ReturnType<typeof prepareWebhookStatements>;
  readonly #audit: ReturnType<typeof prepareAuditStatements>;
  readonly #cache: RowCache;
  readonly #immediate: <T>(work: () => T) => T;
  /** consumeLimits calls waiting for this event-loop turn's shared transaction. */
  #pendingLimits: PendingLimits[] = [];

  constructor(options: { path: string }) {
    if (options.path !== ':memory:') mkdirSync(dirname(options.path), { recursive: true });
    const db = new Database(options.path);
    try {
      // busy_timeout first: switching to WAL itself needs a lock another process may hold.
      db.pragma('busy_timeout = 5000');
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
      db.pragma('foreign_keys = ON');
      applyMigrations(db);
      this.#sql = prepareStatements(db);
      this.#wh = prepareWebhookStatements(db);
      this.#audit = prepareAuditStatements(db);
      this.#cache = new RowCache(db);
      const run = db.transaction((work: () => unknown) => work());
      this.#immediate = run.immediate as <T>(work: () => T) => T;
    } catch (error) {
      db.close();
      throw error;
    }
    this.#db = db;
  }

  async migrate(): Promise<void> {
    applyMigrations(this.#db);
  }

  async ping(): Promise<void> {
    this.#sql.ping.get();
  }

  async purgeExpired(now: number): Promise<number> {
    const today = new Date(now);
    // The previous month stays: usage reports may still ask for it.
    const earliestPeriod = quotaPeriod(
      Date.UTC(today.getUTCFullYear(), today.getUTCMonth() - 1, 1),
    );
    const statements = [
      () => this.#sql.purgeIdempotency.run({ now, batch: PURGE_BATCH }).changes,
      () => this.#sql.purgeRateBuckets.run({ now, batch: PURGE_BATCH }).changes,
      () => this.#sql.purgeQuota.run({ period: earliestPeriod, batch: PURGE_BATCH }).changes,
    ];
    let deleted = 0;
    for (const purge of statements) {
      // Small transactions: requests waiting for the write lock never wait long.
      for (let changes = PURGE_BATCH; changes === PURGE_BATCH; ) {
        changes = this.#atomic(purge);
        deleted += changes;
      }
    }
    return deleted;
  }

  async close(): Promise<void> {
    this.#flushLimits();
    this.#db.close();
  }

  // -------------------------------------------------------------- tenants

  async createTenant(tenant: Tenant): Promise<void> {
    try {
      this.#sql.insertTenant.run(tenant);
    } catch (error) {
      if (isSqliteError(error, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
        throw new AppError('validation_error', 'Tenant already exists', { param: 'tenantId' });
      }
      throw error;
    }
  }

  async getTenant(tenantId: string): Promise<Tenant | null> {
    return this.#cache.read('tenant', tenantId, () => this.#sql.getTenant.get({ tenantId }));
  }

  async listTenants(options: { after?: string; limit: number }): Promise<Page<Tenant>> {
    checkLimit(options.limit);
    const limit = options.limit + 1;
    const rows =
      options.after === undefined
        ? this.#sql.listTenants.all({ limit })
        : this.#sql.listTenantsAfter.all({ after: options.after, limit });
    return toPage(rows, options.limit, (tenant) => tenant.tenantId);
  }

  async updateTenant(
    tenantId: string,
    patch: Partial<Pick<Tenant, 'status' | 'planId' | 'email'>>,
  ): Promise<Tenant> {
    return this.#atomic(() => {
      const current = this.#sql.getTenant.get({ tenantId });
      if (!current) throw new AppError('not_found', 'Tenant not found');
      const next: Tenant = {
        ...current,
        email: patch.email ?? current.email,
        planId: patch.planId ?? current.planId,
        status: patch.status ?? current.status,
      };
      this.#sql.updateTenant.run(next);
      return next;
    });
  }

  // -------------------------------------------------------------- api keys

  async createKey(key: ApiKey): Promise<void> {
    try {
      this.#sql.insertKey.run(key);
    } catch (error) {
      if (
        isSqliteError(error, 'SQLITE_CONSTRAINT_PRIMARYKEY') ||
        isSqliteError(error, 'SQLITE_CONSTRAINT_UNIQUE')
      ) {
        throw new AppError('validation_error', 'API key already exists');
      }
      throw translate(error);
    }
  }

  async findKeyByHash(hash: string): Promise<ApiKey | null> {
    return this.#cache.read('key', hash, () => this.#sql.findKeyByHash.get({ hash }));
  }

  async getKey(keyId: string): Promise<ApiKey | null> {
    return this.#sql.getKey.get({ keyId }) ?? null;
  }

  async listKeys(tenantId: string): Promise<ApiKey[]> {
    return this.#sql.listKeys.all({ tenantId });
  }

  async revokeKey(keyId: string, now: number): Promise<ApiKey> {
    return this.#atomic(() => {
      const key = this.#sql.revokeKey.get({ keyId, now });
      if (!key) throw new AppError('not_found', 'API key not found');
      return key;
    });
  }

  async touchKey(keyId: string, now: number): Promise<void> {
    this.#sql.touchKey.run({ keyId, now });
  }

  // -------------------------------------------------------------- credits

  async post(entry: NewLedgerEntry): Promise<PostResult> {
    return this.#atomic(() => this.#postInTransaction(entry));
  }

  async getBalance(tenantId: string): Promise<number> {
    return this.#sql.getBalance.get({ tenantId }) ?? 0;
  }

  async listEntries(
    tenantId: string,
    options: { after?: string; limit: number },
  ): Promise<Page<LedgerEntry>> {
    checkLimit(options.limit);
    let afterSeq = 0;
    if (options.after !== undefined) {
      const seq = this.#sql.entrySeq.get({ tenantId, entryId: options.after });
      if (seq === undefined) throw invalidCursor();
      afterSeq = seq;
    }
    const rows = this.#sql.listEntries.all({ tenantId, afterSeq, limit: options.limit + 1 });
    return toPage(rows, options.limit, (entry) => entry.entryId);
  }

  /** The body of `post`; callers must already be inside an immediate transaction. */
  #postInTransaction(entry: NewLedgerEntry): PostResult {
    if (!Number.isSafeInteger(entry.amount)) {
      throw new AppError('validation_error', 'Credit amounts are integers', { param: 'amount' });
    }
    const existing = this.#sql.getEntry.get({ entryId: entry.entryId });
    if (existing) {
      const balance = this.#sql.getBalance.get({ tenantId: existing.tenantId }) ?? 0;
      return { entry: existing, balance, applied: false };
    }
    const balance = (this.#sql.getBalance.get({ tenantId: entry.tenantId }) ?? 0) + entry.amount;
    if (balance < 0) throw new AppError('insufficient_credits', 'Insufficient credits');
    this.#sql.upsertBalance.run({ tenantId: entry.tenantId, balance });
    const applied: LedgerEntry = { ...entry, balanceAfter: balance };
    this.#sql.insertEntry.run(applied);
    return { entry: applied, balance, applied: true };
  }

  // -------------------------------------------------------------- jobs

  async createJob(job: Job, charge: NewLedgerEntry): Promise<{ job: Job; balance: number }> {
    if (charge.tenantId !== job.tenantId) {
      throw new AppError('validation_error', 'The charge must belong to the job tenant');
    }
    return this.#atomic(() => {
      const { balance, applied } = this.#postInTransaction(charge);
      // A reused entry id would otherwise create the job without charging for it.
      if (!applied) throw new AppError('validation_error', 'Charge entry already posted');
      try {
        this.#sql.insertJob.run(jobParams(job));
      } catch (error) {
        if (isSqliteError(error, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
          throw new AppError('validation_error', 'Job already exists', { param: 'jobId' });
        }
        throw error;
      }
      return { job, balance };
    });
  }

  async getJob(jobId: string): Promise<Job | null> {
    return this.#cache.read('job', jobId, () => {
      const row = this.#sql.getJob.get({ jobId });
      return row && toJob(row);
    });
  }

  async listJobs(options: {
    tenantId?: string;
    after?: string;
    limit: number;
    order: 'asc' | 'desc';
  }): Promise<Page<Job>> {
    checkLimit(options.limit);
    const params: Params = { tenantId: options.tenantId, limit: options.limit + 1 };
    if (options.after !== undefined) {
      const cursor = this.#sql.getJob.get({ jobId: options.after });
      if (!cursor || (options.tenantId !== undefined && cursor.tenantId !== options.tenantId)) {
        throw invalidCursor();
      }
      params.afterCreatedAt = cursor.createdAt;
      params.afterJobId = cursor.jobId;
    }
    const statement =
      this.#sql.listJobs[
        listJobsVariant(options.tenantId !== undefined, options.order, options.after !== undefined)
      ];
    return toPage(statement.all(params).map(toJob), options.limit, (job) => job.jobId);
  }

  async updateJob(
    jobId: string,
    patch: JobPatch,
    options: { expectVersion: number; ledger?: NewLedgerEntry; deliveries?: Delivery[] },
  ): Promise<Job> {
    return this.#atomic(() => {
      const row = this.#sql.getJob.get({ jobId });
      if (!row) throw new AppError('not_found', 'Job not found');
      if (row.version !== options.expectVersion) {
        throw new AppError('version_conflict', 'Job changed since it was read', {
          details: { expected: options.expectVersion, actual: row.version },
        });
      }
      const changes: JobPatch = Object.fromEntries(
        PATCHABLE.filter((field) => patch[field] !== undefined).map((field) => [
          field,
          patch[field],
        ]),
      );
      const next: Job = { ...toJob(row), ...changes, version: row.version + 1 };
      this.#sql.updateJob.run(jobParams(next));
      if (options.ledger) this.#postInTransaction(options.ledger);
      for (const delivery of options.deliveries ?? []) {
        this.#wh.insertDelivery.run(deliveryRow(delivery));
      }
      return next;
    });
  }

  async claimJob(
    jobId: string,
    options: { owner: string; leaseMs: number; now: number },
  ): Promise<Job | null> {
    return this.#atomic(() => {
      const row = this.#sql.claimJob.get({
        jobId,
        owner: options.owner,
        now: options.now,
        leaseUntil: options.now + options.leaseMs,
      });
      return row ? toJob(row) : null;
    });
  }

  async listDueJobs(options: { now: number; limit: number }): Promise<Job[]> {
    checkLimit(options.limit);
    return this.#sql.listDueJobs.all(options).map(toJob);
  }

  async countUnfinishedJobs(): Promise<UnfinishedJobs> {
    const counts: UnfinishedJobs = { queued: 0, in_progress: 0 };
    for (const { state, jobs } of this.#sql.countUnfinishedJobs.all()) counts[state] = jobs;
    return counts;
  }

  async deleteJob(jobId: string, options: { expectVersion: number }): Promise<void> {
    this.#atomic(() => {
      const row = this.#sql.getJob.get({ jobId });
      if (!row) throw new AppError('not_found', 'Job not found');
      if (row.version !== options.expectVersion) {
        throw new AppError('version_conflict', 'Job changed since it was read', {
          details: { expected: options.expectVersion, actual: row.version },
        });
      }
      this.#sql.deleteJob.run({ jobId });
    });
  }

  // -------------------------------------------------------------- limits

  /**
   * Requests arriving in the same event-loop turn share one transaction (group commit):
   * each is still checked and counted in order against what the previous one wrote,
   * under the write lock, so the result is the same as one transaction each, for a
   * fraction of the commits.
   */
  consumeLimits(
    bucket: string,
    limits: { rate: RateLimitParams; quota: QuotaParams },
    now: number,
  ): Promise<LimitDecision> {
    return new Promise((resolve, reject) => {
      const queued = this.#pendingLimits.push({ bucket, limits, now, resolve, reject });
      if (queued === 1) setImmediate(() => this.#flushLimits());
    });
  }

  #flushLimits(): void {
    const batch = this.#pendingLimits;
    if (batch.length === 0) return;
    this.#pendingLimits = [];
    let decisions: LimitDecision[];
    try {
      decisions = this.#atomic(() => this.#decideBatch(batch));
    } catch (error) {
      for (const request of batch) request.reject(error);
      return;
    }
    for (const [index, request] of batch.entries()) {
      request.resolve(decisions[index] as LimitDecision);
    }
  }

  /**
   * The batch's decisions, in order, inside its transaction. A bucket's rows are read
   * once and written once however many of its requests the batch holds (a client
   * polling many jobs with one key): each decision still sees the ones before it.
   */
  #decideBatch(batch: PendingLimits[]): LimitDecision[] {
    const tats = new Map<string, number | null>();
    const counts = new Map<string, { bucket: string; period: string; used: number }>();
    const changedTats = new Set<string>();
    const changedCounts = new Set<{ bucket: string; period: string; used: number }>();
    const decisions = batch.map(({ bucket, limits, now }): LimitDecision => {
      if (!tats.has(bucket)) tats.set(bucket, this.#sql.getTat.get({ bucket }) ?? null);
      const { tat, ...rate } = gcra(tats.get(bucket) ?? null, limits.rate, now);
      if (!rate.allowed) return { rate, quota: null };
      tats.set(bucket, tat);
      changedTats.add(bucket);
      const { period, limit } = limits.quota;
      const id = `${period}\n${bucket}`;
      let count = counts.get(id);
      if (!count) {
        count = { bucket, period, used: this.#sql.getQuota.get({ bucket, period }) ?? 0 };
        counts.set(id, count);
      }
      const { used } = count;
      if (used >= limit) return { rate, quota: { allowed: false, limit, used, remaining: 0 } };
      count.used = used + 1;
      changedCounts.add(count);
      return { rate, quota: { allowed: true, limit, used: used + 1, remaining: limit - used - 1 } };
    });
    for (const bucket of changedTats) {
      this.#sql.upsertTat.run({ bucket, tat: tats.get(bucket) as number });
    }
    for (const count of changedCounts) this.#sql.upsertQuota.run(count);
    return decisions;
  }

  async getQuotaUsage(bucket: string, period: string): Promise<number> {
    return this.#sql.getQuota.get({ bucket, period }) ?? 0;
  }

  // -------------------------------------------------------------- idempotency

  async beginIdempotent(
    ref: IdempotencyRef,
    options: { requestHash: string; now: number; ttlMs: number },
  ): Promise<IdempotencyBegin> {
    return this.#atomic((): IdempotencyBegin => {
      const record = this.#sql.getIdempotency.get(ref);
      if (record && record.expiresAt > options.now) {
        if (record.requestHash !== options.requestHash) return { outcome: 'conflict' };
        if (record.state === 'completed') {
          return {
            outcome: 'replay',
            response: {
              statusCode: record.statusCode as number,
              body: JSON.parse(record.body as string),
            },
          };
        }
        return { outcome: 'in_progress' };
      }
      this.#sql.reserveIdempotency.run({
        ...ref,
        requestHash: options.requestHash,
        expiresAt: options.now + options.ttlMs,
      });
      return { outcome: 'started' };
    });
  }

  async completeIdempotent(ref: IdempotencyRef, response: StoredResponse): Promise<void> {
    this.#sql.completeIdempotency.run({
      ...ref,
      statusCode: response.statusCode,
      body: JSON.stringify(response.body ?? null),
    });
  }

  async abandonIdempotent(ref: IdempotencyRef): Promise<void> {
    this.#sql.abandonIdempotency.run(ref);
  }

  // -------------------------------------------------------------- audit log

  async appendAudit(entry: AuditEntry): Promise<void> {
    this.#audit.append.run({ ...entry, details: JSON.stringify(entry.details) });
  }

  async listAudit(options: { tenantId?: string; limit: number }): Promise<AuditEntry[]> {
    checkLimit(options.limit);
    const rows =
      options.tenantId === undefined
        ? this.#audit.recent.all({ limit: options.limit })
        : this.#audit.byTenant.all({ tenantId: options.tenantId, limit: options.limit });
    return rows.map((row) => ({ ...row, details: JSON.parse(row.details) }));
  }

  // -------------------------------------------------------------- webhooks, outbox, batches

  async createEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    this.#atomic(() => this.#wh.insertEndpoint.run(endpointRow(endpoint)));
  }

  async getEndpoint(endpointId: string): Promise<WebhookEndpoint | null> {
    const row = this.#wh.getEndpoint.get({ endpointId });
    return row ? toEndpoint(row) : null;
  }

  async listEndpoints(tenantId: string): Promise<WebhookEndpoint[]> {
    return this.#wh.listEndpoints.all({ tenantId }).map(toEndpoint);
  }

  async updateEndpoint(endpointId: string, patch: EndpointPatch): Promise<WebhookEndpoint> {
    return this.#atomic(() => {
      const row = this.#wh.getEndpoint.get({ endpointId });
      if (!row) throw new AppError('not_found', 'Webhook endpoint not found');
      const next = { ...toEndpoint(row), ...definedOnly(patch) };
      this.#wh.updateEndpoint.run(endpointRow(next));
      return next;
    });
  }

  async deleteEndpoint(endpointId: string): Promise<void> {
    this.#wh.deleteEndpoint.run({ endpointId });
  }

  async enqueueDeliveries(deliveries: Delivery[]): Promise<void> {
    this.#atomic(() => {
      for (const delivery of deliveries) this.#wh.insertDelivery.run(deliveryRow(delivery));
    });
  }

  async getDelivery(deliveryId: string): Promise<Delivery | null> {
    const row = this.#wh.getDelivery.get({ deliveryId });
    return row ? toDelivery(row) : null;
  }

  async listDueDeliveries(options: { now: number; limit: number }): Promise<Delivery[]> {
    checkLimit(options.limit);
    return this.#wh.listDueDeliveries.all(options).map(toDelivery);
  }

  async listDeliveries(options: {
    endpointId: string;
    after?: string;
    limit: number;
  }): Promise<Page<Delivery>> {
    checkLimit(options.limit);
    const { endpointId } = options;
    const limit = options.limit + 1;
    let rows: DeliveryRow[];
    if (options.after === undefined) {
      rows = this.#wh.listDeliveries.all({ endpointId, limit });
    } else {
      const cursor = this.#wh.getDelivery.get({ deliveryId: options.after });
      if (!cursor || cursor.endpointId !== endpointId) throw invalidCursor();
      rows = this.#wh.listDeliveriesAfter.all({
        endpointId,
        limit,
        createdAt: cursor.createdAt,
        deliveryId: cursor.deliveryId,
      });
    }
    return toPage(rows.map(toDelivery), options.limit, (delivery) => delivery.deliveryId);
  }

  async updateDelivery(
    deliveryId: string,
    patch: DeliveryPatch,
    options: { expectVersion: number },
  ): Promise<Delivery> {
    return this.#atomic(() => {
      const row = this.#wh.getDelivery.get({ deliveryId });
      if (!row) throw new AppError('not_found', 'Delivery not found');
      expectVersion('Delivery', options.expectVersion, row.version);
      const next: Delivery = {
        ...toDelivery(row),
        ...definedOnly(patch),
        version: row.version + 1,
      };
      this.#wh.updateDelivery.run(deliveryRow(next));
      return next;
    });
  }

  async createBatch(
    batch: Batch,
    options: { jobs: Job[]; charge: NewLedgerEntry },
  ): Promise<{ batch: Batch; balance: number }> {
    checkBatch(batch, options);
    return this.#atomic(() => {
      const { balance, applied } = this.#postInTransaction(options.charge);
      if (!applied) throw new AppError('validation_error', 'Charge entry already posted');
      try {
        this.#wh.insertBatch.run(batchRow(batch));
        for (const job of options.jobs) this.#sql.insertJob.run(jobParams(job));
      } catch (error) {
        if (isSqliteError(error, 'SQLITE_CONSTRAINT_PRIMARYKEY')) {
          throw new AppError('validation_error', 'Batch or job already exists');
        }
        throw error;
      }
      return { batch, balance };
    });
  }

  async getBatch(batchId: string): Promise<Batch | null> {
    const row = this.#wh.getBatch.get({ batchId });
    return row ? toBatch(row) : null;
  }

  async listDueBatches(options: { now: number; limit: number }): Promise<Batch[]> {
    checkLimit(options.limit);
    return this.#wh.listDueBatches.all(options).map(toBatch);
  }

  async updateBatch(
    batchId: string,
    patch: BatchPatch,
    options: { expectVersion: number; deliveries?: Delivery[] },
  ): Promise<Batch> {
    return this.#atomic(() => {
      const row = this.#wh.getBatch.get({ batchId });
      if (!row) throw new AppError('not_found', 'Batch not found');
      expectVersion('Batch', options.expectVersion, row.version);
      const next: Batch = { ...toBatch(row), ...definedOnly(patch), version: row.version + 1 };
      this.#wh.updateBatch.run(batchRow(next));
      for (const delivery of options.deliveries ?? []) {
        this.#wh.insertDelivery.run(deliveryRow(delivery));
      }
      return next;
    });
  }

  #atomic<T>(work: () => T): T {
    try {
      return this.#immediate(work);
    } catch (error) {
      throw translate(error);
    }
  }
}

/** The patch's fields that are set: `undefined` never overwrites a stored value. */
function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(patch).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

function expectVersion(what: string, expected: number, actual: number): void {
  if (expected !== actual) {
    throw new AppError('version_conflict', `${what} changed since it was read`, {
      details: { expected, actual },
    });
  }
}

function checkBatch(batch: Batch, options: { jobs: Job[]; charge: NewLedgerEntry }): void {
  if (options.jobs.length === 0 || options.jobs.length > MAX_BATCH_JOBS) {
    throw new AppError('validation_error', `A batch holds 1 to ${MAX_BATCH_JOBS} jobs`);
  }
  const foreign = options.jobs.some((job) => job.tenantId !== batch.tenantId);
  if (foreign || options.charge.tenantId !== batch.tenantId) {
    throw new AppError('validation_error', 'The batch, its jobs and charge share one tenant');
  }
}

/** Every foreign key points at tenants, so a violation always means an unknown tenant. */
function translate(error: unknown): unknown {
  if (isSqliteError(error, 'SQLITE_CONSTRAINT_FOREIGNKEY')) {
    return new AppError('not_found', 'Tenant not found', { param: 'tenantId', cause: error });
  }
  return error;
}

type ListJobsVariant = `${'tenant' | 'all'}:${'asc' | 'desc'}:${'after' | 'start'}`;

function listJobsVariant(scoped: boolean, order: 'asc' | 'desc', after: boolean): ListJobsVariant {
  return `${scoped ? 'tenant' : 'all'}:${order}:${after ? 'after' : 'start'}`;
}

/** One statement per (scope, order, cursor) shape, so each can use its index. */
function prepareListJobs(
  db: Database.Database,
): Record<ListJobsVariant, Statement<Params, JobRow>> {
  const statements: Partial<Record<ListJobsVariant, Statement<Params, JobRow>>> = {};
  for (const scoped of [true, false]) {
    for (const order of ['asc', 'desc'] as const) {
      for (const after of [true, false]) {
        const where: string[] = [];
        if (scoped) where.push('tenant_id = @tenantId');
        if (after) {
          where.push(
            `(created_at, job_id) ${order === 'asc' ? '>' : '<'} (@afterCreatedAt, @afterJobId)`,
          );
        }
        statements[listJobsVariant(scoped, order, after)] = db.prepare<Params, JobRow>(
          `SELECT ${JOB_COLUMNS} FROM jobs
           ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
           ORDER BY created_at ${order}, job_id ${order} LIMIT @limit`,
        );
      }
    }
  }
  return statements as Record<ListJobsVariant, Statement<Params, JobRow>>;
}

function prepareStatements(db: Database.Database) {
  return {
    ping: db.prepare('SELECT 1'),

    insertTenant: db.prepare<Tenant>(
      `INSERT INTO tenants (tenant_id, email, plan_id, status, created_at)
       VALUES (@tenantId, @email, @planId, @status, @createdAt)`,
    ),
    getTenant: db.prepare<{ tenantId: string }, Tenant>(
      `SELECT ${TENANT_COLUMNS} FROM tenants WHERE tenant_id = @tenantId`,
    ),
    listTenants: db.prepare<{ limit: number }, Tenant>(
      `SELECT ${TENANT_COLUMNS} FROM tenants ORDER BY tenant_id LIMIT @limit`,
    ),
    listTenantsAfter: db.prepare<{ after: string; limit: number }, Tenant>(
      `SELECT ${TENANT_COLUMNS} FROM tenants WHERE tenant_id > @after
       ORDER BY tenant_id LIMIT @limit`,
    ),
    updateTenant: db.prepare<Tenant>(
      `UPDATE tenants SET email = @email, plan_id = @planId, status = @status
       WHERE tenant_id = @tenantId`,
    ),

    insertKey: db.prepare<ApiKey>(
      `INSERT INTO api_keys (key_id, tenant_id, name, prefix, hash, created_at, last_used_at,
         expires_at, revoked_at)
       VALUES (@keyId, @tenantId, @name, @prefix, @hash, @createdAt, @lastUsedAt, @expiresAt,
         @revokedAt)`,
    ),
    findKeyByHash: db.prepare<{ hash: string }, ApiKey>(
      `SELECT ${KEY_COLUMNS} FROM api_keys WHERE hash = @hash`,
    ),
    getKey: db.prepare<{ keyId: string }, ApiKey>(
      `SELECT ${KEY_COLUMNS} FROM api_keys WHERE key_id = @keyId`,
    ),
    listKeys: db.prepare<{ tenantId: string }, ApiKey>(
      `SELECT ${KEY_COLUMNS} FROM api_keys WHERE tenant_id = @tenantId
       ORDER BY created_at, key_id`,
    ),
    revokeKey: db.prepare<{ keyId: string; now: number }, ApiKey>(
      `UPDATE api_keys SET revoked_at = coalesce(revoked_at, @now) WHERE key_id = @keyId
       RETURNING ${KEY_COLUMNS}`,
    ),
    // max(): touches from several processes may land out of order.
    touchKey: db.prepare<{ keyId: string; now: number }>(
      `UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, @now), @now)
       WHERE key_id = @keyId`,
    ),

    getBalance: db
      .prepare<{ tenantId: string }, number>(
        'SELECT balance FROM balances WHERE tenant_id = @tenantId',
      )
      .pluck(),
    upsertBalance: db.prepare<{ tenantId: string; balance: number }>(
      `INSERT INTO balances (tenant_id, balance) VALUES (@tenantId, @balance)
       ON CONFLICT (tenant_id) DO UPDATE SET balance = excluded.balance`,
    ),
    getEntry: db.prepare<{ entryId: string }, LedgerEntry>(
      `SELECT ${ENTRY_COLUMNS} FROM ledger_entries WHERE entry_id = @entryId`,
    ),
    insertEntry: db.prepare<LedgerEntry>(
      `INSERT INTO ledger_entries (entry_id, tenant_id, kind, amount, reason, job_id, created_at,
         balance_after)
       VALUES (@entryId, @tenantId, @kind, @amount, @reason, @jobId, @createdAt, @balanceAfter)`,
    ),
    entrySeq: db
      .prepare<{ tenantId: string; entryId: string }, number>(
        'SELECT seq FROM ledger_entries WHERE entry_id = @entryId AND tenant_id = @tenantId',
      )
      .pluck(),
    listEntries: db.prepare<{ tenantId: string; afterSeq: number; limit: number }, LedgerEntry>(
      `SELECT ${ENTRY_COLUMNS} FROM ledger_entries
       WHERE tenant_id = @tenantId AND seq > @afterSeq ORDER BY seq LIMIT @limit`,
    ),

    insertJob: db.prepare<Params>(
      `INSERT INTO jobs (job_id, tenant_id, key_id, model, provider, upstream_model,
         provider_job_id, prompt, seconds, size, state, progress, provider_status, error, cost,
         asset, remixed_from_job_id, created_at, updated_at, completed_at, next_check_at,
         check_failures, lease_owner, lease_until, version)
       VALUES (@jobId, @tenantId, @keyId, @model, @provider, @upstreamModel, @providerJobId,
         @prompt, @seconds, @size, @state, @progress, @providerStatus, @error, @cost, @asset,
         @remixedFromJobId, @createdAt, @updatedAt, @completedAt, @nextCheckAt, @checkFailures,
         @leaseOwner, @leaseUntil, @version)`,
    ),
    getJob: db.prepare<{ jobId: string }, JobRow>(
      `SELECT ${JOB_COLUMNS} FROM jobs WHERE job_id = @jobId`,
    ),
    listJobs: prepareListJobs(db),
    updateJob: db.prepare<Params>(
      `UPDATE jobs SET provider = @provider, upstream_model = @upstreamModel,
         provider_job_id = @providerJobId, state = @state, progress = @progress,
         provider_status = @providerStatus, error = @error, asset = @asset,
         completed_at = @completedAt, next_check_at = @nextCheckAt,
         check_failures = @checkFailures, lease_owner = @leaseOwner, lease_until = @leaseUntil,
         updated_at = @updatedAt, version = @version
       WHERE job_id = @jobId`,
    ),
    claimJob: db.prepare<{ jobId: string; owner: string; now: number; leaseUntil: number }, JobRow>(
      `UPDATE jobs SET lease_owner = @owner, lease_until = @leaseUntil, version = version + 1
       WHERE job_id = @jobId AND state IN ('queued', 'in_progress')
         AND (lease_owner IS NULL OR lease_until <= @now OR lease_owner = @owner)
       RETURNING ${JOB_COLUMNS}`,
    ),
    deleteJob: db.prepare<{ jobId: string }>('DELETE FROM jobs WHERE job_id = @jobId'),
    // `next_check_at IS NOT NULL` lets the partial index jobs_due answer: every
    // unfinished job has a next check.
    countUnfinishedJobs: db.prepare<[], { state: keyof UnfinishedJobs; jobs: number }>(
      `SELECT state, count(*) AS jobs FROM jobs
       WHERE next_check_at IS NOT NULL AND state IN ('queued', 'in_progress')
       GROUP BY state`,
    ),
    listDueJobs: db.prepare<{ now: number; limit: number }, JobRow>(
      `SELECT ${JOB_COLUMNS} FROM jobs
       WHERE next_check_at IS NOT NULL AND next_check_at <= @now
         AND state IN ('queued', 'in_progress')
       ORDER BY next_check_at, job_id LIMIT @limit`,
    ),

    getTat: db
      .prepare<{ bucket: string }, number>('SELECT tat FROM rate_buckets WHERE bucket = @bucket')
      .pluck(),
    upsertTat: db.prepare<{ bucket: string; tat: number }>(
      `INSERT INTO rate_buckets (bucket, tat) VALUES (@bucket, @tat)
       ON CONFLICT (bucket) DO UPDATE SET tat = excluded.tat`,
    ),
    getQuota: db
      .prepare<{ bucket: string; period: string }, number>(
        'SELECT used FROM quota_counters WHERE bucket = @bucket AND period = @period',
      )
      .pluck(),
    purgeIdempotency: db.prepare<{ now: number; batch: number }>(
      `DELETE FROM idempotency_records WHERE (scope, key) IN
         (SELECT scope, key FROM idempotency_records WHERE expires_at <= @now LIMIT @batch)`,
    ),
    purgeRateBuckets: db.prepare<{ now: number; batch: number }>(
      `DELETE FROM rate_buckets WHERE bucket IN
         (SELECT bucket FROM rate_buckets WHERE tat <= @now LIMIT @batch)`,
    ),
    purgeQuota: db.prepare<{ period: string; batch: number }>(
      `DELETE FROM quota_counters WHERE (bucket, period) IN
         (SELECT bucket, period FROM quota_counters WHERE period < @period LIMIT @batch)`,
    ),
    upsertQuota: db.prepare<{ bucket: string; period: string; used: number }>(
      `INSERT INTO quota_counters (bucket, period, used) VALUES (@bucket, @period, @used)
       ON CONFLICT (bucket, period) DO UPDATE SET used = excluded.used`,
    ),

    getIdempotency: db.prepare<IdempotencyRef, IdempotencyRow>(
      `SELECT request_hash AS requestHash, state, status_code AS statusCode, body,
         expires_at AS expiresAt
       FROM idempotency_records WHERE scope = @scope AND key = @key`,
    ),
    reserveIdempotency: db.prepare<IdempotencyRef & { requestHash: string; expiresAt: number }>(
      `INSERT INTO idempotency_records (scope, key, request_hash, state, status_code, body,
         expires_at)
       VALUES (@scope, @key, @requestHash, 'in_progress', NULL, NULL, @expiresAt)
       ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
         state = 'in_progress', status_code = NULL, body = NULL,
         expires_at = excluded.expires_at`,
    ),
    // Only a pending reservation takes a response: the first stored answer is final.
    completeIdempotency: db.prepare<IdempotencyRef & { statusCode: number; body: string }>(
      `UPDATE idempotency_records SET state = 'completed', status_code = @statusCode,
         body = @body
       WHERE scope = @scope AND key = @key AND state = 'in_progress'`,
    ),
    abandonIdempotency: db.prepare<IdempotencyRef>(
      `DELETE FROM idempotency_records
       WHERE scope = @scope AND key = @key AND state = 'in_progress'`,
    ),
  };
}

type AuditRow = Omit<AuditEntry, 'details'> & { details: string };

const AUDIT_COLUMNS =
  'audit_id AS auditId, at, actor, action, tenant_id AS tenantId, target, details';

function prepareAuditStatements(db: Database.Database) {
  return {
    append: db.prepare<AuditRow>(
      `INSERT INTO audit_log (audit_id, at, actor, action, tenant_id, target, details)
       VALUES (@auditId, @at, @actor, @action, @tenantId, @target, @details)`,
    ),
    recent: db.prepare<{ limit: number }, AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log ORDER BY at DESC, seq DESC LIMIT @limit`,
    ),
    byTenant: db.prepare<{ tenantId: string; limit: number }, AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_log WHERE tenant_id = @tenantId
       ORDER BY at DESC, seq DESC LIMIT @limit`,
    ),
  };
}

/** Opens (creating if needed) and migrates the SQLite file at `path`. */
export function createSqliteStore(options: { path: string }): SqliteStore {
  return new SqliteStore(options);
}
