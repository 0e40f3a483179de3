import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { pipeline as pipe, Transform } from 'node:stream';
import { AppError, isAppError, ProviderError } from './errors.ts';
import type {
  BlobStore,
  Clock,
  Job,
  JobError,
  JobPatch,
  NewLedgerEntry,
  ProviderDownload,
  Store,
  StoredAsset,
  VideoProvider,
  VideoVariant,
} from './ports.ts';

export interface PipelineOptions {
  /** Pause between upstream status checks of one job. */
  pollIntervalMs: number;
  /** How long one advance may hold a job (covers the longest download). */
  leaseMs: number;
  /** A job not ended this long after creation fails and is refunded. */
  jobDeadlineMs: number;
  /** Consecutive failed checks/downloads after which the job fails and is refunded. */
  maxCheckFailures: number;
  /** Ceiling of the backoff between failed checks. */
  maxBackoffMs: number;
}

export interface PipelineLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

const CONTENT: Record<VideoVariant, { ext: string; contentType: string }> = {
  video: { ext: 'mp4', contentType: 'video/mp4' },
  thumbnail: { ext: 'webp', contentType: 'image/webp' },
  spritesheet: { ext: 'jpg', contentType: 'image/jpeg' },
};
const EXTRA_VARIANTS: VideoVariant[] = ['thumbnail', 'spritesheet'];
const PROCESS_ID = `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
let leaseCounter = 0;

/** A lease owner unique to one attempt, so two attempts in one process exclude each other too. */
export function newLeaseOwner(): string {
  leaseCounter += 1;
  return `${PROCESS_ID}:${leaseCounter}`;
}

export function blobKey(job: Pick<Job, 'tenantId' | 'jobId'>, variant: VideoVariant): string {
  return `videos/${job.tenantId}/${job.jobId}/${variant}.${CONTENT[variant].ext}`;
}

export function refundEntry(job: Job, reason: string, now: number): NewLedgerEntry {
  return {
    entryId: `refund:${job.jobId}`,
    tenantId: job.tenantId,
    kind: 'refund',
    amount: job.cost,
    reason,
    jobId: job.jobId,
    createdAt: now,
  };
}

/**
 * Moves one job forward: submit (recovery), poll, download into our storage, or
 * fail-and-refund. Each step runs under the job's lease and ends with a versioned
 * write, so however many workers and status requests race, a job is stored once and
 * refunded at most once.
 */
export class JobPipeline {
  constructor(
    private readonly deps: {
      store: Store;
      blobs: BlobStore;
      providers: ReadonlyMap<string, VideoProvider>;
      clock: Clock;
      logger: PipelineLogger;
      options: PipelineOptions;
    },
  ) {}

  /** Advances the job if nobody else holds it; returns its latest known state. */
  async advance(jobId: string): Promise<Job | null> {
    const { store, clock, options } = this.deps;
    const owner = newLeaseOwner();
    const claimed = await store.claimJob(jobId, {
      owner,
      leaseMs: options.leaseMs,
      now: clock.now(),
    });
    if (!claimed) return store.getJob(jobId);
    try {
      return await this.step(claimed, owner);
    } catch (error) {
      if (isAppError(error, 'version_conflict')) return store.getJob(jobId);
      throw error;
    }
  }

  private async step(job: Job, owner: string): Promise<Job> {
    const now = this.deps.clock.now();
    const provider = this.deps.providers.get(job.provider);
    if (!provider) {
      return this.fail(job, {
        code: 'provider_unavailable',
        message: 'The provider serving this job is not configured.',
      });
    }
    if (now - job.createdAt > this.deps.options.jobDeadlineMs) {
      if (job.providerJobId && provider.cancel) {
        await provider.cancel(job.providerJobId).catch((error: unknown) => {
          this.deps.logger.warn({ jobId: job.jobId, err: error }, 'cancel after deadline failed');
        });
      }
      return this.fail(job, { code: 'timeout', message: 'The video did not finish in time.' });
    }
    if (!job.providerJobId) return this.recoverSubmit(job, provider);

    let status: Awaited<ReturnType<VideoProvider['status']>>;
    try {
      status = await provider.status(job.providerJobId);
    } catch (error) {
      return this.checkFailed(job, error, 'status check failed');
    }
    if (status.state === 'failed') {
      return this.fail(
        job,
        status.error ?? { code: 'upstream_error', message: 'The provider failed the job.' },
      );
    }
    if (status.state !== 'completed') {
      return this.write(job, {
        state: status.state,
        progress: Math.max(job.progress, Math.min(99, Math.round(status.progress))),
        providerStatus: status.providerStatus,
        checkFailures: 0,
        nextCheckAt: now + this.deps.options.pollIntervalMs,
      });
    }
    const { job: held, result } = await this.keepLease(job, owner, () =>
      this.download(job, provider),
    );
    if (result.outcome === 'gone') {
      return this.fail(held, {
        code: 'asset_unavailable',
        message: 'The provider no longer has the finished video.',
      });
    }
    if (result.outcome === 'retry') return this.checkFailed(held, result.error, 'download failed');
    const done = await this.write(held, {
      state: 'completed',
      progress: 100,
      providerStatus: 'completed',
      asset: result.asset,
      completedAt: this.deps.clock.now(),
      nextCheckAt: null,
      checkFailures: 0,
    });
    this.deps.logger.info({ jobId: job.jobId, bytes: result.asset.bytes }, 'video stored');
    return done;
  }

  /**
   * Runs long work (downloads) while renewing the lease, so a crash frees the job
   * within one lease period yet a slow, healthy download is never taken over.
   * Returns the job at the version the renewals left it.
   */
  private async keepLease<T>(
    job: Job,
    owner: string,
    work: () => Promise<T>,
  ): Promise<{ job: Job; result: T }> {
    const { store, clock, options } = this.deps;
    let current = job;
    let renewing = Promise.resolve();
    const timer = setInterval(
      () => {
        renewing = renewing
          .then(async () => {
            const renewed = await store.claimJob(job.jobId, {
              owner,
              leaseMs: options.leaseMs,
              now: clock.now(),
            });
            if (renewed) current = renewed;
          })
          .catch((error: unknown) =>
            this.deps.logger.warn({ jobId: job.jobId, err: error }, 'lease renewal failed'),
          );
      },
      Math.max(50, Math.floor(options.leaseMs / 3)),
    );
    try {
      const result = await work();
      return { job: current, result };
    } finally {
      clearInterval(timer);
      await renewing;
    }
  }

  /** Streams every variant into storage under keys derived from the job, so a rerun overwrites instead of duplicating. */
  private async download(
    job: Job,
    provider: VideoProvider,
  ): Promise<
    | { outcome: 'stored'; asset: StoredAsset }
    | { outcome: 'gone' }
    | { outcome: 'retry'; error: unknown }
  > {
    const providerJobId = job.providerJobId as string;
    const { logger } = this.deps;
    let bytes: number;
    try {
      const download = await provider.download(providerJobId, 'video');
      if (!download) return { outcome: 'gone' };
      ({ bytes } = await this.store(job, 'video', {
        ...download,
        contentType: CONTENT.video.contentType,
      }));
    } catch (error) {
      if (error instanceof ProviderError && !error.retryable) return { outcome: 'gone' };
      return { outcome: 'retry', error };
    }
    const keys: StoredAsset['keys'] = { video: blobKey(job, 'video') };
    for (const variant of EXTRA_VARIANTS) {
      try {
        const download = await provider.download(providerJobId, variant);
        if (!download) continue;
        await this.store(job, variant, download);
        keys[variant] = blobKey(job, variant);
      } catch (error) {
        logger.warn({ jobId: job.jobId, variant, err: error }, 'optional variant not stored');
      }
    }
    return { outcome: 'stored', asset: { keys, bytes, filename: `${job.jobId}.mp4` } };
  }

  /**
   * Streams one download into its blob. The adapters' timeouts end when the headers
   * arrive, so a body that stalls would hold the job (its lease renewed) forever: it is
   * cut when no byte arrives for a lease period, or when the job's deadline passes. The
   * body is always closed, even when the store fails before reading it.
   */
  private async store(job: Job, variant: VideoVariant, download: ProviderDownload) {
    const { blobs, clock, options } = this.deps;
    let lastByteAt = clock.now();
    const watched = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        lastByteAt = clock.now();
        callback(null, chunk);
      },
    });
    const watchdog = setInterval(
      () => {
        const now = clock.now();
        const reason =
          now - job.createdAt > options.jobDeadlineMs
            ? 'the job deadline passed'
            : now - lastByteAt > options.leaseMs
              ? `no bytes for ${options.leaseMs} ms`
              : null;
        if (reason) watched.destroy(new Error(`Download of ${variant} cut: ${reason}`));
      },
      Math.max(50, Math.floor(options.leaseMs / 3)),
    );
    // The store sees the body's errors through `watched`, which this pipe destroys with them.
    pipe(download.body, watched, () => {});
    try {
      return await blobs.put(blobKey(job, variant), watched, {
        contentType: download.contentType,
        ...(download.bytes === undefined ? {} : { expectedBytes: download.bytes }),
      });
    } finally {
      clearInterval(watchdog);
      download.body.destroy();
      watched.destroy();
    }
  }

  /** The submit's outcome is unknown (we crashed while submitting): resubmit only if that cannot bill twice. */
  private async recoverSubmit(job: Job, provider: VideoProvider): Promise<Job> {
    if (!provider.capabilities.idempotentSubmit) {
      return this.fail(job, {
        code: 'upstream_unknown',
        message: 'The submission to the provider was interrupted; the job was cancelled.',
      });
    }
    // A remix must be resubmitted as a remix; its source may have been deleted since.
    const remixOf = job.remixedFromJobId
      ? (await this.deps.store.getJob(job.remixedFromJobId))?.providerJobId
      : undefined;
    if (job.remixedFromJobId && !remixOf) {
      return this.fail(job, {
        code: 'upstream_unknown',
        message: 'The remix submission was interrupted and its source video is gone.',
      });
    }
    try {
      const { providerJobId } = await provider.submit({
        jobId: job.jobId,
        upstreamModel: job.upstreamModel,
        prompt: job.prompt,
        seconds: job.seconds,
        size: job.size,
        ...(remixOf ? { remixOfProviderJobId: remixOf } : {}),
      });
      return this.write(job, {
        providerJobId,
        providerStatus: 'queued',
        checkFailures: 0,
        nextCheckAt: this.deps.clock.now() + this.deps.options.pollIntervalMs,
      });
    } catch (error) {
      if (error instanceof ProviderError && error.certain && !error.retryable) {
        return this.fail(job, { code: 'upstream_error', message: error.message });
      }
      return this.checkFailed(job, error, 'resubmit failed');
    }
  }

  private async checkFailed(job: Job, error: unknown, what: string): Promise<Job> {
    const failures = job.checkFailures + 1;
    this.deps.logger.warn({ jobId: job.jobId, failures, err: error }, what);
    if (failures >= this.deps.options.maxCheckFailures) {
      return this.fail(job, {
        code: 'upstream_error',
        message: `The provider kept failing (${what}).`,
      });
    }
    const { pollIntervalMs, maxBackoffMs } = this.deps.options;
    const backoff = Math.min(maxBackoffMs, pollIntervalMs * 2 ** failures);
    const jittered = Math.round(backoff * (0.5 + Math.random()));
    return this.write(job, {
      checkFailures: failures,
      nextCheckAt: this.deps.clock.now() + jittered,
    });
  }

  /** Ends the job as failed and refunds it in the same atomic write. */
  async fail(job: Job, error: JobError): Promise<Job> {
    const now = this.deps.clock.now();
    const failed = await this.deps.store.updateJob(
      job.jobId,
      {
        state: 'failed',
        providerStatus: 'failed',
        error,
        nextCheckAt: null,
        leaseOwner: null,
        leaseUntil: 0,
        updatedAt: now,
      },
      { expectVersion: job.version, ledger: refundEntry(job, `job failed: ${error.code}`, now) },
    );
    this.deps.logger.info(
      { jobId: job.jobId, code: error.code, refunded: job.cost },
      'job failed, credits refunded',
    );
    return failed;
  }

  /** Writes the patch and releases the lease. */
  private write(job: Job, patch: JobPatch): Promise<Job> {
    return this.deps.store.updateJob(
      job.jobId,
      { ...patch, leaseOwner: null, leaseUntil: 0, updatedAt: this.deps.clock.now() },
      { expectVersion: job.version },
    );
  }
}

export function assertJobOwner(job: Job | null, tenantId: string, jobId: string): Job {
  if (!job || job.tenantId !== tenantId)
    throw new AppError('not_found', `Video not found: ${jobId}`);
  return job;
}
