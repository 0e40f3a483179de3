/**
 * Decorators that report to `Metrics` around the ports, applied in services.ts, so
 * core and adapters stay free of prom-client. Each wraps a few methods and forwards
 * everything else untouched (see `forwarding`).
 */

import { forwarding } from '../core/forwarding.ts';
import type {
  BlobStore,
  Job,
  JobPatch,
  NewLedgerEntry,
  PostResult,
  Store,
  VideoProvider,
} from '../core/ports.ts';
import type { Metrics } from './metrics.ts';

type AnyFn = (...args: unknown[]) => unknown;

/** `target` with the named methods it has wrapped; a wrapper gets the method bound to `target`. */
function decorate<T extends object>(
  target: T,
  wrappers: {
    [K in keyof T]?: NonNullable<T[K]> extends (...args: never[]) => unknown
      ? (original: NonNullable<T[K]>) => NonNullable<T[K]>
      : never;
  },
): T {
  const overrides: Record<string, unknown> = {};
  for (const [name, wrap] of Object.entries(wrappers) as Array<[string, (fn: AnyFn) => AnyFn]>) {
    const method = (target as Record<string, AnyFn | undefined>)[name];
    if (method) overrides[name] = wrap(method.bind(target));
  }
  return forwarding(target, overrides as { [K in keyof T]?: T[K] });
}

/** Counts job transitions and credits as they are committed. */
export function instrumentStore(store: Store, metrics: Metrics): Store {
  const countPost = (entry: NewLedgerEntry) => {
    if (entry.kind === 'charge') metrics.creditsCharged.inc(-entry.amount);
    else if (entry.kind === 'refund') metrics.creditsRefunded.inc(entry.amount);
    else if (entry.kind === 'grant') metrics.creditsGranted.inc(entry.amount);
  };
  return decorate(store, {
    createJob: (createJob) => async (job: Job, charge: NewLedgerEntry) => {
      const created = await createJob(job, charge);
      metrics.jobsCreated.inc({ model: job.model });
      countPost(charge);
      return created;
    },
    updateJob: (updateJob) => async (jobId, patch: JobPatch, options) => {
      // The version check lets exactly one writer end a job, so each end counts once.
      const updated = await updateJob(jobId, patch, options);
      if (patch.state === 'completed') metrics.jobsCompleted.inc();
      if (patch.state === 'failed')
        metrics.jobsFailed.inc({ code: patch.error?.code ?? 'unknown' });
      if (options.ledger) countPost(options.ledger);
      return updated;
    },
    post: (post) => async (entry: NewLedgerEntry) => {
      const result: PostResult = await post(entry);
      if (result.applied) countPost(entry);
      return result;
    },
    listDueJobs: (listDueJobs) => async (options) => {
      const due = await listDueJobs(options);
      metrics.jobsDue.set(due.length);
      return due;
    },
  });
}

/** Latency and errors of every upstream call, by provider and operation. */
export function instrumentProvider(provider: VideoProvider, metrics: Metrics): VideoProvider {
  const timed =
    <A extends unknown[], R>(operation: string) =>
    (call: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      const stop = metrics.upstreamDuration.startTimer({ provider: provider.id, operation });
      try {
        const result = await call(...args);
        stop({ outcome: 'ok' });
        return result;
      } catch (error) {
        stop({ outcome: 'error' });
        metrics.upstreamErrors.inc({ provider: provider.id, operation });
        throw error;
      }
    };
  return decorate(provider, {
    submit: timed('submit'),
    status: timed('status'),
    download: timed('download'),
    cancel: timed('cancel'),
  });
}

/** Bytes that reached storage; failed writes leave nothing, so they count apart. */
export function instrumentBlobStore(blobs: BlobStore, metrics: Metrics): BlobStore {
  return decorate(blobs, {
    put: (put) => async (key, body, meta) => {
      try {
        const info = await put(key, body, meta);
        metrics.blobBytesStored.inc(info.bytes);
        return info;
      } catch (error) {
        metrics.blobPutErrors.inc();
        throw error;
      }
    },
  });
}
