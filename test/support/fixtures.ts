import type { Job, NewLedgerEntry } from '../../src/core/ports.ts';

/** A queued, unsubmitted job as the stores receive it; tests override what they check. */
export function makeJob(
  jobId: string,
  tenantId: string,
  overrides: Partial<Job> = {},
  at: number = Date.UTC(2026, 0, 1),
): Job {
  return {
    jobId,
    tenantId,
    keyId: 'key_1',
    model: 'sora-2',
    provider: 'simulated',
    upstreamModel: 'sim-video-1',
    providerJobId: null,
    prompt: 'a lighthouse at dusk',
    seconds: 4,
    size: '720x1280',
    state: 'queued',
    progress: 0,
    providerStatus: 'queued',
    error: null,
    cost: 1,
    asset: null,
    remixedFromJobId: null,
    createdAt: at,
    updatedAt: at,
    completedAt: null,
    nextCheckAt: at,
    checkFailures: 0,
    leaseOwner: null,
    leaseUntil: 0,
    version: 1,
    ...overrides,
  };
}

/** The charge that pays for `job`, posted with it by createJob. */
export function chargeFor(job: Job): NewLedgerEntry {
  return {
    entryId: `charge:${job.jobId}`,
    tenantId: job.tenantId,
    kind: 'charge',
    amount: -job.cost,
    reason: 'video',
    jobId: job.jobId,
    createdAt: job.createdAt,
  };
}
