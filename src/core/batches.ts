import type { Catalog } from './catalog.ts';
import { AppError, isAppError } from './errors.ts';
import { newId, newVideoId } from './ids.ts';
import { newLeaseOwner } from './pipeline.ts';
import { type Batch, type Clock, type Job, MAX_BATCH_JOBS, type Store } from './ports.ts';
import { queuedJob, type Route, type VideoService, validatePrompt } from './videos.ts';
import type { WebhookService } from './webhooks.ts';

export interface BatchItemInput {
  prompt: string | undefined;
  model?: string;
  seconds?: number;
  size?: string;
}

export interface BatchOptions {
  /** Most items one batch may hold (`REELPOSTLY_BATCH_MAX_ITEMS`, at most MAX_BATCH_JOBS). */
  maxItems: number;
  submitTimeoutMs: number;
  /** How often the worker checks a running batch for completion. */
  checkIntervalMs: number;
  /** Submits run this many at a time. */
  submitConcurrency: number;
}

/**
 * Many videos in one request. Every item is validated (catalog and routes) before
 * anything is charged; then the batch, all its jobs and ONE charge for their total
 * are written in one atomic step (the store's `createBatch`), so a batch is paid in
 * full or not at all. Items are then submitted like single videos: one that cannot be
 * submitted fails and is refunded on its own (`refund:<jobId>`), like any failed job.
 */
export class BatchService {
  constructor(
    private readonly deps: {
      store: Store;
      catalog: Catalog;
      videos: VideoService;
      webhooks: WebhookService;
      clock: Clock;
      options: BatchOptions;
    },
  ) {}

  async create(input: {
    tenantId: string;
    keyId: string;
    items: BatchItemInput[] | undefined;
  }): Promise<{ batch: Batch; jobs: Job[]; balance: number }> {
    const { store, catalog, videos, clock, options } = this.deps;
    const max = Math.min(options.maxItems, MAX_BATCH_JOBS);
    if (!Array.isArray(input.items) || input.items.length === 0 || input.items.length > max) {
      throw new AppError('validation_error', `items must hold 1 to ${max} videos`, {
        param: 'items',
      });
    }
    const planned = input.items.map((item, index) => {
      try {
        const prompt = validatePrompt(item?.prompt);
        const resolved = catalog.resolve(item);
        return { prompt, resolved, routes: videos.routesFor(resolved, false) };
      } catch (error) {
        if (error instanceof AppError) {
          throw new AppError('validation_error', `items[${index}]: ${error.message}`, {
            param: `items[${index}].${error.param ?? 'prompt'}`,
            details: { ...error.details, index },
          });
        }
        throw error;
      }
    });
    const now = clock.now();
    const batchId = newId('batch');
    const owner = newLeaseOwner();
    // As for single videos: the lease covers the submit, the worker recovers a crash.
    const jobs: Job[] = planned.map(({ prompt, resolved, routes }) =>
      queuedJob({
        jobId: newVideoId(),
        tenantId: input.tenantId,
        keyId: input.keyId,
        prompt,
        resolved,
        route: routes[0] as Route,
        remixedFromJobId: null,
        now,
        leaseOwner: owner,
        submitTimeoutMs: options.submitTimeoutMs,
      }),
    );
    const cost = jobs.reduce((total, job) => total + job.cost, 0);
    const { batch, balance } = await store.createBatch(
      {
        batchId,
        tenantId: input.tenantId,
        jobIds: jobs.map((job) => job.jobId),
        cost,
        status: 'running',
        createdAt: now,
        updatedAt: now,
        completedAt: null,
        nextCheckAt: now + options.checkIntervalMs,
        version: 1,
      },
      {
        jobs,
        charge: {
          entryId: `charge:${batchId}`,
          tenantId: input.tenantId,
          kind: 'charge',
          amount: -cost,
          reason: `batch ${batchId}: ${jobs.length} videos`,
          jobId: null,
          createdAt: now,
        },
      },
    );
    const submitted = [...jobs];
    let next = 0;
    const lane = async () => {
      while (next < jobs.length) {
        const index = next++;
        const job = jobs[index] as Job;
        try {
          submitted[index] = await videos.submit(
            job,
            (planned[index] as { routes: Route[] }).routes,
          );
        } catch (error) {
          // Failed and refunded by submit; the batch reports it as a failed item.
          if (!isAppError(error, 'upstream_error')) throw error;
          submitted[index] = (await store.getJob(job.jobId)) ?? job;
        }
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(options.submitConcurrency, jobs.length) }, lane),
    );
    return { batch, jobs: submitted, balance };
  }

  /** The tenant's batch and its items' current states; `not_found` for anyone else's. */
  async get(tenantId: string, batchId: string): Promise<{ batch: Batch; jobs: Job[] }> {
    const batch = await this.deps.store.getBatch(batchId);
    if (!batch || batch.tenantId !== tenantId) {
      throw new AppError('not_found', `Batch not found: ${batchId}`);
    }
    return { batch, jobs: await this.jobsOf(batch) };
  }

  /**
   * One worker pass over running batches that are due: a batch whose items have all
   * ended is marked completed with its `batch.completed` event in the same write.
   */
  async checkDue(options: { now: number; limit: number }): Promise<number> {
    const { store, clock, webhooks } = this.deps;
    const due = await store.listDueBatches(options);
    for (const batch of due) {
      const jobs = await this.jobsOf(batch);
      const ended = jobs.every((job) => job.state === 'completed' || job.state === 'failed');
      const now = clock.now();
      try {
        if (!ended) {
          await store.updateBatch(
            batch.batchId,
            { nextCheckAt: now + this.deps.options.checkIntervalMs, updatedAt: now },
            { expectVersion: batch.version },
          );
          continue;
        }
        const deliveries = await webhooks.deliveriesFor({
          tenantId: batch.tenantId,
          type: 'batch.completed',
          eventId: `${batch.batchId}.batch.completed`,
          data: webhooks.batchCompletedData(batch, jobs),
        });
        await store.updateBatch(
          batch.batchId,
          { status: 'completed', completedAt: now, nextCheckAt: null, updatedAt: now },
          { expectVersion: batch.version, deliveries },
        );
      } catch (error) {
        // Another worker checked it first.
        if (!isAppError(error, 'version_conflict')) throw error;
      }
    }
    return due.length;
  }

  /** The batch's jobs that still exist (only ended jobs can be deleted). */
  private async jobsOf(batch: Batch): Promise<Job[]> {
    const jobs = await Promise.all(batch.jobIds.map((jobId) => this.deps.store.getJob(jobId)));
    return jobs.filter((job): job is Job => job !== null);
  }
}
