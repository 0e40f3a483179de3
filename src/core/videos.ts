import type { Catalog } from './catalog.ts';
import { AppError, ProviderError } from './errors.ts';
import { newVideoId } from './ids.ts';
import { assertJobOwner, type JobPipeline, newLeaseOwner } from './pipeline.ts';
import type {
  BlobStore,
  Clock,
  InputReference,
  Job,
  Page,
  Store,
  VideoProvider,
  VideoVariant,
} from './ports.ts';

export const MAX_PROMPT_LENGTH = 32_000;

export interface GenerateInput {
  tenantId: string;
  keyId: string;
  prompt: string | undefined;
  model?: string;
  seconds?: number;
  size?: string;
  inputReference?: InputReference;
}

export interface VideoServiceOptions {
  pollIntervalMs: number;
  /** How long a submit may take before the worker treats it as interrupted. */
  submitTimeoutMs: number;
  /** Lifetime of signed download URLs. */
  urlTtlSeconds: number;
}

/** The customer-facing use cases both HTTP surfaces call. */
export class VideoService {
  constructor(
    private readonly deps: {
      store: Store;
      blobs: BlobStore;
      catalog: Catalog;
      providers: ReadonlyMap<string, VideoProvider>;
      pipeline: JobPipeline;
      clock: Clock;
      options: VideoServiceOptions;
    },
  ) {}

  /**
   * Validates against the catalog, then creates the job and charges for it in one
   * atomic step, then submits upstream. A submit that fails refunds at once and
   * surfaces as `upstream_error`.
   */
  async generate(input: GenerateInput): Promise<{ job: Job; balance: number }> {
    const { store, catalog, providers, clock, pipeline, options } = this.deps;
    const prompt = validatePrompt(input.prompt);
    const resolved = catalog.resolve(input);
    const provider = providers.get(resolved.route.provider);
    if (!provider) {
      throw new AppError('upstream_error', `Model ${resolved.model.id} is not available right now`);
    }
    if (input.inputReference && !provider.capabilities.inputReference) {
      throw new AppError(
        'validation_error',
        `Model ${resolved.model.id} does not accept input_reference`,
        {
          param: 'input_reference',
        },
      );
    }
    const now = clock.now();
    const jobId = newVideoId();
    // The lease covers the submit: if this process dies mid-submit, the worker finds
    // the job once the lease lapses and decides whether it may resubmit.
    const owner = newLeaseOwner();
    const { job, balance } = await store.createJob(
      {
        jobId,
        tenantId: input.tenantId,
        keyId: input.keyId,
        model: resolved.model.id,
        provider: provider.id,
        upstreamModel: resolved.route.upstreamModel,
        providerJobId: null,
        prompt,
        seconds: resolved.seconds,
        size: resolved.size,
        state: 'queued',
        progress: 0,
        providerStatus: 'submitting',
        error: null,
        cost: resolved.cost,
        asset: null,
        remixedFromJobId: null,
        createdAt: now,
        updatedAt: now,
        completedAt: null,
        nextCheckAt: now + options.submitTimeoutMs,
        checkFailures: 0,
        leaseOwner: owner,
        leaseUntil: now + options.submitTimeoutMs,
        version: 1,
      },
      {
        entryId: `charge:${jobId}`,
        tenantId: input.tenantId,
        kind: 'charge',
        amount: -resolved.cost,
        reason: `video ${resolved.model.id} ${resolved.seconds}s ${resolved.size}`,
        jobId,
        createdAt: now,
      },
    );

    let providerJobId: string;
    try {
      ({ providerJobId } = await provider.submit({
        jobId,
        upstreamModel: job.upstreamModel,
        prompt,
        seconds: job.seconds,
        size: job.size,
        ...(input.inputReference ? { inputReference: input.inputReference } : {}),
      }));
    } catch (error) {
      const message =
        error instanceof ProviderError ? error.message : 'The provider could not be reached';
      const failed = await pipeline.fail(job, { code: 'upstream_error', message });
      const refunded = await store.getBalance(input.tenantId);
      throw new AppError('upstream_error', `${message}. Credits refunded.`, {
        cause: error,
        details: { videoId: failed.jobId, creditsRemaining: refunded },
      });
    }
    const submitted = await store.updateJob(
      jobId,
      {
        providerJobId,
        providerStatus: 'queued',
        nextCheckAt: clock.now() + options.pollIntervalMs,
        leaseOwner: null,
        leaseUntil: 0,
        updatedAt: clock.now(),
      },
      { expectVersion: job.version },
    );
    return { job: submitted, balance };
  }

  /**
   * The tenant's job. An unfinished job whose next check is due is advanced inline,
   * as the original status call did; concurrent callers never download twice.
   */
  async get(tenantId: string, jobId: string): Promise<Job> {
    const { store, clock, pipeline } = this.deps;
    let job = assertJobOwner(await store.getJob(jobId), tenantId, jobId);
    if (job.nextCheckAt !== null && job.nextCheckAt <= clock.now()) {
      job = (await pipeline.advance(jobId)) ?? job;
    }
    return job;
  }

  list(
    tenantId: string,
    options: { after?: string; limit: number; order: 'asc' | 'desc' },
  ): Promise<Page<Job>> {
    return this.deps.store.listJobs({ tenantId, ...options });
  }

  /** A signed, expiring URL of a stored variant, or null while there is none. */
  async signedUrl(job: Job, variant: VideoVariant = 'video'): Promise<string | null> {
    const key = job.asset?.keys[variant];
    if (!key) return null;
    return this.deps.blobs.signedUrl(key, {
      expiresInSeconds: this.deps.options.urlTtlSeconds,
      ...(variant === 'video' ? { filename: job.asset?.filename } : {}),
    });
  }
}

function validatePrompt(prompt: string | undefined): string {
  if (prompt === undefined || prompt === null) {
    throw new AppError('validation_error', 'Missing required field: prompt', { param: 'prompt' });
  }
  if (typeof prompt !== 'string' || prompt.trim() === '') {
    throw new AppError('validation_error', 'Field prompt must be a non-empty string', {
      param: 'prompt',
    });
  }
  if (prompt.length > MAX_PROMPT_LENGTH) {
    throw new AppError(
      'validation_error',
      `Field prompt must be at most ${MAX_PROMPT_LENGTH} characters`,
      {
        param: 'prompt',
      },
    );
  }
  return prompt;
}
