import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Logger, pino } from 'pino';
import { FsBlobStore } from './blobs/fs/fs-blob-store.ts';
import { createS3BlobStore } from './blobs/s3/s3-blob-store.ts';
import type { Config } from './config.ts';
import { Access } from './core/access.ts';
import { Accounts } from './core/accounts.ts';
import { BatchService } from './core/batches.ts';
import { Catalog } from './core/catalog.ts';
import { JobPipeline } from './core/pipeline.ts';
import type { BlobStore, Clock, Store, VideoProvider } from './core/ports.ts';
import { VideoService } from './core/videos.ts';
import { WebhookUrlPolicy } from './core/webhook-safety.ts';
import { WebhookService, withWebhookEvents } from './core/webhooks.ts';
import {
  instrumentBlobStore,
  instrumentProvider,
  instrumentStore,
} from './observability/instrument.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { FalProvider } from './providers/fal/fal-provider.ts';
import { OpenAICompatibleProvider } from './providers/openai/openai-provider.ts';
import { OpenRouterProvider } from './providers/openrouter/openrouter-provider.ts';
import { ReplicateProvider } from './providers/replicate/replicate-provider.ts';
import { defaultAssetsDir, SimulatedProvider } from './providers/simulated/simulated-provider.ts';
import { createDynamoStore } from './stores/dynamodb/dynamo-store.ts';
import { createSqliteStore } from './stores/sqlite/sqlite-store.ts';
import { WebhookDispatcher } from './worker/deliveries.ts';

export interface Services {
  config: Config;
  clock: Clock;
  logger: Logger;
  store: Store;
  blobs: BlobStore;
  /** Set when files are served by this gateway (local disk) rather than by S3. */
  fileServer: FsBlobStore | null;
  catalog: Catalog;
  providers: ReadonlyMap<string, VideoProvider>;
  access: Access;
  accounts: Accounts;
  pipeline: JobPipeline;
  videos: VideoService;
  /** Tenant webhooks, their outbox sender, and batches. */
  webhooks: WebhookService;
  dispatcher: WebhookDispatcher;
  batches: BatchService;
  /** Prometheus metrics of this process; store, blobs and providers report to it. */
  metrics: Metrics;
  close(): Promise<void>;
}

export const systemClock: Clock = { now: () => Date.now() };

/** The only place adapters are chosen. */
export function createServices(
  config: Config,
  overrides: {
    clock?: Clock;
    logger?: Logger;
    providers?: VideoProvider[];
    /** Who operator actions are audited as, e.g. `cli:alice`. */
    actor?: string;
  } = {},
): Services {
  const clock = overrides.clock ?? systemClock;
  const logger = overrides.logger ?? pino({ level: config.logLevel });
  mkdirSync(config.dataDir, { recursive: true });

  const catalog = Catalog.load(config.catalogPath);
  // The AWS SDK reads region, credentials and AWS_ENDPOINT_URL_{DYNAMODB,S3} itself.
  const metrics = createMetrics();
  const store = instrumentStore(
    config.store === 'dynamodb'
      ? createDynamoStore({ tableName: config.dynamodbTable })
      : createSqliteStore({ path: config.sqlitePath }),
    metrics,
  );
  metrics.countJobsWith(
    () => store.countUnfinishedJobs(),
    (error) => logger.warn({ err: error }, 'counting jobs for /metrics failed'),
  );
  const fileServer =
    config.blobs === 'fs'
      ? new FsBlobStore({
          dir: join(config.dataDir, 'blobs'),
          publicBaseUrl: config.publicUrl,
          secret: config.signingSecret ?? persistentSecret(config.dataDir),
          clock,
        })
      : null;
  const blobs: BlobStore = instrumentBlobStore(
    fileServer ??
      createS3BlobStore({
        bucket: config.s3.bucket,
        prefix: config.s3.prefix,
        clientConfig: { forcePathStyle: config.s3.forcePathStyle },
      }),
    metrics,
  );

  const providers = new Map(
    (overrides.providers ?? configuredProviders(config, clock)).map((p) => [
      p.id,
      instrumentProvider(p, metrics),
    ]),
  );
  warnUnservableRoutes(catalog, providers, logger);

  // Job writes go through the outbox decorator, so a job's end and its
  // webhook events commit together.
  const policy = new WebhookUrlPolicy({ allowHosts: config.webhooks.allowHosts });
  const webhooks = new WebhookService({
    store,
    clock,
    policy,
    logger,
    options: {
      rotationOverlapMs: config.webhooks.rotationOverlapMs,
      lowCreditThreshold: config.webhooks.lowCreditThreshold,
    },
  });
  const evented = withWebhookEvents(store, webhooks);

  const pipeline = new JobPipeline({
    store: evented,
    blobs,
    providers,
    clock,
    logger,
    options: {
      pollIntervalMs: config.jobs.pollIntervalMs,
      leaseMs: config.jobs.leaseMs,
      jobDeadlineMs: config.jobs.deadlineMs,
      maxCheckFailures: config.jobs.maxCheckFailures,
      maxBackoffMs: config.jobs.maxBackoffMs,
    },
  });
  const videos = new VideoService({
    store: evented,
    blobs,
    catalog,
    providers,
    pipeline,
    clock,
    webhooks,
    options: {
      pollIntervalMs: config.jobs.pollIntervalMs,
      submitTimeoutMs: config.jobs.submitTimeoutMs,
      urlTtlSeconds: config.urlTtlSeconds,
      upstreamWebhookBaseUrl: config.upstreamWebhooks ? config.publicUrl : null,
    },
  });

  return {
    config,
    clock,
    logger,
    store,
    blobs,
    fileServer,
    catalog,
    providers,
    access: new Access(store, catalog, clock),
    accounts: new Accounts(store, catalog, clock, overrides.actor),
    pipeline,
    videos,
    metrics,
    webhooks,
    dispatcher: new WebhookDispatcher({
      store,
      clock,
      logger,
      policy,
      options: { timeoutMs: config.webhooks.timeoutMs, leaseMs: config.webhooks.timeoutMs * 3 },
    }),
    batches: new BatchService({
      store: evented,
      catalog,
      videos,
      webhooks,
      clock,
      options: {
        maxItems: config.webhooks.batchMaxItems,
        submitTimeoutMs: config.jobs.submitTimeoutMs,
        checkIntervalMs: config.jobs.pollIntervalMs,
        submitConcurrency: 4,
      },
    }),
    close: () => store.close(),
  };
}

/** Every upstream whose key is set, plus the simulated one when enabled. */
function configuredProviders(config: Config, clock: Clock): VideoProvider[] {
  const { openai, openrouter, fal, replicate } = config.upstreams;
  const list: VideoProvider[] = [];
  if (openai) list.push(new OpenAICompatibleProvider({ ...openai, clock }));
  if (openrouter) list.push(new OpenRouterProvider({ ...openrouter, clock }));
  if (fal) list.push(new FalProvider({ ...fal, clock }));
  if (replicate) list.push(new ReplicateProvider({ ...replicate, clock }));
  if (config.simulated) {
    list.push(
      new SimulatedProvider({
        clock,
        durationMs: config.simulatedSeconds * 1000,
        assetsDir: config.assetsDir ?? defaultAssetsDir(),
      }),
    );
  }
  return list;
}

/**
 * Start-up check of the catalog against the configured adapters: a route that cannot
 * serve some allowed seconds/size is skipped for those requests (the next route serves
 * them, or the request is refused before charging); operators should know.
 */
function warnUnservableRoutes(
  catalog: Catalog,
  providers: ReadonlyMap<string, VideoProvider>,
  logger: Logger,
): void {
  for (const model of catalog.models.values()) {
    for (const route of model.routes) {
      const provider = providers.get(route.provider);
      if (!provider?.checkParams) continue;
      const refused: string[] = [];
      for (const seconds of model.seconds) {
        for (const size of model.sizes) {
          try {
            provider.checkParams({
              upstreamModel: route.upstreamModel,
              ...(route.params ? { paramStyle: route.params } : {}),
              seconds,
              size,
            });
          } catch {
            refused.push(`${seconds}s ${size}`);
          }
        }
      }
      if (refused.length > 0) {
        logger.info(
          { model: model.id, provider: route.provider, refused },
          'route skipped for some allowed values',
        );
      }
    }
  }
}

/** Keeps signed URLs valid across restarts without asking the operator for a secret. */
function persistentSecret(dataDir: string): string {
  const path = join(dataDir, 'signing-secret');
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    try {
      writeFileSync(path, `${randomBytes(32).toString('base64url')}\n`, {
        mode: 0o600,
        flag: 'wx',
      });
    } catch (error) {
      // Another process (the CLI beside the server) created it first: use theirs.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    return readFileSync(path, 'utf8').trim();
  }
}
