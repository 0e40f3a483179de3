import type { Clock } from '../core/ports.ts';
import type { Services } from '../services.ts';
import { runOutbox } from './deliveries.ts';

/**
 * A token bucket per provider: at most `ratePerSecond` job advances (each at most one
 * upstream status call) per provider per second, bursting to one second's worth, so a
 * backlog of due jobs never hammers an upstream into rate-limiting us. Rate 0 = no limit.
 */
export class ProviderPollLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly ratePerSecond: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one token of `provider`'s bucket; false when it is empty (advance the job later). */
  tryTake(provider: string): boolean {
    if (this.ratePerSecond <= 0) return true;
    const now = this.clock.now();
    const burst = Math.max(1, this.ratePerSecond);
    const bucket = this.#buckets.get(provider) ?? { tokens: burst, at: now };
    bucket.tokens = Math.min(
      burst,
      bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * this.ratePerSecond,
    );
    bucket.at = now;
    this.#buckets.set(provider, bucket);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/**
 * One tick of the job pipeline: advances every due job, at most `concurrency` at a
 * time; a job whose provider's `limiter` bucket is empty stays due for a later tick.
 * Returns how many jobs it looked at. Stateless apart from the limiter, so a timer
 * (single process) or a scheduled function (Lambda) can drive it.
 */
export async function advanceJobs(
  services: Pick<Services, 'store' | 'pipeline' | 'logger'>,
  options: {
    now: number;
    concurrency: number;
    batchSize: number;
    limiter?: ProviderPollLimiter;
    /** Once true, lanes finish their current job and take no more (graceful shutdown). */
    stopping?: () => boolean;
  },
): Promise<number> {
  const due = await services.store.listDueJobs({ now: options.now, limit: options.batchSize });
  let next = 0;
  const lane = async () => {
    // Jobs never started stay due and unleased: another instance takes them at once.
    while (next < due.length && !options.stopping?.()) {
      const job = due[next++];
      if (!job) break;
      if (options.limiter && !options.limiter.tryTake(job.provider)) continue;
      try {
        await services.pipeline.advance(job.jobId);
      } catch (error) {
        services.logger.error({ jobId: job.jobId, err: error }, 'advancing job failed');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency, due.length) }, lane));
  return due.length;
}

/** How often a worker deletes expired idempotency records and idle limit rows. */
const PURGE_EVERY_MS = 10 * 60_000;

/**
 * Runs ticks back to back (no overlap) until stopped. `stop()` lets the jobs under way
 * finish (each step ends by releasing its lease) and starts no others.
 */
export function startWorker(services: Services): { stop(): Promise<void> } {
  const { intervalMs, concurrency, batchSize, providerPollRate } = services.config.worker;
  const limiter = new ProviderPollLimiter(providerPollRate, services.clock);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let purgedAt = Number.NEGATIVE_INFINITY;
  const tick = () => {
    running = advanceJobs(services, {
      now: services.clock.now(),
      concurrency,
      batchSize,
      limiter,
      stopping: () => stopped,
    })
      // Batch completion and webhook deliveries ride the same tick.
      .then(() => runOutbox(services, { now: services.clock.now(), concurrency, batchSize }))
      .then(async () => {
        const now = services.clock.now();
        if (now - purgedAt < PURGE_EVERY_MS) return;
        purgedAt = now;
        const deleted = await services.store.purgeExpired(now);
        if (deleted > 0)
          services.logger.info({ deleted }, 'purged expired limit and idempotency rows');
      })
      .then(() => {
        if (!stopped) timer = setTimeout(tick, intervalMs);
      })
      .catch((error: unknown) => {
        services.logger.error({ err: error }, 'worker tick failed');
        if (!stopped) timer = setTimeout(tick, intervalMs);
      });
  };
  timer = setTimeout(tick, 0);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
