/**
 * DynamoStore: every `Store` port on ONE DynamoDB table (single-table design).
 *
 * Items (all keys are strings; `<id>` is always the whole rest of the key, so ids
 * containing `#` cannot collide):
 *
 *   item          PK                 SK                  other keys
 *   tenant        TENANT#<tenantId>  TENANT              GSI2PK=TENANTS  GSI2SK=<tenantId>
 *   balance       TENANT#<tenantId>  BALANCE             (balance, seq = entries so far)
 *   ledger entry  TENANT#<tenantId>  LEDGER#<seq:16>     (immutable)
 *   entry id      ENTRY#<entryId>    ENTRY               (immutable copy of the entry, + seq)
 *   api key       KEY#<keyId>        KEY                 GSI1PK=KEYS#<tenantId>
 *                                                        GSI1SK=<createdAt:16>#<keyId>
 *   key hash      KEYHASH#<hash>     KEYHASH             (keyId; makes hashes unique)
 *   job           JOB#<jobId>        JOB                 GSI1PK=JOBS#<tenantId>
 *                                                        GSI1SK=<createdAt:16>#<jobId>
 *                                                        GSI2PK=JOBS  GSI2SK=<createdAt:16>#<jobId>
 *                                                        GSI3PK=DUE#<shard>  (sparse, below)
 *                                                        GSI3SK=<nextCheckAt:16>#<jobId>
 *   rate bucket   RATE#<bucket>      RATE                (tat, ttl)
 *   quota counter QUOTA#<bucket>     PERIOD#<period>     (used, ttl)
 *   idempotency   IDEM#<scope>       KEY#<key>           (expiresAtMs for logic, ttl)
 *   webhook       WEBHOOK#<id>       WEBHOOK             GSI1PK=WEBHOOKS#<tenantId>
 *                                                        GSI1SK=<createdAt:16>#<id>
 *                                                        (sparse: not a job's one-off)
 *   delivery      DELIVERY#<id>      DELIVERY            GSI1PK=DELIVERIES#<endpointId>
 *     (outbox)                                           GSI1SK=<createdAt:16>#<id>
 *                                                        GSI3PK=WHDUE#<shard> (sparse:
 *                                                        pending) GSI3SK=<nextAttemptAt:16>#<id>
 *   batch         BATCH#<batchId>    BATCH               GSI3PK=BATCHDUE#<shard> (sparse:
 *                                                        running) GSI3SK=<nextCheckAt:16>#<id>
 *   audit entry   AUDIT#<tenantId>   <at:16>#<auditId>   GSI2PK=AUDIT  GSI2SK=<at:16>#<auditId>
 *                                                        (immutable)
 *
 * `<n:16>` is a zero-padded non-negative integer, so string order is numeric order.
 * `ttl` holds epoch SECONDS for DynamoDB TTL; it is housekeeping only, logic never
 * depends on an item having been swept. (Not named `expiresAt`: API keys have a
 * millisecond `expiresAt` of their own.)
 *
 * Indexes (projection ALL, so listings need no second read):
 *   GSI1  per-tenant collections: listKeys (KEYS#t), listJobs with tenantId (JOBS#t)
 *   GSI2  global collections: listTenants (TENANTS), listJobs without tenantId (JOBS),
 *         listAudit without tenantId (AUDIT).
 *         One partition each: operator listings, not a request path at scale.
 *   GSI3  due jobs: listDueJobs. Present only while the job is queued/in_progress with
 *         a nextCheckAt; spread over DUE_SHARDS partitions by job id so the worker's
 *         hot index is not one partition. listDueJobs queries every shard and merges.
 *
 * Access patterns (no method ever Scans):
 *   createTenant Put (attribute_not_exists)   getTenant Get   updateTenant Update
 *   listTenants  Query GSI2 TENANTS, GSI2SK > after
 *   createKey    Transact{check tenant, Put key, Put hash}   findKeyByHash Get hash, Get key
 *   getKey Get   listKeys Query GSI1   revokeKey/touchKey conditional Update
 *   post         Get entry id + balance, Transact{Put entry id, Put balance on seq, Put ledger}
 *   getBalance   Get balance   listEntries Get cursor's entry id, Query PK=TENANT#t by SK
 *   createJob    Transact{Put job, Put entry id, Put balance on seq, Put ledger}
 *   getJob Get   listJobs Query GSI1/GSI2 (cursor: Get the cursor job for its sort key)
 *   updateJob    Put job on version (+ the post items in the same transaction)
 *   claimJob     conditional Update   deleteJob conditional Delete
 *   listDueJobs  Query GSI3 per shard, merge   countUnfinishedJobs Query GSI3 per shard
 *                (state only), every page
 *   consumeLimits  rate: Get bucket, gcra(), Put on the TAT read; then quota: conditional ADD
 *   idempotency  conditional Put / Update / Delete, Get to explain a refused Put
 *   endpoints    create Transact{check tenant, Put}  list Query GSI1 WEBHOOKS#t  update Put
 *                on the updatedAt read   delete Delete
 *   outbox       enqueueDeliveries conditional Put each; updateJob/updateBatch add the
 *                not-yet-present deliveries to their transaction; listDueDeliveries Query
 *                GSI3 WHDUE#<shard> and merge; listDeliveries Query GSI1 newest first
 *   createBatch  Transact{Put batch, Put each job, post items}: <= 90 jobs + 5 < 100
 *   listDueBatches Query GSI3 BATCHDUE#<shard> and merge
 *   appendAudit  Put (attribute_not_exists)
 *   listAudit    Query PK=AUDIT#t newest first, or Query GSI2 AUDIT newest first
 *
 * Money: the balance item carries `seq`, the number of entries applied. Every post
 * reads it, computes `balanceAfter` and the next ledger SK, and commits on the
 * condition `seq = :read` (or absence), so concurrent posts serialize through
 * retries and each entry's balanceAfter is exact. The entry-id item makes posts
 * idempotent across tenants and processes.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { QueryCommandInput, TransactWriteCommandInput } from '@aws-sdk/lib-dynamodb';
import { AppError } from '../../core/errors.ts';
import { gcra } from '../../core/limits.ts';
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
  type JobState,
  type LedgerEntry,
  type LimitDecision,
  MAX_BATCH_JOBS,
  type NewLedgerEntry,
  type Page,
  type PostResult,
  type QuotaDecision,
  type QuotaParams,
  type RateDecision,
  type RateLimitParams,
  type Store,
  type StoredResponse,
  type Tenant,
  type UnfinishedJobs,
  type WebhookEndpoint,
} from '../../core/ports.ts';
import {
  CreateTableCommand,
  DeleteCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  DynamoConnection,
  GetCommand,
  loadDynamoSdk,
  PutCommand,
  QueryCommand,
  TransactWriteCommand,
  UpdateCommand,
  UpdateTimeToLiveCommand,
} from './lazy-sdk.ts';
import { INDEX, TTL_ATTRIBUTE, tableDefinition } from './table-definition.ts';

type Item = Record<string, unknown>;
type TransactItem = NonNullable<TransactWriteCommandInput['TransactItems']>[number];

/** A write step tagged so a cancelled transaction can say which condition failed. */
interface Step {
  tag:
    | 'job'
    | 'entry'
    | 'balance'
    | 'ledger'
    | 'tenant'
    | 'key'
    | 'hash'
    | 'endpoint'
    | 'delivery'
    | 'batch';
  item: TransactItem;
}

/** Changing it moves due jobs between partitions: existing items would need re-keying. */
const DUE_SHARDS = 4;
const UNFINISHED: ReadonlySet<JobState> = new Set(['queued', 'in_progress']);

/** Rate buckets idle this long past their TAT are equivalent to absent ones. */
const RATE_IDLE_SECONDS = 3600;
/** Quota counters outlive any monthly (or yearly) period they count. */
const QUOTA_TTL_SECONDS = 400 * 24 * 3600;

/**
 * Optimistic writes retry with full-jitter exponential backoff, as do single-item
 * writes that met a transaction in flight on their item (TransactionConflict, which
 * the SDK does not retry). Each lost condition means another writer made progress,
 * so even hundreds of writers on one balance finish well inside the budget.
 */
const MAX_ATTEMPTS = 100;
const BASE_DELAY_MS = 4;
const MAX_DELAY_MS = 100;

/** Transaction cancellation codes that mean "try again", not "your condition is false". */
const TRANSIENT_CODES = new Set([
  'TransactionConflict',
  'ThrottlingError',
  'ProvisionedThroughputExceeded',
  'RequestLimitExceeded',
]);

function fields<T>(shape: Record<keyof T, true>): readonly (keyof T & string)[] {
  return Object.keys(shape) as (keyof T & string)[];
}

const TENANT_FIELDS = fields<Tenant>({
  tenantId: true,
  email: true,
  planId: true,
  status: true,
  createdAt: true,
});
const KEY_FIELDS = fields<ApiKey>({
  keyId: true,
  tenantId: true,
  name: true,
  prefix: true,
  hash: true,
  createdAt: true,
  lastUsedAt: true,
  expiresAt: true,
  revokedAt: true,
});
const NEW_ENTRY_FIELDS = fields<NewLedgerEntry>({
  entryId: true,
  tenantId: true,
  kind: true,
  amount: true,
  reason: true,
  jobId: true,
  createdAt: true,
});
const ENTRY_FIELDS: readonly (keyof LedgerEntry & string)[] = [...NEW_ENTRY_FIELDS, 'balanceAfter'];
const JOB_FIELDS = fields<Job>({
  jobId: true,
  tenantId: true,
  keyId: true,
  model: true,
  provider: true,
  upstreamModel: true,
  providerJobId: true,
  prompt: true,
  seconds: true,
  size: true,
  state: true,
  progress: true,
  providerStatus: true,
  error: true,
  cost: true,
  asset: true,
  remixedFromJobId: true,
  createdAt: true,
  updatedAt: true,
  completedAt: true,
  nextCheckAt: true,
  checkFailures: true,
  leaseOwner: true,
  leaseUntil: true,
  version: true,
});
const AUDIT_FIELDS = fields<AuditEntry>({
  auditId: true,
  at: true,
  actor: true,
  action: true,
  tenantId: true,
  target: true,
  details: true,
});
/** The fields `updateJob` may change; anything else in a patch object is ignored. */
const PATCHABLE = fields<JobPatch>({
  provider: true,
  upstreamModel: true,
  providerJobId: true,
  state: true,
  progress: true,
  providerStatus: true,
  error: true,
  asset: true,
  completedAt: true,
  nextCheckAt: true,
  checkFailures: true,
  leaseOwner: true,
  leaseUntil: true,
  updatedAt: true,
});

/** Copies exactly the domain fields, leaving keys and bookkeeping attributes behind. */
function pick<T>(source: object, names: readonly (keyof T & string)[]): T {
  const record = source as Record<string, unknown>;
  return Object.fromEntries(names.map((name) => [name, record[name] ?? null])) as T;
}

const key = {
  tenant: (tenantId: string) => ({ PK: `TENANT#${tenantId}`, SK: 'TENANT' }),
  balance: (tenantId: string) => ({ PK: `TENANT#${tenantId}`, SK: 'BALANCE' }),
  ledger: (tenantId: string, seq: number) => ({
    PK: `TENANT#${tenantId}`,
    SK: `LEDGER#${sortable(seq)}`,
  }),
  entry: (entryId: string) => ({ PK: `ENTRY#${entryId}`, SK: 'ENTRY' }),
  apiKey: (keyId: string) => ({ PK: `KEY#${keyId}`, SK: 'KEY' }),
  keyHash: (hash: string) => ({ PK: `KEYHASH#${hash}`, SK: 'KEYHASH' }),
  job: (jobId: string) => ({ PK: `JOB#${jobId}`, SK: 'JOB' }),
  rate: (bucket: string) => ({ PK: `RATE#${bucket}`, SK: 'RATE' }),
  quota: (bucket: string, period: string) => ({ PK: `QUOTA#${bucket}`, SK: `PERIOD#${period}` }),
  idempotency: (ref: IdempotencyRef) => ({ PK: `IDEM#${ref.scope}`, SK: `KEY#${ref.key}` }),
  endpoint: (endpointId: string) => ({ PK: `WEBHOOK#${endpointId}`, SK: 'WEBHOOK' }),
  delivery: (deliveryId: string) => ({ PK: `DELIVERY#${deliveryId}`, SK: 'DELIVERY' }),
  batch: (batchId: string) => ({ PK: `BATCH#${batchId}`, SK: 'BATCH' }),
};

/** Fixed width keeps string order equal to numeric order in sort keys. */
function sortable(value: number): string {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new AppError('validation_error', 'Timestamps and sequence numbers are whole numbers');
  }
  return String(value).padStart(16, '0');
}

function jobSortKey(job: Pick<Job, 'createdAt' | 'jobId'>): string {
  return `${sortable(job.createdAt)}#${job.jobId}`;
}

function dueShard(jobId: string): number {
  let hash = 0;
  for (let index = 0; index < jobId.length; index += 1) {
    hash = (hash * 31 + jobId.charCodeAt(index)) >>> 0;
  }
  return hash % DUE_SHARDS;
}

function jobItem(job: Job): Item {
  const item: Item = {
    ...key.job(job.jobId),
    ...pick<Job>(job, JOB_FIELDS),
    GSI1PK: `JOBS#${job.tenantId}`,
    GSI1SK: jobSortKey(job),
    GSI2PK: 'JOBS',
    GSI2SK: jobSortKey(job),
  };
  if (job.nextCheckAt !== null && UNFINISHED.has(job.state)) {
    item.GSI3PK = `DUE#${dueShard(job.jobId)}`;
    item.GSI3SK = `${sortable(job.nextCheckAt)}#${job.jobId}`;
  }
  return item;
}

// Webhook endpoints, the delivery outbox and batches.
const ENDPOINT_FIELDS = fields<WebhookEndpoint>({
  endpointId: true,
  tenantId: true,
  url: true,
  events: true,
  secret: true,
  previousSecret: true,
  previousSecretExpiresAt: true,
  status: true,
  disabledReason: true,
  jobId: true,
  createdAt: true,
  updatedAt: true,
});
const DELIVERY_FIELDS = fields<Delivery>({
  deliveryId: true,
  eventId: true,
  eventType: true,
  tenantId: true,
  endpointId: true,
  payload: true,
  status: true,
  attempts: true,
  nextAttemptAt: true,
  createdAt: true,
  updatedAt: true,
  version: true,
});
const BATCH_FIELDS = fields<Batch>({
  batchId: true,
  tenantId: true,
  jobIds: true,
  cost: true,
  status: true,
  createdAt: true,
  updatedAt: true,
  completedAt: true,
  nextCheckAt: true,
  version: true,
});

function endpointItem(endpoint: WebhookEndpoint): Item {
  const item: Item = {
    ...key.endpoint(endpoint.endpointId),
    ...pick<WebhookEndpoint>(endpoint, ENDPOINT_FIELDS),
  };
  // A job's one-off endpoint stays out of the tenant's listing index.
  if (endpoint.jobId === null) {
    item.GSI1PK = `WEBHOOKS#${endpoint.tenantId}`;
    item.GSI1SK = `${sortable(endpoint.createdAt)}#${endpoint.endpointId}`;
  }
  return item;
}

function deliveryItem(delivery: Delivery): Item {
  const item: Item = {
    ...key.delivery(delivery.deliveryId),
    ...pick<Delivery>(delivery, DELIVERY_FIELDS),
    GSI1PK: `DELIVERIES#${delivery.endpointId}`,
    GSI1SK: `${sortable(delivery.createdAt)}#${delivery.deliveryId}`,
  };
  if (delivery.status === 'pending' && delivery.nextAttemptAt !== null) {
    item.GSI3PK = `WHDUE#${dueShard(delivery.deliveryId)}`;
    item.GSI3SK = `${sortable(delivery.nextAttemptAt)}#${delivery.deliveryId}`;
  }
  return item;
}

function batchItem(batch: Batch): Item {
  const item: Item = { ...key.batch(batch.batchId), ...pick<Batch>(batch, BATCH_FIELDS) };
  if (batch.status === 'running' && batch.nextCheckAt !== null) {
    item.GSI3PK = `BATCHDUE#${dueShard(batch.batchId)}`;
    item.GSI3SK = `${sortable(batch.nextCheckAt)}#${batch.batchId}`;
  }
  return item;
}

/** The patch's fields that are set: `undefined` never overwrites a stored value. */
function definedOnly<T extends object>(patch: T): Partial<T> {
  return Object.fromEntries(
    Object.entries(patch).filter(([, value]) => value !== undefined),
  ) as Partial<T>;
}

function staleVersion(what: string, expected: number, actual: number): AppError {
  return new AppError('version_conflict', `${what} changed since it was read`, {
    details: { expected, actual },
  });
}

function ttlSeconds(epochMs: number): number {
  return Math.ceil(epochMs / 1000);
}

/** `#name` placeholders, so no attribute can collide with a DynamoDB reserved word. */
function aliases(...names: string[]): Record<string, string> {
  return Object.fromEntries(names.map((name) => [`#${name}`, name]));
}

function isNamed(error: unknown, name: string): boolean {
  return error instanceof Error && error.name === name;
}

function isConditionFailure(error: unknown): boolean {
  return isNamed(error, 'ConditionalCheckFailedException');
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new AppError('validation_error', 'limit must be a positive integer', { param: 'limit' });
  }
}

function checkAmount(entry: NewLedgerEntry): void {
  if (!Number.isSafeInteger(entry.amount)) {
    throw new AppError('validation_error', 'Credit amounts are integers', { param: 'amount' });
  }
}

/** Fetching limit+1 items tells whether another page exists without a count. */
function toPage<T>(items: T[], limit: number, cursorOf: (item: T) => string): Page<T> {
  if (items.length <= limit) return { items, next: null };
  const page = items.slice(0, limit);
  return { items: page, next: cursorOf(page[page.length - 1] as T) };
}

function invalidCursor(): AppError {
  return new AppError('validation_error', 'Invalid cursor', { param: 'after' });
}

function tenantNotFound(): AppError {
  return new AppError('not_found', 'Tenant not found', { param: 'tenantId' });
}

function versionConflict(expected: number, actual: number): AppError {
  return new AppError('version_conflict', 'Job changed since it was read', {
    details: { expected, actual },
  });
}

/** Thrown inside `retrying` when a read went stale before the conditional write. */
class Contended extends Error {
  constructor(cause?: unknown) {
    super('DynamoDB write contended', cause === undefined ? undefined : { cause });
    this.name = 'Contended';
  }
}

async function retrying<T>(attempt: () => Promise<T>): Promise<T> {
  for (let attempts = 1; ; attempts += 1) {
    try {
      return await attempt();
    } catch (error) {
      const retryable =
        error instanceof Contended || isNamed(error, 'TransactionConflictException');
      if (!retryable) throw error;
      if (attempts >= MAX_ATTEMPTS) {
        throw new Error(`DynamoDB write still contended after ${attempts} attempts`, {
          cause: error,
        });
      }
      const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** Math.min(attempts, 10));
      await new Promise((resolve) => setTimeout(resolve, Math.random() * ceiling));
    }
  }
}

/**
 * The SDK's region chain (env, profile, IMDS), falling back to us-east-1 so a local
 * setup with only `AWS_ENDPOINT_URL_DYNAMODB` works. Resolved once per client.
 */
function regionWithFallback(): () => Promise<string> {
  let resolved: Promise<string> | undefined;
  return () => {
    resolved ??= (async () => {
      const { client } = await loadDynamoSdk();
      const probe = new client.DynamoDBClient({});
      try {
        return await probe.config.region();
      } catch {
        return 'us-east-1';
      } finally {
        probe.destroy();
      }
    })();
    return resolved;
  };
}

interface BalanceState {
  balance: number;
  seq: number;
  exists: boolean;
}

/**
 * The AWS `Store`: one DynamoDB table, every multi-item invariant in a
 * TransactWriteItems, every read-modify-write guarded by a condition on what was read.
 */
export class DynamoStore implements Store {
  readonly #tableName: string;
  /** The SDK clients, made (and the SDK loaded) when the first command is sent. */
  readonly #connection: DynamoConnection;
  readonly #client: DynamoConnection['client'];
  readonly #doc: DynamoConnection['doc'];
  readonly #turns = new Map<string, Promise<void>>();

  constructor(options: { tableName: string; client?: DynamoDBClient }) {
    this.#tableName = options.tableName;
    this.#connection = new DynamoConnection({
      ...(options.client ? { client: options.client } : {}),
      config: { region: regionWithFallback() },
      translate: { marshallOptions: { removeUndefinedValues: true } },
    });
    this.#client = this.#connection.client;
    this.#doc = this.#connection.doc;
  }

  // -------------------------------------------------------------- lifecycle

  async migrate(): Promise<void> {
    const TableName = this.#tableName;
    if (!(await this.#tableExists())) {
      try {
        await this.#client.send(new CreateTableCommand(tableDefinition(TableName)));
      } catch (error) {
        // Another process created it between our DescribeTable and CreateTable.
        if (!isNamed(error, 'ResourceInUseException')) throw error;
      }
    }
    const { sdk, client } = await this.#connection.connect();
    await sdk.client.waitUntilTableExists(
      { client, maxWaitTime: 600, minDelay: 1, maxDelay: 10 },
      { TableName },
    );
    const { TimeToLiveDescription: ttl } = await this.#client.send(
      new DescribeTimeToLiveCommand({ TableName }),
    );
    const status = ttl?.TimeToLiveStatus;
    if (status === 'ENABLED' || status === 'ENABLING') {
      if (ttl?.AttributeName !== TTL_ATTRIBUTE) {
        throw new Error(
          `table ${TableName} has TTL on "${ttl?.AttributeName}", this store needs "${TTL_ATTRIBUTE}"`,
        );
      }
      return;
    }
    try {
      await this.#client.send(
        new UpdateTimeToLiveCommand({
          TableName,
          TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        }),
      );
    } catch (error) {
      const alreadyOn =
        isNamed(error, 'ValidationException') && /already enabled/i.test(String(error));
      if (!alreadyOn) throw error;
    }
  }

  /** The table's TTL attribute expires these items; nothing to do here. */
  async purgeExpired(_now: number): Promise<number> {
    return 0;
  }

  async ping(): Promise<void> {
    await this.#client.send(new DescribeTableCommand({ TableName: this.#tableName }));
  }

  async close(): Promise<void> {
    await this.#connection.close();
  }

  // -------------------------------------------------------------- tenants

  async createTenant(tenant: Tenant): Promise<void> {
    try {
      await retrying(() =>
        this.#doc.send(
          new PutCommand({
            TableName: this.#tableName,
            Item: {
              ...key.tenant(tenant.tenantId),
              ...pick<Tenant>(tenant, TENANT_FIELDS),
              GSI2PK: 'TENANTS',
              GSI2SK: tenant.tenantId,
            },
            ConditionExpression: 'attribute_not_exists(PK)',
          }),
        ),
      );
    } catch (error) {
      if (isConditionFailure(error)) {
        throw new AppError('validation_error', 'Tenant already exists', { param: 'tenantId' });
      }
      throw error;
    }
  }

  async getTenant(tenantId: string): Promise<Tenant | null> {
    const item = await this.#get(key.tenant(tenantId));
    return item ? pick<Tenant>(item, TENANT_FIELDS) : null;
  }

  async listTenants(options: { after?: string; limit: number }): Promise<Page<Tenant>> {
    checkLimit(options.limit);
    const items = await this.#query(
      {
        IndexName: INDEX.global,
        KeyConditionExpression:
          options.after === undefined ? 'GSI2PK = :pk' : 'GSI2PK = :pk AND GSI2SK > :after',
        ExpressionAttributeValues: {
          ':pk': 'TENANTS',
          ...(options.after === undefined ? {} : { ':after': options.after }),
        },
      },
      options.limit + 1,
    );
    return toPage(
      items.map((item) => pick<Tenant>(item, TENANT_FIELDS)),
      options.limit,
      (tenant) => tenant.tenantId,
    );
  }

  async updateTenant(
    tenantId: string,
    patch: Partial<Pick<Tenant, 'status' | 'planId' | 'email'>>,
  ): Promise<Tenant> {
    const changes = (['status', 'planId', 'email'] as const).filter(
      (field) => patch[field] !== undefined,
    );
    if (changes.length === 0) {
      const current = await this.getTenant(tenantId);
      if (!current) throw new AppError('not_found', 'Tenant not found');
      return current;
    }
    try {
      const { Attributes } = await retrying(() =>
        this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.tenant(tenantId),
            UpdateExpression: `SET ${changes.map((field) => `#${field} = :${field}`).join(', ')}`,
            ConditionExpression: 'attribute_exists(PK)',
            ExpressionAttributeNames: aliases(...changes),
            ExpressionAttributeValues: Object.fromEntries(
              changes.map((field) => [`:${field}`, patch[field]]),
            ),
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
      return pick<Tenant>(Attributes ?? {}, TENANT_FIELDS);
    } catch (error) {
      if (isConditionFailure(error)) throw new AppError('not_found', 'Tenant not found');
      throw error;
    }
  }

  // -------------------------------------------------------------- api keys

  async createKey(apiKey: ApiKey): Promise<void> {
    const failed = await retrying(() =>
      this.#write([
        {
          tag: 'tenant',
          item: {
            ConditionCheck: {
              TableName: this.#tableName,
              Key: key.tenant(apiKey.tenantId),
              ConditionExpression: 'attribute_exists(PK)',
            },
          },
        },
        {
          tag: 'key',
          item: {
            Put: {
              TableName: this.#tableName,
              Item: {
                ...key.apiKey(apiKey.keyId),
                ...pick<ApiKey>(apiKey, KEY_FIELDS),
                GSI1PK: `KEYS#${apiKey.tenantId}`,
                GSI1SK: `${sortable(apiKey.createdAt)}#${apiKey.keyId}`,
              },
              ConditionExpression: 'attribute_not_exists(PK)',
            },
          },
        },
        {
          tag: 'hash',
          item: {
            Put: {
              TableName: this.#tableName,
              Item: { ...key.keyHash(apiKey.hash), keyId: apiKey.keyId },
              ConditionExpression: 'attribute_not_exists(PK)',
            },
          },
        },
      ]),
    );
    if (failed.has('tenant')) throw tenantNotFound();
    if (failed.size > 0) throw new AppError('validation_error', 'API key already exists');
  }

  async findKeyByHash(hash: string): Promise<ApiKey | null> {
    const pointer = await this.#get(key.keyHash(hash));
    return typeof pointer?.keyId === 'string' ? this.getKey(pointer.keyId) : null;
  }

  async getKey(keyId: string): Promise<ApiKey | null> {
    const item = await this.#get(key.apiKey(keyId));
    return item ? pick<ApiKey>(item, KEY_FIELDS) : null;
  }

  async listKeys(tenantId: string): Promise<ApiKey[]> {
    const items = await this.#query(
      {
        IndexName: INDEX.byTenant,
        KeyConditionExpression: 'GSI1PK = :pk',
        ExpressionAttributeValues: { ':pk': `KEYS#${tenantId}` },
      },
      Number.POSITIVE_INFINITY,
    );
    return items.map((item) => pick<ApiKey>(item, KEY_FIELDS));
  }

  async revokeKey(keyId: string, now: number): Promise<ApiKey> {
    try {
      const { Attributes } = await retrying(() =>
        this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.apiKey(keyId),
            UpdateExpression: 'SET #revokedAt = :now',
            ConditionExpression: 'attribute_exists(PK) AND attribute_type(#revokedAt, :null)',
            ExpressionAttributeNames: aliases('revokedAt'),
            ExpressionAttributeValues: { ':now': now, ':null': 'NULL' },
            ReturnValues: 'ALL_NEW',
          }),
        ),
      );
      return pick<ApiKey>(Attributes ?? {}, KEY_FIELDS);
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
    // Missing, or revoked before: the first revocation wins.
    const existing = await this.getKey(keyId);
    if (!existing) throw new AppError('not_found', 'API key not found');
    return existing;
  }

  async touchKey(keyId: string, now: number): Promise<void> {
    try {
      await retrying(() =>
        this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.apiKey(keyId),
            UpdateExpression: 'SET #lastUsedAt = :now',
            // Touches from several processes may land out of order: only move forward.
            ConditionExpression:
              'attribute_exists(PK) AND (attribute_type(#lastUsedAt, :null) OR #lastUsedAt < :now)',
            ExpressionAttributeNames: aliases('lastUsedAt'),
            ExpressionAttributeValues: { ':now': now, ':null': 'NULL' },
          }),
        ),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  // -------------------------------------------------------------- credits

  async post(entry: NewLedgerEntry): Promise<PostResult> {
    checkAmount(entry);
    return this.#inTurn(`balance:${entry.tenantId}`, () => this.#post(entry));
  }

  #post(entry: NewLedgerEntry): Promise<PostResult> {
    return retrying(async () => {
      const [existing, state] = await Promise.all([
        this.#get(key.entry(entry.entryId)),
        this.#readBalance(entry.tenantId),
      ]);
      if (existing) return this.#alreadyPosted(existing);
      const plan = this.#postSteps(entry, state);
      const failed = await this.#write(plan.steps);
      if (failed.size === 0) return { entry: plan.entry, balance: plan.balance, applied: true };
      if (failed.has('tenant')) throw tenantNotFound();
      if (failed.has('entry')) {
        const posted = await this.#get(key.entry(entry.entryId));
        if (posted) return this.#alreadyPosted(posted);
      }
      throw new Contended();
    });
  }

  async getBalance(tenantId: string): Promise<number> {
    return (await this.#readBalance(tenantId)).balance;
  }

  async listEntries(
    tenantId: string,
    options: { after?: string; limit: number },
  ): Promise<Page<LedgerEntry>> {
    checkLimit(options.limit);
    let afterSeq = 0;
    if (options.after !== undefined) {
      const cursor = await this.#get(key.entry(options.after));
      if (!cursor || cursor.tenantId !== tenantId || typeof cursor.seq !== 'number') {
        throw invalidCursor();
      }
      afterSeq = cursor.seq;
    }
    const items = await this.#query(
      {
        KeyConditionExpression: 'PK = :pk AND SK BETWEEN :from AND :to',
        ExpressionAttributeValues: {
          ':pk': key.balance(tenantId).PK,
          ':from': key.ledger(tenantId, afterSeq + 1).SK,
          // '$' sorts right after '#': the end of the LEDGER# range.
          ':to': 'LEDGER$',
        },
      },
      options.limit + 1,
    );
    return toPage(
      items.map((item) => pick<LedgerEntry>(item, ENTRY_FIELDS)),
      options.limit,
      (entry) => entry.entryId,
    );
  }

  async #readBalance(tenantId: string): Promise<BalanceState> {
    const item = await this.#get(key.balance(tenantId));
    if (!item) return { balance: 0, seq: 0, exists: false };
    return { balance: Number(item.balance), seq: Number(item.seq), exists: true };
  }

  async #alreadyPosted(item: Item): Promise<PostResult> {
    const entry = pick<LedgerEntry>(item, ENTRY_FIELDS);
    const { balance } = await this.#readBalance(entry.tenantId);
    return { entry, balance, applied: false };
  }

  /**
   * The writes that append `entry` on top of the balance as read. They commit only if
   * nothing was posted to the tenant since (`seq` unchanged) and the id is new.
   */
  #postSteps(
    entry: NewLedgerEntry,
    state: BalanceState,
  ): { steps: Step[]; entry: LedgerEntry; balance: number } {
    const balance = state.balance + entry.amount;
    if (balance < 0) throw new AppError('insufficient_credits', 'Insufficient credits');
    const seq = state.seq + 1;
    const applied: LedgerEntry = {
      ...pick<NewLedgerEntry>(entry, NEW_ENTRY_FIELDS),
      balanceAfter: balance,
    };
    const TableName = this.#tableName;
    const steps: Step[] = [
      {
        tag: 'entry',
        item: {
          Put: {
            TableName,
            Item: { ...key.entry(entry.entryId), ...applied, seq },
            ConditionExpression: 'attribute_not_exists(PK)',
          },
        },
      },
      {
        tag: 'balance',
        item: {
          Put: {
            TableName,
            Item: { ...key.balance(entry.tenantId), tenantId: entry.tenantId, balance, seq },
            ...(state.exists
              ? {
                  ConditionExpression: '#seq = :seq',
                  ExpressionAttributeNames: aliases('seq'),
                  ExpressionAttributeValues: { ':seq': state.seq },
                }
              : { ConditionExpression: 'attribute_not_exists(PK)' }),
          },
        },
      },
      {
        tag: 'ledger',
        item: {
          Put: {
            TableName,
            Item: { ...key.ledger(entry.tenantId, seq), ...applied, seq },
            ConditionExpression: 'attribute_not_exists(PK)',
          },
        },
      },
    ];
    // A balance item only ever exists for a real tenant, so the check is needed once.
    if (!state.exists) {
      steps.push({
        tag: 'tenant',
        item: {
          ConditionCheck: {
            TableName,
            Key: key.tenant(entry.tenantId),
            ConditionExpression: 'attribute_exists(PK)',
          },
        },
      });
    }
    return { steps, entry: applied, balance };
  }

  // -------------------------------------------------------------- jobs

  async createJob(job: Job, charge: NewLedgerEntry): Promise<{ job: Job; balance: number }> {
    if (charge.tenantId !== job.tenantId) {
      throw new AppError('validation_error', 'The charge must belong to the job tenant');
    }
    checkAmount(charge);
    const item = jobItem(job);
    return this.#inTurn(`balance:${job.tenantId}`, () =>
      retrying(async () => {
        const plan = this.#postSteps(charge, await this.#readBalance(job.tenantId));
        const failed = await this.#write([
          {
            tag: 'job',
            item: {
              Put: {
                TableName: this.#tableName,
                Item: item,
                ConditionExpression: 'attribute_not_exists(PK)',
              },
            },
          },
          ...plan.steps,
        ]);
        if (failed.size === 0) return { job, balance: plan.balance };
        if (failed.has('tenant')) throw tenantNotFound();
        // A reused entry id would otherwise create the job without charging for it.
        if (failed.has('entry'))
          throw new AppError('validation_error', 'Charge entry already posted');
        if (failed.has('job')) {
          throw new AppError('validation_error', 'Job already exists', { param: 'jobId' });
        }
        throw new Contended();
      }),
    );
  }

  async getJob(jobId: string): Promise<Job | null> {
    const item = await this.#get(key.job(jobId));
    return item ? pick<Job>(item, JOB_FIELDS) : null;
  }

  async listJobs(options: {
    tenantId?: string;
    after?: string;
    limit: number;
    order: 'asc' | 'desc';
  }): Promise<Page<Job>> {
    checkLimit(options.limit);
    const scoped = options.tenantId !== undefined;
    const values: Item = { ':pk': scoped ? `JOBS#${options.tenantId}` : 'JOBS' };
    const [pk, sk] = scoped ? ['GSI1PK', 'GSI1SK'] : ['GSI2PK', 'GSI2SK'];
    let condition = `${pk} = :pk`;
    if (options.after !== undefined) {
      const cursor = await this.getJob(options.after);
      if (!cursor || (scoped && cursor.tenantId !== options.tenantId)) throw invalidCursor();
      condition += ` AND ${sk} ${options.order === 'asc' ? '>' : '<'} :after`;
      values[':after'] = jobSortKey(cursor);
    }
    const items = await this.#query(
      {
        IndexName: scoped ? INDEX.byTenant : INDEX.global,
        KeyConditionExpression: condition,
        ExpressionAttributeValues: values,
        ScanIndexForward: options.order === 'asc',
      },
      options.limit + 1,
    );
    return toPage(
      items.map((item) => pick<Job>(item, JOB_FIELDS)),
      options.limit,
      (job) => job.jobId,
    );
  }

  async updateJob(
    jobId: string,
    patch: JobPatch,
    options: { expectVersion: number; ledger?: NewLedgerEntry; deliveries?: Delivery[] },
  ): Promise<Job> {
    const { ledger, expectVersion } = options;
    if (ledger) checkAmount(ledger);
    const changes: JobPatch = Object.fromEntries(
      PATCHABLE.filter((field) => patch[field] !== undefined).map((field) => [field, patch[field]]),
    );
    const attempt = () =>
      retrying(async () => {
        const current = await this.getJob(jobId);
        if (!current) throw new AppError('not_found', 'Job not found');
        if (current.version !== expectVersion)
          throw versionConflict(expectVersion, current.version);
        const next: Job = { ...current, ...changes, version: current.version + 1 };
        const steps: Step[] = [
          {
            tag: 'job',
            item: {
              Put: {
                TableName: this.#tableName,
                Item: jobItem(next),
                ConditionExpression: '#version = :expected',
                ExpressionAttributeNames: aliases('version'),
                ExpressionAttributeValues: { ':expected': expectVersion },
              },
            },
          },
        ];
        if (ledger) {
          const [posted, state] = await Promise.all([
            this.#get(key.entry(ledger.entryId)),
            this.#readBalance(ledger.tenantId),
          ]);
          // Already posted (a second worker redoing the step): update the job alone.
          if (!posted) steps.push(...this.#postSteps(ledger, state).steps);
        }
        if (options.deliveries) steps.push(...(await this.#deliverySteps(options.deliveries)));
        const failed = await this.#write(steps);
        if (failed.has('tenant')) throw tenantNotFound();
        // Any other refusal (version moved, job deleted, entry posted or balance moved
        // meanwhile) is settled by the fresh reads of the next attempt.
        if (failed.size > 0) throw new Contended();
        return next;
      });
    return ledger ? this.#inTurn(`balance:${ledger.tenantId}`, attempt) : attempt();
  }

  async claimJob(
    jobId: string,
    options: { owner: string; leaseMs: number; now: number },
  ): Promise<Job | null> {
    return retrying(async () => {
      try {
        const { Attributes } = await this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.job(jobId),
            UpdateExpression:
              'SET #leaseOwner = :owner, #leaseUntil = :leaseUntil, #version = #version + :one',
            ConditionExpression:
              'attribute_exists(PK) AND #state IN (:queued, :inProgress) AND ' +
              '(attribute_type(#leaseOwner, :null) OR #leaseUntil <= :now OR #leaseOwner = :owner)',
            ExpressionAttributeNames: aliases('leaseOwner', 'leaseUntil', 'version', 'state'),
            ExpressionAttributeValues: {
              ':owner': options.owner,
              ':leaseUntil': options.now + options.leaseMs,
              ':now': options.now,
              ':one': 1,
              ':queued': 'queued',
              ':inProgress': 'in_progress',
              ':null': 'NULL',
            },
            ReturnValues: 'ALL_NEW',
          }),
        );
        return Attributes ? pick<Job>(Attributes, JOB_FIELDS) : null;
      } catch (error) {
        if (isConditionFailure(error)) return null;
        throw error;
      }
    });
  }

  async listDueJobs(options: { now: number; limit: number }): Promise<Job[]> {
    checkLimit(options.limit);
    // Every key below `<now+1>` has nextCheckAt <= now, whatever the job id.
    const bound = sortable(options.now + 1);
    const shards = await Promise.all(
      Array.from({ length: DUE_SHARDS }, (_, shard) =>
        this.#query(
          {
            IndexName: INDEX.due,
            KeyConditionExpression: 'GSI3PK = :pk AND GSI3SK < :bound',
            ExpressionAttributeValues: { ':pk': `DUE#${shard}`, ':bound': bound },
          },
          options.limit,
        ),
      ),
    );
    return shards
      .flat()
      .sort((a, b) => {
        const left = String(a.GSI3SK);
        const right = String(b.GSI3SK);
        return left < right ? -1 : left > right ? 1 : 0;
      })
      .slice(0, options.limit)
      .map((item) => pick<Job>(item, JOB_FIELDS));
  }

  async countUnfinishedJobs(): Promise<UnfinishedJobs> {
    const shards = await Promise.all(
      Array.from({ length: DUE_SHARDS }, (_, shard) =>
        this.#query(
          {
            IndexName: INDEX.due,
            KeyConditionExpression: 'GSI3PK = :pk',
            ExpressionAttributeValues: { ':pk': `DUE#${shard}` },
            ProjectionExpression: '#state',
            ExpressionAttributeNames: aliases('state'),
          },
          Number.POSITIVE_INFINITY,
        ),
      ),
    );
    const counts: UnfinishedJobs = { queued: 0, in_progress: 0 };
    for (const item of shards.flat()) {
      const state: unknown = item.state;
      if (state === 'queued' || state === 'in_progress') counts[state] += 1;
    }
    return counts;
  }

  async deleteJob(jobId: string, options: { expectVersion: number }): Promise<void> {
    const { expectVersion } = options;
    await retrying(async () => {
      const current = await this.getJob(jobId);
      if (!current) throw new AppError('not_found', 'Job not found');
      if (current.version !== expectVersion) throw versionConflict(expectVersion, current.version);
      try {
        await this.#doc.send(
          new DeleteCommand({
            TableName: this.#tableName,
            Key: key.job(jobId),
            ConditionExpression: '#version = :expected',
            ExpressionAttributeNames: aliases('version'),
            ExpressionAttributeValues: { ':expected': expectVersion },
          }),
        );
      } catch (error) {
        if (isConditionFailure(error)) throw new Contended(error);
        throw error;
      }
    });
  }

  // -------------------------------------------------------------- webhooks, outbox, batches

  async createEndpoint(endpoint: WebhookEndpoint): Promise<void> {
    const failed = await retrying(() =>
      this.#write([
        {
          tag: 'tenant',
          item: {
            ConditionCheck: {
              TableName: this.#tableName,
              Key: key.tenant(endpoint.tenantId),
              ConditionExpression: 'attribute_exists(PK)',
            },
          },
        },
        {
          tag: 'endpoint',
          item: {
            Put: {
              TableName: this.#tableName,
              Item: endpointItem(endpoint),
              ConditionExpression: 'attribute_not_exists(PK)',
            },
          },
        },
      ]),
    );
    if (failed.has('tenant')) throw tenantNotFound();
    if (failed.size > 0) throw new AppError('validation_error', 'Webhook endpoint already exists');
  }

  async getEndpoint(endpointId: string): Promise<WebhookEndpoint | null> {
    const item = await this.#get(key.endpoint(endpointId));
    return item ? pick<WebhookEndpoint>(item, ENDPOINT_FIELDS) : null;
  }

  async listEndpoints(tenantId: string): Promise<WebhookEndpoint[]> {
    const items = await this.#query(
      {
        IndexName: INDEX.byTenant,
        KeyConditionExpression: 'GSI1PK = :pk',
        ExpressionAttributeValues: { ':pk': `WEBHOOKS#${tenantId}` },
      },
      Number.POSITIVE_INFINITY,
    );
    return items.map((item) => pick<WebhookEndpoint>(item, ENDPOINT_FIELDS));
  }

  async updateEndpoint(endpointId: string, patch: EndpointPatch): Promise<WebhookEndpoint> {
    return retrying(async () => {
      const current = await this.getEndpoint(endpointId);
      if (!current) throw new AppError('not_found', 'Webhook endpoint not found');
      const next: WebhookEndpoint = { ...current, ...definedOnly(patch) };
      try {
        await this.#doc.send(
          new PutCommand({
            TableName: this.#tableName,
            Item: endpointItem(next),
            ConditionExpression: '#updatedAt = :read',
            ExpressionAttributeNames: aliases('updatedAt'),
            ExpressionAttributeValues: { ':read': current.updatedAt },
          }),
        );
      } catch (error) {
        if (isConditionFailure(error)) throw new Contended(error);
        throw error;
      }
      return next;
    });
  }

  async deleteEndpoint(endpointId: string): Promise<void> {
    await retrying(() =>
      this.#doc.send(
        new DeleteCommand({ TableName: this.#tableName, Key: key.endpoint(endpointId) }),
      ),
    );
  }

  async enqueueDeliveries(deliveries: Delivery[]): Promise<void> {
    // One conditional Put each: a delivery already enqueued must not cancel the others.
    await Promise.all(
      deliveries.map(async (delivery) => {
        try {
          await retrying(() =>
            this.#doc.send(
              new PutCommand({
                TableName: this.#tableName,
                Item: deliveryItem(delivery),
                ConditionExpression: 'attribute_not_exists(PK)',
              }),
            ),
          );
        } catch (error) {
          if (!isConditionFailure(error)) throw error;
        }
      }),
    );
  }

  async getDelivery(deliveryId: string): Promise<Delivery | null> {
    const item = await this.#get(key.delivery(deliveryId));
    return item ? pick<Delivery>(item, DELIVERY_FIELDS) : null;
  }

  async listDueDeliveries(options: { now: number; limit: number }): Promise<Delivery[]> {
    checkLimit(options.limit);
    const items = await this.#queryDue('WHDUE', options);
    return items.map((item) => pick<Delivery>(item, DELIVERY_FIELDS));
  }

  async listDeliveries(options: {
    endpointId: string;
    after?: string;
    limit: number;
  }): Promise<Page<Delivery>> {
    checkLimit(options.limit);
    const values: Item = { ':pk': `DELIVERIES#${options.endpointId}` };
    let condition = 'GSI1PK = :pk';
    if (options.after !== undefined) {
      const cursor = await this.getDelivery(options.after);
      if (!cursor || cursor.endpointId !== options.endpointId) throw invalidCursor();
      condition += ' AND GSI1SK < :after';
      values[':after'] = `${sortable(cursor.createdAt)}#${cursor.deliveryId}`;
    }
    const items = await this.#query(
      {
        IndexName: INDEX.byTenant,
        KeyConditionExpression: condition,
        ExpressionAttributeValues: values,
        ScanIndexForward: false,
      },
      options.limit + 1,
    );
    return toPage(
      items.map((item) => pick<Delivery>(item, DELIVERY_FIELDS)),
      options.limit,
      (delivery) => delivery.deliveryId,
    );
  }

  async updateDelivery(
    deliveryId: string,
    patch: DeliveryPatch,
    options: { expectVersion: number },
  ): Promise<Delivery> {
    const current = await this.getDelivery(deliveryId);
    if (!current) throw new AppError('not_found', 'Delivery not found');
    if (current.version !== options.expectVersion) {
      throw staleVersion('Delivery', options.expectVersion, current.version);
    }
    const next: Delivery = { ...current, ...definedOnly(patch), version: current.version + 1 };
    try {
      await retrying(() =>
        this.#doc.send(
          new PutCommand({
            TableName: this.#tableName,
            Item: deliveryItem(next),
            ConditionExpression: '#version = :expected',
            ExpressionAttributeNames: aliases('version'),
            ExpressionAttributeValues: { ':expected': options.expectVersion },
          }),
        ),
      );
    } catch (error) {
      if (isConditionFailure(error)) {
        throw staleVersion('Delivery', options.expectVersion, options.expectVersion + 1);
      }
      throw error;
    }
    return next;
  }

  async createBatch(
    batch: Batch,
    options: { jobs: Job[]; charge: NewLedgerEntry },
  ): Promise<{ batch: Batch; balance: number }> {
    const { jobs, charge } = options;
    if (jobs.length === 0 || jobs.length > MAX_BATCH_JOBS) {
      throw new AppError('validation_error', `A batch holds 1 to ${MAX_BATCH_JOBS} jobs`);
    }
    if (charge.tenantId !== batch.tenantId || jobs.some((j) => j.tenantId !== batch.tenantId)) {
      throw new AppError('validation_error', 'The batch, its jobs and charge share one tenant');
    }
    checkAmount(charge);
    const TableName = this.#tableName;
    const puts: Step[] = [
      { tag: 'batch', item: batchItem(batch) },
      ...jobs.map((job): Step => ({ tag: 'job', item: jobItem(job) })),
    ].map(({ tag, item }) => ({
      tag: tag as Step['tag'],
      item: { Put: { TableName, Item: item, ConditionExpression: 'attribute_not_exists(PK)' } },
    }));
    // One transaction: batch + jobs (<= MAX_BATCH_JOBS) + the charge's 3-4 items < 100.
    return this.#inTurn(`balance:${batch.tenantId}`, () =>
      retrying(async () => {
        const plan = this.#postSteps(charge, await this.#readBalance(batch.tenantId));
        const failed = await this.#write([...puts, ...plan.steps]);
        if (failed.size === 0) return { batch, balance: plan.balance };
        if (failed.has('tenant')) throw tenantNotFound();
        if (failed.has('entry'))
          throw new AppError('validation_error', 'Charge entry already posted');
        if (failed.has('batch') || failed.has('job')) {
          throw new AppError('validation_error', 'Batch or job already exists');
        }
        throw new Contended();
      }),
    );
  }

  async getBatch(batchId: string): Promise<Batch | null> {
    const item = await this.#get(key.batch(batchId));
    return item ? pick<Batch>(item, BATCH_FIELDS) : null;
  }

  async listDueBatches(options: { now: number; limit: number }): Promise<Batch[]> {
    checkLimit(options.limit);
    const items = await this.#queryDue('BATCHDUE', options);
    return items.map((item) => pick<Batch>(item, BATCH_FIELDS));
  }

  async updateBatch(
    batchId: string,
    patch: BatchPatch,
    options: { expectVersion: number; deliveries?: Delivery[] },
  ): Promise<Batch> {
    const { expectVersion } = options;
    return retrying(async () => {
      const current = await this.getBatch(batchId);
      if (!current) throw new AppError('not_found', 'Batch not found');
      if (current.version !== expectVersion) {
        throw staleVersion('Batch', expectVersion, current.version);
      }
      const next: Batch = { ...current, ...definedOnly(patch), version: current.version + 1 };
      const failed = await this.#write([
        {
          tag: 'batch',
          item: {
            Put: {
              TableName: this.#tableName,
              Item: batchItem(next),
              ConditionExpression: '#version = :expected',
              ExpressionAttributeNames: aliases('version'),
              ExpressionAttributeValues: { ':expected': expectVersion },
            },
          },
        },
        ...(await this.#deliverySteps(options.deliveries ?? [])),
      ]);
      if (failed.size > 0) throw new Contended();
      return next;
    });
  }

  /** Puts of the deliveries not enqueued yet: an existing one would cancel the transaction. */
  async #deliverySteps(deliveries: Delivery[]): Promise<Step[]> {
    const existing = await Promise.all(
      deliveries.map((delivery) => this.#get(key.delivery(delivery.deliveryId))),
    );
    return deliveries
      .filter((_, index) => !existing[index])
      .map((delivery) => ({
        tag: 'delivery',
        item: {
          Put: {
            TableName: this.#tableName,
            Item: deliveryItem(delivery),
            ConditionExpression: 'attribute_not_exists(PK)',
          },
        },
      }));
  }

  /** Items of a sparse due collection (`<prefix>#<shard>` on GSI3) due by `now`, soonest first. */
  async #queryDue(prefix: string, options: { now: number; limit: number }): Promise<Item[]> {
    const bound = sortable(options.now + 1);
    const shards = await Promise.all(
      Array.from({ length: DUE_SHARDS }, (_, shard) =>
        this.#query(
          {
            IndexName: INDEX.due,
            KeyConditionExpression: 'GSI3PK = :pk AND GSI3SK < :bound',
            ExpressionAttributeValues: { ':pk': `${prefix}#${shard}`, ':bound': bound },
          },
          options.limit,
        ),
      ),
    );
    return shards
      .flat()
      .sort((a, b) => {
        const left = String(a.GSI3SK);
        const right = String(b.GSI3SK);
        return left < right ? -1 : left > right ? 1 : 0;
      })
      .slice(0, options.limit);
  }

  // -------------------------------------------------------------- limits

  async consumeLimits(
    bucket: string,
    limits: { rate: RateLimitParams; quota: QuotaParams },
    now: number,
  ): Promise<LimitDecision> {
    const rate = await this.#consumeRate(bucket, limits.rate, now);
    if (!rate.allowed) return { rate, quota: null };
    return { rate, quota: await this.#consumeQuota(bucket, limits.quota) };
  }

  async #consumeRate(bucket: string, params: RateLimitParams, now: number): Promise<RateDecision> {
    return this.#inTurn(`rate:${bucket}`, () =>
      retrying(async () => {
        const item = await this.#get(key.rate(bucket));
        const stored = typeof item?.tat === 'number' ? item.tat : null;
        const { tat, ...decision } = gcra(stored, params, now);
        if (!decision.allowed) return decision;
        try {
          await this.#doc.send(
            new PutCommand({
              TableName: this.#tableName,
              Item: {
                ...key.rate(bucket),
                tat,
                [TTL_ATTRIBUTE]: ttlSeconds(tat) + RATE_IDLE_SECONDS,
              },
              ...(stored === null
                ? { ConditionExpression: 'attribute_not_exists(PK)' }
                : {
                    ConditionExpression: '#tat = :read',
                    ExpressionAttributeNames: aliases('tat'),
                    ExpressionAttributeValues: { ':read': stored },
                  }),
            }),
          );
        } catch (error) {
          if (isConditionFailure(error)) throw new Contended(error);
          throw error;
        }
        return decision;
      }),
    );
  }

  async #consumeQuota(bucket: string, options: QuotaParams): Promise<QuotaDecision> {
    const { period, limit } = options;
    return retrying(async () => {
      try {
        const { Attributes } = await this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.quota(bucket, period),
            UpdateExpression: 'ADD #used :one SET #ttl = :ttl',
            ConditionExpression: 'attribute_not_exists(#used) OR #used < :limit',
            ExpressionAttributeNames: { ...aliases('used'), '#ttl': TTL_ATTRIBUTE },
            ExpressionAttributeValues: {
              ':one': 1,
              ':limit': limit,
              ':ttl': ttlSeconds(Date.now()) + QUOTA_TTL_SECONDS,
            },
            ReturnValues: 'UPDATED_NEW',
          }),
        );
        const used = Number(Attributes?.used);
        return { allowed: true, limit, used, remaining: limit - used };
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
      const used = await this.getQuotaUsage(bucket, period);
      return { allowed: false, limit, used, remaining: 0 };
    });
  }

  async getQuotaUsage(bucket: string, period: string): Promise<number> {
    const item = await this.#get(key.quota(bucket, period));
    return typeof item?.used === 'number' ? item.used : 0;
  }

  // -------------------------------------------------------------- idempotency

  async beginIdempotent(
    ref: IdempotencyRef,
    options: { requestHash: string; now: number; ttlMs: number },
  ): Promise<IdempotencyBegin> {
    const { requestHash, now } = options;
    const expiresAtMs = now + options.ttlMs;
    return retrying(async (): Promise<IdempotencyBegin> => {
      try {
        await this.#doc.send(
          new PutCommand({
            TableName: this.#tableName,
            Item: {
              ...key.idempotency(ref),
              requestHash,
              state: 'in_progress',
              expiresAtMs,
              [TTL_ATTRIBUTE]: ttlSeconds(expiresAtMs),
            },
            // Expired records count as absent.
            ConditionExpression: 'attribute_not_exists(PK) OR #expiresAtMs <= :now',
            ExpressionAttributeNames: aliases('expiresAtMs'),
            ExpressionAttributeValues: { ':now': now },
          }),
        );
        return { outcome: 'started' };
      } catch (error) {
        if (!isConditionFailure(error)) throw error;
      }
      const record = await this.#get(key.idempotency(ref));
      // Abandoned or expired since our Put was refused: try to reserve again.
      if (!record || Number(record.expiresAtMs) <= now) throw new Contended();
      if (record.requestHash !== requestHash) return { outcome: 'conflict' };
      if (record.state !== 'completed') return { outcome: 'in_progress' };
      return {
        outcome: 'replay',
        response: {
          statusCode: Number(record.statusCode),
          body: JSON.parse(String(record.body)),
        },
      };
    });
  }

  async completeIdempotent(ref: IdempotencyRef, response: StoredResponse): Promise<void> {
    try {
      await retrying(() =>
        this.#doc.send(
          new UpdateCommand({
            TableName: this.#tableName,
            Key: key.idempotency(ref),
            UpdateExpression: 'SET #state = :completed, #statusCode = :statusCode, #body = :body',
            // Only a pending reservation takes a response: the first stored answer is final.
            ConditionExpression: '#state = :inProgress',
            ExpressionAttributeNames: aliases('state', 'statusCode', 'body'),
            ExpressionAttributeValues: {
              ':completed': 'completed',
              ':inProgress': 'in_progress',
              ':statusCode': response.statusCode,
              // A JSON string round-trips any body exactly, as the SQLite store does.
              ':body': JSON.stringify(response.body ?? null),
            },
          }),
        ),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  async abandonIdempotent(ref: IdempotencyRef): Promise<void> {
    try {
      await retrying(() =>
        this.#doc.send(
          new DeleteCommand({
            TableName: this.#tableName,
            Key: key.idempotency(ref),
            ConditionExpression: '#state = :inProgress',
            ExpressionAttributeNames: aliases('state'),
            ExpressionAttributeValues: { ':inProgress': 'in_progress' },
          }),
        ),
      );
    } catch (error) {
      if (!isConditionFailure(error)) throw error;
    }
  }

  // -------------------------------------------------------------- audit log

  async appendAudit(entry: AuditEntry): Promise<void> {
    const sortKey = `${sortable(entry.at)}#${entry.auditId}`;
    try {
      await this.#doc.send(
        new PutCommand({
          TableName: this.#tableName,
          Item: {
            PK: `AUDIT#${entry.tenantId}`,
            SK: sortKey,
            GSI2PK: 'AUDIT',
            GSI2SK: sortKey,
            ...pick<AuditEntry>(entry, AUDIT_FIELDS),
          },
          ConditionExpression: 'attribute_not_exists(PK)',
        }),
      );
    } catch (error) {
      // A retried append of the same entry: the log already holds it.
      if (!isConditionFailure(error)) throw error;
    }
  }

  async listAudit(options: { tenantId?: string; limit: number }): Promise<AuditEntry[]> {
    checkLimit(options.limit);
    const items = await this.#query(
      options.tenantId === undefined
        ? {
            IndexName: INDEX.global,
            KeyConditionExpression: 'GSI2PK = :pk',
            ExpressionAttributeValues: { ':pk': 'AUDIT' },
            ScanIndexForward: false,
          }
        : {
            KeyConditionExpression: 'PK = :pk',
            ExpressionAttributeValues: { ':pk': `AUDIT#${options.tenantId}` },
            ScanIndexForward: false,
            ConsistentRead: true,
          },
      options.limit,
    );
    return items.map((item) => pick<AuditEntry>(item, AUDIT_FIELDS));
  }

  // -------------------------------------------------------------- plumbing

  /**
   * Runs `work` once every earlier call with the same key in this process has
   * settled. Requests racing for one balance or rate bucket would otherwise mostly
   * burn conditional writes on each other; queued, only other processes contend.
   */
  #inTurn<T>(turnKey: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#turns.get(turnKey) ?? Promise.resolve();
    const result = previous.then(work);
    const settled = result.then(
      () => {},
      () => {},
    );
    this.#turns.set(turnKey, settled);
    void settled.then(() => {
      if (this.#turns.get(turnKey) === settled) this.#turns.delete(turnKey);
    });
    return result;
  }

  async #tableExists(): Promise<boolean> {
    try {
      await this.#client.send(new DescribeTableCommand({ TableName: this.#tableName }));
      return true;
    } catch (error) {
      if (isNamed(error, 'ResourceNotFoundException')) return false;
      throw error;
    }
  }

  /** Strongly consistent: every read here feeds a decision. */
  async #get(itemKey: { PK: string; SK: string }): Promise<Item | undefined> {
    const { Item } = await this.#doc.send(
      new GetCommand({ TableName: this.#tableName, Key: itemKey, ConsistentRead: true }),
    );
    return Item;
  }

  /** Up to `want` items, following DynamoDB's 1 MB pages as needed. */
  async #query(
    input: Omit<QueryCommandInput, 'TableName' | 'Limit' | 'ExclusiveStartKey'>,
    want: number,
  ): Promise<Item[]> {
    const items: Item[] = [];
    let start: Record<string, unknown> | undefined;
    do {
      const remaining = want - items.length;
      const page = await this.#doc.send(
        new QueryCommand({
          ...input,
          TableName: this.#tableName,
          ExclusiveStartKey: start,
          Limit: Number.isFinite(remaining) ? remaining : undefined,
        }),
      );
      items.push(...(page.Items ?? []));
      start = page.LastEvaluatedKey;
    } while (start !== undefined && items.length < want);
    return items;
  }

  /**
   * Commits the steps atomically and returns the tags whose condition failed (empty:
   * committed). Conflicts with concurrent transactions throw `Contended`, so callers
   * run inside `retrying`.
   */
  async #write(steps: Step[]): Promise<Set<Step['tag']>> {
    const [only] = steps;
    if (steps.length === 1 && only?.item.Put) {
      // A lone conditional Put is just as atomic, at half the cost of a transaction.
      try {
        await this.#doc.send(new PutCommand(only.item.Put));
        return new Set();
      } catch (error) {
        if (isConditionFailure(error)) return new Set([only.tag]);
        throw error;
      }
    }
    try {
      await this.#doc.send(
        new TransactWriteCommand({ TransactItems: steps.map((step) => step.item) }),
      );
      return new Set();
    } catch (error) {
      if (!isNamed(error, 'TransactionCanceledException')) throw error;
      const reasons =
        (error as { CancellationReasons?: { Code?: string }[] }).CancellationReasons ?? [];
      if (reasons.some((reason) => TRANSIENT_CODES.has(reason.Code ?? ''))) {
        throw new Contended(error);
      }
      const failed = new Set(
        steps
          .filter((_, index) => reasons[index]?.Code === 'ConditionalCheckFailed')
          .map((step) => step.tag),
      );
      if (failed.size === 0) throw error;
      return failed;
    }
  }
}

export function createDynamoStore(options: {
  tableName: string;
  client?: DynamoDBClient;
}): DynamoStore {
  return new DynamoStore(options);
}
