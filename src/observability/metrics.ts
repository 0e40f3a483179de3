import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { UnfinishedJobs } from '../core/ports.ts';

/** Request and upstream latencies span a cached status read (~1 ms) to a slow upstream. */
const LATENCY_BUCKETS = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/**
 * The gateway's Prometheus metrics, on a registry of their own (not prom-client's
 * global one), so several apps can live in one process, as tests build them.
 * Job and credit figures count what THIS process did since it started; Prometheus
 * sums them across instances and `rate()` survives restarts.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly httpDuration = new Histogram({
    name: 'reelpostly_http_request_duration_seconds',
    help: 'HTTP request duration by route pattern, method and status code',
    labelNames: ['route', 'method', 'status_code'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly jobsCreated = new Counter({
    name: 'reelpostly_jobs_created_total',
    help: 'Video jobs created (and charged)',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });

  readonly jobsCompleted = new Counter({
    name: 'reelpostly_jobs_completed_total',
    help: 'Video jobs that ended completed, their video stored',
    registers: [this.registry],
  });

  readonly jobsFailed = new Counter({
    name: 'reelpostly_jobs_failed_total',
    help: 'Video jobs that ended failed (and were refunded), by error code',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly jobsDue = new Gauge({
    name: 'reelpostly_jobs_due',
    help: 'Jobs the last worker tick found due (capped by the worker batch size)',
    registers: [this.registry],
  });

  readonly upstreamDuration = new Histogram({
    name: 'reelpostly_upstream_request_duration_seconds',
    help: 'Upstream provider call duration (downloads: until the stream starts)',
    labelNames: ['provider', 'operation', 'outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });

  readonly upstreamErrors = new Counter({
    name: 'reelpostly_upstream_errors_total',
    help: 'Upstream provider calls that failed',
    labelNames: ['provider', 'operation'] as const,
    registers: [this.registry],
  });

  readonly creditsCharged = new Counter({
    name: 'reelpostly_credits_charged_total',
    help: 'Credits charged for jobs',
    registers: [this.registry],
  });

  readonly creditsRefunded = new Counter({
    name: 'reelpostly_credits_refunded_total',
    help: 'Credits refunded for failed, timed-out or cancelled jobs',
    registers: [this.registry],
  });

  readonly creditsGranted = new Counter({
    name: 'reelpostly_credits_granted_total',
    help: 'Credits granted by operators',
    registers: [this.registry],
  });

  readonly blobBytesStored = new Counter({
    name: 'reelpostly_blob_bytes_stored_total',
    help: 'Bytes written to the blob store (videos and their variants)',
    registers: [this.registry],
  });

  readonly blobPutErrors = new Counter({
    name: 'reelpostly_blob_put_errors_total',
    help: 'Blob store writes that failed (nothing was stored)',
    registers: [this.registry],
  });

  constructor() {
    const total = async (counter: Counter<string>) =>
      (await counter.get()).values.reduce((sum, value) => sum + value.value, 0);
    const { jobsCreated, jobsCompleted, jobsFailed } = this;
    new Gauge({
      name: 'reelpostly_jobs_in_flight',
      help: 'Jobs created by this process that have not ended in it (created - completed - failed)',
      registers: [this.registry],
      async collect() {
        const ended = (await total(jobsCompleted)) + (await total(jobsFailed));
        // Jobs created before a restart end here too: never report a negative count.
        this.set(Math.max(0, (await total(jobsCreated)) - ended));
      },
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'reelpostly_' });
  }

  /**
   * Reports `reelpostly_jobs{state}`, read from `count` at each scrape: the store's
   * figure, the same whichever instance is scraped. A failed read keeps the last values.
   */
  countJobsWith(count: () => Promise<UnfinishedJobs>, onError: (error: unknown) => void): void {
    new Gauge({
      name: 'reelpostly_jobs',
      help: 'Unfinished jobs in the store by state (queued, in_progress), all processes',
      labelNames: ['state'] as const,
      registers: [this.registry],
      async collect() {
        try {
          for (const [state, jobs] of Object.entries(await count())) this.set({ state }, jobs);
        } catch (error) {
          onError(error);
        }
      },
    });
  }

  /** The text exposition format Prometheus scrapes. */
  async exposition(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

export function createMetrics(): Metrics {
  return new Metrics();
}
