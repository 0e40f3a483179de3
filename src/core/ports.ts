/**
 * The interfaces adapters implement. Domain-shaped, key-value access patterns only,
 * so the SQLite store and a DynamoDB single-table design can serve every call
 * without scans. All timestamps are epoch milliseconds.
 */
import type { Readable } from 'node:stream';

export interface Clock {
  /** Current time in epoch milliseconds. */
  now(): number;
}

// ---------------------------------------------------------------- tenants & keys

export type TenantStatus = 'active' | 'suspended' | 'cancelled';

export interface Tenant {
  tenantId: string;
  email: string;
  planId: string;
  status: TenantStatus;
  createdAt: number;
}

export interface ApiKey {
  keyId: string;
  tenantId: string;
  name: string;
  /** Display prefix, e.g. `rp_live_AbCd`; never enough to authenticate. */
  prefix: string;
  /** Hex SHA-256 of the full key; the plaintext is never stored. */
  hash: string;
  createdAt: number;
  lastUsedAt: number | null;
  expiresAt: number | null;
  revokedAt: number | null;
}

export interface Page<T> {
  items: T[];
  /** Cursor for the next page, or null when this page is the last. */
  next: string | null;
}

export interface TenantStore {
  /** Inserts a tenant; throws AppError `validation_error` when the id exists. */
  createTenant(tenant: Tenant): Promise<void>;
  /** The tenant, or null. */
  getTenant(tenantId: string): Promise<Tenant | null>;
  /** Tenants ordered by tenantId, `after` exclusive. */
  listTenants(options: { after?: string; limit: number }): Promise<Page<Tenant>>;
  /** Applies the patch; throws AppError `not_found` for an unknown tenant. */
  updateTenant(
    tenantId: string,
    patch: Partial<Pick<Tenant, 'status' | 'planId' | 'email'>>,
  ): Promise<Tenant>;
}

export interface ApiKeyStore {
  /** Inserts a key record (hash only). */
  createKey(key: ApiKey): Promise<void>;
  /** Looks a key up by the SHA-256 hash of its plaintext. */
  findKeyByHash(hash: string): Promise<ApiKey | null>;
  getKey(keyId: string): Promise<ApiKey | null>;
  /** Keys of a tenant, oldest first. */
  listKeys(tenantId: string): Promise<ApiKey[]>;
  /** Sets revokedAt (first revocation wins); throws `not_found` for an unknown key. */
  revokeKey(keyId: string, now: number): Promise<ApiKey>;
  /** Records use; callers throttle how often they call it. */
  touchKey(keyId: string, now: number): Promise<void>;
}

// ---------------------------------------------------------------- credits

export type LedgerKind = 'grant' | 'charge' | 'refund' | 'adjustment';

export interface NewLedgerEntry {
  /** Idempotency id: posting the same id twice applies it once (e.g. `refund:<jobId>`). */
  entryId: string;
  tenantId: string;
  kind: LedgerKind;
  /** Signed integer credits: positive adds, negative spends. */
  amount: number;
  reason: string;
  jobId: string | null;
  createdAt: number;
}

export interface LedgerEntry extends NewLedgerEntry {
  /** Balance right after this entry was applied. */
  balanceAfter: number;
}

export interface PostResult {
  entry: LedgerEntry;
  balance: number;
  /** False when an entry with this id already existed (nothing changed). */
  applied: boolean;
}

export interface CreditLedger {
  /**
   * Atomically appends the entry and moves the balance. Idempotent by entryId.
   * Throws AppError `insufficient_credits` (nothing written) if the balance would go
   * below zero. `sum(entries) == balance` holds after every call.
   */
  post(entry: NewLedgerEntry): Promise<PostResult>;
  /** Current balance; 0 for a tenant that never had an entry. */
  getBalance(tenantId: string): Promise<number>;
  /** Entries oldest first; `after` is the cursor of a previous page. */
  listEntries(
    tenantId: string,
    options: { after?: string; limit: number },
  ): Promise<Page<LedgerEntry>>;
}

// ---------------------------------------------------------------- jobs

export type JobState = 'queued' | 'in_progress' | 'completed' | 'failed';
export type VideoVariant = 'video' | 'thumbnail' | 'spritesheet';

export interface JobError {
  /** Machine code, e.g. `moderation_blocked`, `upstream_error`, `timeout`. */
  code: string;
  message: string;
}

export interface StoredAsset {
  /** Blob key per stored variant (the video is always present). */
  keys: Partial<Record<VideoVariant, string>> & { video: string };
  /** Size of the stored video in bytes. */
  bytes: number;
  filename: string;
}

export interface Job {
  /** Public id, `video_<hex>`. */
  jobId: string;
  tenantId: string;
  keyId: string;
  /** Public model the customer asked for. */
  model: string;
  /** Provider id and upstream model that serve this job. */
  provider: string;
  upstreamModel: string;
  /** Upstream job id once submitted; null before the submit was acknowledged. */
  providerJobId: string | null;
  prompt: string;
  seconds: number;
  size: string;
  state: JobState;
  progress: number;
  /** Last status word the upstream reported (e.g. `in_progress`). */
  providerStatus: string;
  error: JobError | null;
  /** Credits charged at creation. */
  cost: number;
  asset: StoredAsset | null;
  remixedFromJobId: string | null;
  createdAt: number;
  updatedAt: number;
  completedAt: number | null;
  /** When the worker should next look at this job; null once it has ended. */
  nextCheckAt: number | null;
  /** Consecutive failed upstream checks, for backoff. */
  checkFailures: number;
  leaseOwner: string | null;
  leaseUntil: number;
  /** Incremented by every write; the basis of optimistic concurrency. */
  version: number;
}

export type JobPatch = Partial<
  Pick<
    Job,
    | 'provider'
    | 'upstreamModel'
    | 'providerJobId'
    | 'state'
    | 'progress'
    | 'providerStatus'
    | 'error'
    | 'asset'
    | 'completedAt'
    | 'nextCheckAt'
    | 'checkFailures'
    | 'leaseOwner'
    | 'leaseUntil'
    | 'updatedAt'
  >
>;

export type UnfinishedJobs = Record<'queued' | 'in_progress', number>;

export interface JobStore {
  /**
   * Inserts the job and posts its charge in ONE atomic step. Throws AppError
   * `insufficient_credits` with nothing written when the balance cannot cover it.
   */
  createJob(job: Job, charge: NewLedgerEntry): Promise<{ job: Job; balance: number }>;
  getJob(jobId: string): Promise<Job | null>;
  /** Jobs of one tenant (or all, for operators) by creation time; `after` is a jobId. */
  listJobs(options: {
    tenantId?: string;
    after?: string;
    limit: number;
    order: 'asc' | 'desc';
  }): Promise<Page<Job>>;
  /**
   * Applies the patch iff the stored version equals `expectVersion` (else AppError
   * `version_conflict`), bumping the version. A `ledger` entry commits atomically with
   * it (how a failure and its refund land together), and so do outbox `deliveries`
   * (how a job's end and its webhook events land together).
   */
  updateJob(
    jobId: string,
    patch: JobPatch,
    options: { expectVersion: number; ledger?: NewLedgerEntry; deliveries?: Delivery[] },
  ): Promise<Job>;
  /**
   * Takes the job's lease for `owner` if it is free, expired or already `owner`'s,
   * and the job has not ended. Returns the leased job (version bumped), or null.
   */
  claimJob(
    jobId: string,
    options: { owner: string; leaseMs: number; now: number },
  ): Promise<Job | null>;
  /** Unfinished jobs whose nextCheckAt <= now, soonest first. */
  listDueJobs(options: { now: number; limit: number }): Promise<Job[]>;
  /**
   * How many jobs are unfinished right now, by state, across every process (read from
   * the due-jobs index: cost grows with unfinished jobs, not with history).
   */
  countUnfinishedJobs(): Promise<UnfinishedJobs>;
  /**
   * Removes the job record iff its stored version equals `expectVersion` (else AppError
   * `version_conflict`); AppError `not_found` when there is none. Its ledger entries
   * stay: money history is append-only. Blobs are the caller's to delete.
   */
  deleteJob(jobId: string, options: { expectVersion: number }): Promise<void>;
}

// ---------------------------------------------------------------- limits

export interface RateLimitParams {
  /** Sustained requests per second. */
  ratePerSecond: number;
  /** Requests allowed at once on an idle bucket. */
  burst: number;
}

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds until one more request would be allowed (0 when allowed). */
  retryAfterMs: number;
  /** Milliseconds until the bucket is fully replenished. */
  resetMs: number;
}

export interface QuotaDecision {
  allowed: boolean;
  limit: number;
  used: number;
  remaining: number;
}

export interface QuotaParams {
  /** The counting period, e.g. `2026-12`. */
  period: string;
  /** Requests allowed in the period. */
  limit: number;
}

export interface LimitDecision {
  rate: RateDecision;
  /** null when the rate limit refused first: the quota was neither checked nor counted. */
  quota: QuotaDecision | null;
}

export interface LimitStore {
  /**
   * One request against a bucket's rate (GCRA burst) and then its quota, each
   * check-and-consume atomic across every process sharing the store. A request the
   * rate refuses counts nothing; one the quota refuses has used its rate slot (it
   * still reached the server).
   */
  consumeLimits(
    bucket: string,
    limits: { rate: RateLimitParams; quota: QuotaParams },
    now: number,
  ): Promise<LimitDecision>;
  /** Requests counted so far in the period. */
  getQuotaUsage(bucket: string, period: string): Promise<number>;
}

// ---------------------------------------------------------------- idempotency

export interface StoredResponse {
  statusCode: number;
  body: unknown;
}

export type IdempotencyBegin =
  | { outcome: 'started' }
  | { outcome: 'replay'; response: StoredResponse }
  | { outcome: 'conflict' }
  | { outcome: 'in_progress' };

export interface IdempotencyRef {
  /** Whose key space (the tenant id). */
  scope: string;
  key: string;
}

export interface IdempotencyStore {
  /**
   * Atomically reserves (scope, key) for a request whose body hashes to
   * `requestHash`. An existing live record answers replay (same hash, completed),
   * conflict (different hash) or in_progress (same hash, not completed).
   */
  beginIdempotent(
    ref: IdempotencyRef,
    options: { requestHash: string; now: number; ttlMs: number },
  ): Promise<IdempotencyBegin>;
  /** Stores the response that later retries replay. */
  completeIdempotent(ref: IdempotencyRef, response: StoredResponse): Promise<void>;
  /** Drops an uncompleted reservation so a retry can run again (unexpected errors). */
  abandonIdempotent(ref: IdempotencyRef): Promise<void>;
}

/** Everything persistent, as one adapter (SQLite file or DynamoDB table). */
export interface Store
  extends TenantStore,
    ApiKeyStore,
    CreditLedger,
    JobStore,
    LimitStore,
    IdempotencyStore,
    AuditLog,
    WebhookStore,
    OutboxStore,
    BatchStore {
  /** Brings the schema to the current version; safe to run repeatedly. */
  migrate(): Promise<void>;
  /** Cheap round trip proving the store answers. */
  ping(): Promise<void>;
  /**
   * Deletes what no longer counts at `now`: expired idempotency records, rate buckets
   * that have refilled (an absent bucket limits the same) and quota counters of months
   * before the previous one. Returns the rows deleted; DynamoDB's TTL does this by
   * itself, so its store deletes nothing here.
   */
  purgeExpired(now: number): Promise<number>;
  close(): Promise<void>;
}

// ---------------------------------------------------------------- audit log

/** What operators did, e.g. `tenant.created`, `key.revoked`, `credits.added`. */
export type AuditAction =
  | 'tenant.created'
  | 'tenant.suspended'
  | 'tenant.activated'
  | 'tenant.cancelled'
  | 'tenant.plan_changed'
  | 'key.created'
  | 'key.revoked'
  | 'credits.added';

export interface AuditEntry {
  /** Unique id; also breaks ties between entries of the same millisecond. */
  auditId: string;
  at: number;
  /** Who acted, e.g. `cli:alice`. */
  actor: string;
  action: AuditAction;
  /** The tenant the action concerns. */
  tenantId: string;
  /** What was acted on: the tenant id, key id or ledger entry id. */
  target: string;
  /** Action-specific facts (amounts, old and new values); never secrets. */
  details: Record<string, unknown>;
}

export interface AuditLog {
  /** Appends one entry; entries are never changed or removed. */
  appendAudit(entry: AuditEntry): Promise<void>;
  /** Newest first: one tenant's entries, or everyone's when `tenantId` is absent. */
  listAudit(options: { tenantId?: string; limit: number }): Promise<AuditEntry[]>;
}

// ---------------------------------------------------------------- webhooks, outbox, batches

export type WebhookEventType =
  | 'video.completed'
  | 'video.failed'
  | 'video.progress'
  | 'batch.completed'
  | 'credits.low';

export interface WebhookEndpoint {
  /** `wh_<hex>`. */
  endpointId: string;
  tenantId: string;
  url: string;
  events: WebhookEventType[];
  /**
   * `whsec_<base64>`: kept in clear because every delivery is signed with it. Empty
   * for a job's one-off endpoint, which is signed with the tenant's registered secrets.
   */
  secret: string;
  /** The secret before the last rotation; it also signs until `previousSecretExpiresAt`. */
  previousSecret: string | null;
  previousSecretExpiresAt: number | null;
  status: 'enabled' | 'disabled';
  /** Why the gateway disabled it (e.g. the receiver answered 410). */
  disabledReason: string | null;
  /**
   * Set for the one-off endpoint of a generate request's `webhook_url` (id
   * `whjob_<jobId>`): it hears only that job's events and is not a registered endpoint.
   */
  jobId: string | null;
  createdAt: number;
  updatedAt: number;
}

export type EndpointPatch = Partial<
  Pick<
    WebhookEndpoint,
    | 'secret'
    | 'previousSecret'
    | 'previousSecretExpiresAt'
    | 'status'
    | 'disabledReason'
    | 'updatedAt'
  >
>;

export interface WebhookStore {
  /** Inserts an endpoint; throws AppError `not_found` for an unknown tenant. */
  createEndpoint(endpoint: WebhookEndpoint): Promise<void>;
  getEndpoint(endpointId: string): Promise<WebhookEndpoint | null>;
  /**
   * A tenant's registered endpoints, oldest first: never the one-off endpoints of jobs
   * (`jobId` set), so their number does not grow with the tenant's videos.
   */
  listEndpoints(tenantId: string): Promise<WebhookEndpoint[]>;
  /** Applies the patch; throws AppError `not_found` for an unknown endpoint. */
  updateEndpoint(endpointId: string, patch: EndpointPatch): Promise<WebhookEndpoint>;
  /** Removes the endpoint (missing is fine); its delivery log stays. */
  deleteEndpoint(endpointId: string): Promise<void>;
}

export interface DeliveryAttempt {
  at: number;
  latencyMs: number;
  /** HTTP status of the answer; null when none came (DNS, refused address, timeout). */
  statusCode: number | null;
  /** At most 256 bytes of the answer's body: receivers' pages are not ours to keep. */
  responseBody: string;
  error: string | null;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

/** One event for one endpoint: the outbox row and, once tried, its delivery log. */
export interface Delivery {
  /** `<eventId>@<endpointId>`, so enqueueing an event twice writes it once. */
  deliveryId: string;
  /** Sent as `webhook-id`: the same on every retry and replay; receivers dedupe on it. */
  eventId: string;
  eventType: WebhookEventType;
  tenantId: string;
  endpointId: string;
  /** The JSON body, exactly as signed and sent. */
  payload: string;
  status: DeliveryStatus;
  /** Every attempt so far, oldest first (bounded by the retry schedule). */
  attempts: DeliveryAttempt[];
  /** When the worker should next try; null once delivered or given up. */
  nextAttemptAt: number | null;
  createdAt: number;
  updatedAt: number;
  /** Incremented by every write; the basis of optimistic concurrency. */
  version: number;
}

export type DeliveryPatch = Partial<
  Pick<Delivery, 'status' | 'attempts' | 'nextAttemptAt' | 'updatedAt'>
>;

export interface OutboxStore {
  /** Inserts the deliveries atomically; ids that exist already are left untouched. */
  enqueueDeliveries(deliveries: Delivery[]): Promise<void>;
  getDelivery(deliveryId: string): Promise<Delivery | null>;
  /** Pending deliveries with nextAttemptAt <= now, soonest first. */
  listDueDeliveries(options: { now: number; limit: number }): Promise<Delivery[]>;
  /** An endpoint's deliveries, newest first; `after` is a deliveryId of a previous page. */
  listDeliveries(options: {
    endpointId: string;
    after?: string;
    limit: number;
  }): Promise<Page<Delivery>>;
  /**
   * Applies the patch iff the stored version equals `expectVersion` (else AppError
   * `version_conflict`; `not_found` when missing), bumping the version.
   */
  updateDelivery(
    deliveryId: string,
    patch: DeliveryPatch,
    options: { expectVersion: number },
  ): Promise<Delivery>;
}

export interface Batch {
  /** `batch_<hex>`. */
  batchId: string;
  tenantId: string;
  /** The batch's jobs, in request order. */
  jobIds: string[];
  /** Credits reserved for the whole batch by its one charge entry. */
  cost: number;
  status: 'running' | 'completed';
  createdAt: number;
  updatedAt: number;
  completedAt: number | null;
  /** When the worker should next check whether every item ended; null once completed. */
  nextCheckAt: number | null;
  version: number;
}

export type BatchPatch = Partial<
  Pick<Batch, 'status' | 'completedAt' | 'nextCheckAt' | 'updatedAt'>
>;

/** Most jobs one batch may hold: its DynamoDB transaction must stay under 100 items. */
export const MAX_BATCH_JOBS = 90;

export interface BatchStore {
  /**
   * Inserts the batch, all its jobs and the ONE `charge` covering them in one atomic
   * step: everything or nothing (AppError `insufficient_credits` with nothing written).
   * At most MAX_BATCH_JOBS jobs.
   */
  createBatch(
    batch: Batch,
    options: { jobs: Job[]; charge: NewLedgerEntry },
  ): Promise<{ batch: Batch; balance: number }>;
  getBatch(batchId: string): Promise<Batch | null>;
  /** Running batches whose nextCheckAt <= now, soonest first. */
  listDueBatches(options: { now: number; limit: number }): Promise<Batch[]>;
  /**
   * Applies the patch iff the stored version equals `expectVersion` (else AppError
   * `version_conflict`), with outbox `deliveries` in the same atomic step.
   */
  updateBatch(
    batchId: string,
    patch: BatchPatch,
    options: { expectVersion: number; deliveries?: Delivery[] },
  ): Promise<Batch>;
}

// ---------------------------------------------------------------- blobs

export interface BlobInfo {
  bytes: number;
  contentType: string;
}

export interface BlobStore {
  /**
   * Streams `body` into `key` without buffering it whole. The object appears
   * atomically and only complete: if `expectedBytes` is given and differs, or the
   * stream errors, nothing is left at `key`. Overwriting an existing key is allowed.
   */
  put(
    key: string,
    body: Readable,
    meta: { contentType: string; expectedBytes?: number },
  ): Promise<BlobInfo>;
  head(key: string): Promise<BlobInfo | null>;
  /**
   * Streams the object (optionally a byte range, inclusive); null when missing.
   * `bytes` is always the WHOLE object's size (what Content-Range needs), also for a range.
   */
  get(
    key: string,
    range?: { start: number; end: number },
  ): Promise<(BlobInfo & { body: Readable }) | null>;
  /** A URL anyone may GET until it expires. */
  signedUrl(key: string, options: { expiresInSeconds: number; filename?: string }): Promise<string>;
  /** Removes the object; missing keys are fine. */
  delete(key: string): Promise<void>;
  ping(): Promise<void>;
}

// ---------------------------------------------------------------- providers

export interface InputReference {
  /** A public or data: URL of the reference image. */
  url?: string;
  /** Raw image bytes uploaded by the client. */
  data?: Buffer;
  contentType?: string;
}

export interface SubmitInput {
  /** Our job id, for logs and upstream metadata. */
  jobId: string;
  upstreamModel: string;
  prompt: string;
  seconds: number;
  size: string;
  inputReference?: InputReference;
  /** Upstream id of the video to remix, when the provider supports remixing. */
  remixOfProviderJobId?: string;
  /** How this route spells parameters upstream (the catalog route's `params`, e.g. `veo`). */
  paramStyle?: string;
  /** Where the upstream should POST its completion webhook, when webhooks are configured. */
  callbackUrl?: string;
}

/** What a route must be able to serve; checked before any charge. */
export type RouteParams = Pick<SubmitInput, 'upstreamModel' | 'paramStyle' | 'seconds' | 'size'>;

export interface WebhookRequest {
  /** The body exactly as received: signatures are computed over these bytes. */
  rawBody: Buffer;
  /** Lower-cased header names. */
  headers: Readonly<Record<string, string | undefined>>;
  now: number;
}

export interface ProviderJobStatus {
  state: JobState;
  /** Whole percent, 0..100. */
  progress: number;
  /** The upstream's own status word. */
  providerStatus: string;
  error?: JobError;
}

export interface ProviderDownload {
  body: Readable;
  contentType: string;
  /** Length announced by the upstream, if any; used to detect truncation. */
  bytes?: number;
}

export interface VideoProvider {
  readonly id: string;
  readonly capabilities: {
    remix: boolean;
    inputReference: boolean;
    /** Resubmitting a job whose submit outcome is unknown cannot bill twice. */
    idempotentSubmit: boolean;
  };
  /** Starts an upstream job. Throws ProviderError (with `certain`) on failure. */
  submit(input: SubmitInput): Promise<{ providerJobId: string }>;
  status(providerJobId: string): Promise<ProviderJobStatus>;
  /**
   * Streams a finished variant; null when the upstream has no such variant. Failures are
   * ProviderErrors: 409 retryable while not ready, 410 (not retryable) once the upstream
   * deleted the output, 404 for an unknown job.
   */
  download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null>;
  cancel?(providerJobId: string): Promise<void>;
  /**
   * Pure check (no I/O) that this route can serve the parameters; throws AppError
   * `validation_error` naming the allowed values otherwise. Runs before charging, and at
   * start-up over every catalog entry.
   */
  checkParams?(params: RouteParams): void;
  /**
   * Verifies an upstream webhook on its raw body and returns the upstream job it
   * concerns. Throws ProviderError 401 (certain, not retryable) for a missing, wrong or
   * stale signature.
   */
  verifyWebhook?(request: WebhookRequest): Promise<{ providerJobId: string }>;
  /**
   * The id this upstream's webhooks name a job by, when it differs from the
   * providerJobId (fal's webhooks carry the request id alone).
   */
  webhookIdOf?(providerJobId: string): string;
  /** For operators: can we reach the upstream, and does it accept our key? */
  check?(): Promise<{ reachable: boolean; authenticated: boolean; detail: string }>;
}
