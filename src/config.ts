import { resolve } from 'node:path';
import { DEFAULT_CATALOG_PATH } from './core/catalog.ts';
import { MAX_BATCH_JOBS } from './core/ports.ts';

/** Every setting the gateway reads, from the environment, once, at start. */
export interface Config {
  port: number;
  host: string;
  /** Base of the URLs we hand out (signed file links). */
  publicUrl: string;
  dataDir: string;
  store: 'sqlite' | 'dynamodb';
  sqlitePath: string;
  /** DynamoDB table of the single-table design (store `dynamodb`). */
  dynamodbTable: string;
  blobs: 'fs' | 's3';
  s3: {
    bucket: string;
    /** Folder all objects live under. */
    prefix: string;
    /** Path-style addressing, for S3-compatible servers (s3rver, MinIO). */
    forcePathStyle: boolean;
  };
  /** HMAC secret of signed file URLs; generated into the data dir when unset. */
  signingSecret: string | null;
  /** When set, `GET /metrics` answers only `Authorization: Bearer <token>`. */
  metricsToken: string | null;
  catalogPath: string;
  simulatedSeconds: number;
  /** Sample files the simulated provider serves; null means the repository's `assets/`. */
  assetsDir: string | null;
  /** Whether the built-in simulated provider serves models: `auto` = only when no real upstream is configured. */
  simulated: boolean;
  /** Upstreams, each configured when its key is set. */
  upstreams: {
    openai: {
      apiKey: string;
      baseUrl?: string;
      apiKeyHeader?: string;
      webhookSecret?: string;
      /** Per-request timeout: cuts a hung status call or a download that never starts. */
      timeoutMs?: number;
    } | null;
    openrouter: { apiKey: string; baseUrl?: string; webhookSecret?: string } | null;
    fal: { apiKey: string; baseUrl?: string; jwksUrl?: string } | null;
    replicate: { apiKey: string; baseUrl?: string; webhookSecret?: string } | null;
  };
  urlTtlSeconds: number;
  corsOrigins: string[] | '*';
  logLevel: string;
  idempotencyTtlSeconds: number;
  /** Ask upstreams to POST completion webhooks to `publicUrl` (it must be reachable from them). */
  upstreamWebhooks: boolean;
  /** Create a demo tenant (and print its key) when the store has none yet. */
  demo: boolean;
  worker: {
    enabled: boolean;
    intervalMs: number;
    concurrency: number;
    batchSize: number;
    /** Most jobs per second the worker advances (polls) per provider; 0 means unlimited. */
    providerPollRate: number;
    /** Longest one scheduled worker invocation (Lambda) keeps ticking. */
    budgetMs: number;
  };
  jobs: {
    pollIntervalMs: number;
    leaseMs: number;
    submitTimeoutMs: number;
    deadlineMs: number;
    maxCheckFailures: number;
    maxBackoffMs: number;
  };
  /** Tenant webhooks and batches. */
  webhooks: {
    /** Hosts webhooks may reach although private (and over http): development and tests. */
    allowHosts: string[];
    timeoutMs: number;
    /** How long a rotated-out secret keeps signing. */
    rotationOverlapMs: number;
    lowCreditThreshold: number;
    batchMaxItems: number;
  };
}

type Env = Record<string, string | undefined>;

export class ConfigError extends Error {}

function int(env: Env, name: string, fallback: number, min = 0): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    throw new ConfigError(`${name} must be a number >= ${min}, got "${raw}"`);
  }
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name] ?? fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${raw}"`);
  }
  return raw as T;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

/** A setting that must be given when `needed`; otherwise `fallback`. */
function required(env: Env, name: string, needed: boolean, fallback: string): string {
  const raw = env[name];
  if (raw) return raw;
  if (needed && !fallback) throw new ConfigError(`${name} must be set`);
  return fallback;
}

/** Optional settings, dropped when unset so adapters apply their own defaults. */
function optional<K extends string>(
  entries: Record<K, string | undefined>,
): Partial<Record<K, string>> {
  return Object.fromEntries(Object.entries(entries).filter(([, v]) => v)) as Partial<
    Record<K, string>
  >;
}

function loadUpstreams(env: Env): Config['upstreams'] {
  const openaiTimeoutMs = int(env, 'OPENAI_TIMEOUT_MS', 0, 0);
  return {
    openai: env.OPENAI_API_KEY
      ? {
          apiKey: env.OPENAI_API_KEY,
          ...optional({
            baseUrl: env.OPENAI_BASE_URL,
            apiKeyHeader: env.OPENAI_API_KEY_HEADER,
            webhookSecret: env.OPENAI_WEBHOOK_SECRET,
          }),
          ...(openaiTimeoutMs > 0 ? { timeoutMs: openaiTimeoutMs } : {}),
        }
      : null,
    openrouter: env.OPENROUTER_API_KEY
      ? {
          apiKey: env.OPENROUTER_API_KEY,
          ...optional({
            baseUrl: env.OPENROUTER_BASE_URL,
            webhookSecret: env.OPENROUTER_WEBHOOK_SECRET,
          }),
        }
      : null,
    fal: env.FAL_KEY
      ? {
          apiKey: env.FAL_KEY,
          ...optional({ baseUrl: env.FAL_BASE_URL, jwksUrl: env.FAL_JWKS_URL }),
        }
      : null,
    replicate: env.REPLICATE_API_TOKEN
      ? {
          apiKey: env.REPLICATE_API_TOKEN,
          ...optional({
            baseUrl: env.REPLICATE_BASE_URL,
            webhookSecret: env.REPLICATE_WEBHOOK_SECRET,
          }),
        }
      : null,
  };
}

export function loadConfig(env: Env = process.env): Config {
  const port = int(env, 'PORT', 8080);
  const dataDir = resolve(env.REELPOSTLY_DATA_DIR || './data');
  const origins = env.REELPOSTLY_CORS_ORIGINS || '*';
  const upstreams = loadUpstreams(env);
  const simulatedMode = oneOf(
    env,
    'REELPOSTLY_SIMULATED',
    ['auto', 'true', 'false'] as const,
    'auto',
  );
  const store = oneOf(env, 'REELPOSTLY_STORE', ['sqlite', 'dynamodb'] as const, 'sqlite');
  const blobs = oneOf(env, 'REELPOSTLY_BLOBS', ['fs', 's3'] as const, 'fs');
  return Object.freeze({
    port,
    host: env.HOST || '0.0.0.0',
    publicUrl: (env.REELPOSTLY_PUBLIC_URL || `http://localhost:${port}`).replace(/\/+$/, ''),
    dataDir,
    store,
    sqlitePath: resolve(env.REELPOSTLY_SQLITE_PATH || `${dataDir}/reelpostly.db`),
    dynamodbTable: required(env, 'REELPOSTLY_DYNAMODB_TABLE', store === 'dynamodb', 'reelpostly'),
    blobs,
    s3: {
      bucket: required(env, 'REELPOSTLY_S3_BUCKET', blobs === 's3', ''),
      prefix: env.REELPOSTLY_S3_PREFIX || 'videos-store',
      forcePathStyle: bool(env, 'REELPOSTLY_S3_FORCE_PATH_STYLE', false),
    },
    signingSecret: env.REELPOSTLY_SIGNING_SECRET || null,
    metricsToken: env.REELPOSTLY_METRICS_TOKEN || null,
    catalogPath: resolve(env.REELPOSTLY_CATALOG || DEFAULT_CATALOG_PATH),
    simulatedSeconds: int(env, 'REELPOSTLY_SIMULATED_SECONDS', 8),
    assetsDir: env.REELPOSTLY_ASSETS_DIR ? resolve(env.REELPOSTLY_ASSETS_DIR) : null,
    simulated:
      simulatedMode === 'auto'
        ? Object.values(upstreams).every((u) => u === null)
        : simulatedMode === 'true',
    upstreams,
    urlTtlSeconds: int(env, 'REELPOSTLY_URL_TTL_SECONDS', 7 * 24 * 3600, 1),
    corsOrigins:
      origins === '*'
        ? '*'
        : origins
            .split(',')
            .map((o) => o.trim())
            .filter(Boolean),
    logLevel: env.LOG_LEVEL || 'info',
    idempotencyTtlSeconds: int(env, 'REELPOSTLY_IDEMPOTENCY_TTL_SECONDS', 24 * 3600, 1),
    demo: bool(env, 'REELPOSTLY_DEMO', true),
    upstreamWebhooks: bool(env, 'REELPOSTLY_UPSTREAM_WEBHOOKS', false),
    worker: {
      enabled: bool(env, 'REELPOSTLY_WORKER', true),
      intervalMs: int(env, 'REELPOSTLY_WORKER_INTERVAL_MS', 500, 10),
      concurrency: int(env, 'REELPOSTLY_WORKER_CONCURRENCY', 8, 1),
      batchSize: int(env, 'REELPOSTLY_WORKER_BATCH', 100, 1),
      providerPollRate: int(env, 'REELPOSTLY_PROVIDER_POLL_RATE', 0),
      budgetMs: int(env, 'REELPOSTLY_WORKER_BUDGET_MS', Number.POSITIVE_INFINITY),
    },
    jobs: {
      pollIntervalMs: int(env, 'REELPOSTLY_POLL_INTERVAL_MS', 1000, 10),
      leaseMs: int(env, 'REELPOSTLY_LEASE_MS', 30_000, 100),
      submitTimeoutMs: int(env, 'REELPOSTLY_SUBMIT_TIMEOUT_MS', 60_000, 100),
      deadlineMs: int(env, 'REELPOSTLY_JOB_DEADLINE_SECONDS', 3600, 1) * 1000,
      maxCheckFailures: int(env, 'REELPOSTLY_MAX_CHECK_FAILURES', 8, 1),
      maxBackoffMs: int(env, 'REELPOSTLY_MAX_BACKOFF_MS', 60_000, 10),
    },
    webhooks: {
      allowHosts: (env.REELPOSTLY_WEBHOOK_ALLOW_HOSTS ?? '')
        .split(',')
        .map((host) => host.trim().toLowerCase())
        .filter(Boolean),
      timeoutMs: int(env, 'REELPOSTLY_WEBHOOK_TIMEOUT_MS', 10_000, 100),
      rotationOverlapMs: int(env, 'REELPOSTLY_WEBHOOK_ROTATION_OVERLAP_HOURS', 24) * 3_600_000,
      lowCreditThreshold: int(env, 'REELPOSTLY_LOW_CREDIT_THRESHOLD', 10),
      batchMaxItems: Math.min(int(env, 'REELPOSTLY_BATCH_MAX_ITEMS', 50, 1), MAX_BATCH_JOBS),
    },
  });
}
