import type { Services } from '../services.ts';

/**
 * One tick of the job pipeline: advances every due job, at most `concurrency` at a
 * time. Returns how many jobs it looked at. Stateless, so a timer (single process)
 * or a scheduled function (Lambda) can drive it.
 */
export async function advanceJobs(
  services: Pick<Services, 'store' | 'pipeline' | 'logger'>,
  options: { now: number; concurrency: number; batchSize: number },
): Promise<number> {
  const due = await services.store.listDueJobs({ now: options.now, limit: options.batchSize });
  let next = 0;
  const lane = async () => {
    while (next < due.length) {
      const job = due[next++];
      if (!job) break;
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

/** Runs ticks back to back (no overlap) until stopped; `stop()` waits for the tick under way. */
export function startWorker(services: Services): { stop(): Promise<void> } {
  const { intervalMs, concurrency, batchSize } = services.config.worker;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = advanceJobs(services, { now: services.clock.now(), concurrency, batchSize })
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
