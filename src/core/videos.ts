import type { Catalog, ResolvedRequest } from './catalog.ts';
import { AppError, isAppError, ProviderError } from './errors.ts';
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
    const prompt = validatePrompt(input.prompt);
    const resolved = this.deps.catalog.resolve(input);
    const provider = this.deps.providers.get(resolved.route.provider);
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
    return this.start({
      tenantId: input.tenantId,
      keyId: input.keyId,
      prompt,
      resolved,
      provider,
      upstreamModel: resolved.route.upstreamModel,
      ...(input.inputReference ? { inputReference: input.inputReference } : {}),
    });
  }

  /**
   * A new video from a completed one of the same tenant and a new prompt, charged like
   * a new video. It runs where the source ran (the upstream remixes its own job), with
   * the source's model, seconds and size at today's catalog price.
   */
  async remix(input: {
    tenantId: string;
    keyId: string;
    sourceJobId: string;
    prompt: string | undefined;
  }): Promise<{ job: Job; balance: number }> {
    const prompt = validatePrompt(input.prompt);
    const source = assertJobOwner(
      await this.deps.store.getJob(input.sourceJobId),
      input.tenantId,
      input.sourceJobId,
    );
    if (source.state !== 'completed' || !source.providerJobId) {
      throw new AppError(
        'validation_error',
        `Video ${source.jobId} is ${source.state}; only completed videos can be remixed`,
        { details: { code: 'video_not_completed' } },
      );
    }
    const resolved = this.deps.catalog.resolve(source);
    const provider = this.deps.providers.get(source.provider);
    if (!provider) {
      throw new AppError('upstream_error', `Model ${source.model} is not available right now`);
    }
    if (!provider.capabilities.remix) {
      throw new AppError('validation_error', `Model ${source.model} does not support remix`, {
        details: { code: 'remix_not_supported' },
      });
    }
    return this.start({
      tenantId: input.tenantId,
      keyId: input.keyId,
      prompt,
      resolved,
      provider,
      upstreamModel: source.upstreamModel,
      remixOf: { jobId: source.jobId, providerJobId: source.providerJobId },
    });
  }

  /** Creates and charges the job in one step, then submits it; shared by generate and remix. */
  private async start(input: {
    tenantId: string;
    keyId: string;
    prompt: string;
    resolved: ResolvedRequest;
    provider: VideoProvider;
    upstreamModel: string;
    inputReference?: InputReference;
    remixOf?: { jobId: string; providerJobId: string };
  }): Promise<{ job: Job; balance: number }> {
    const { store, clock, pipeline, options } = this.deps;
    const { resolved, provider, prompt } = input;
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
        upstreamModel: input.upstreamModel,
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
        remixedFromJobId: input.remixOf?.jobId ?? null,
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
        reason: `${input.remixOf ? 'remix' : 'video'} ${resolved.model.id} ${resolved.seconds}s ${resolved.size}`,
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
        ...(input.remixOf ? { remixOfProviderJobId: input.remixOf.providerJobId } : {}),
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

  /**
   * Deletes an ended (completed or failed) job of the tenant and its stored files, as
   * OpenAI's API did; unfinished jobs are refused, since the worker still owns them.
   * The ledger keeps the job's charge and refund.
   */
  async delete(tenantId: string, jobId: string): Promise<Job> {
    const { store, blobs } = this.deps;
    const job = await this.get(tenantId, jobId);
    if (job.state !== 'completed' && job.state !== 'failed') {
      throw new AppError(
        'validation_error',
        `Video ${jobId} is ${job.state}; only completed or failed videos can be deleted`,
        { details: { code: 'video_not_finished' } },
      );
    }
    try {
      await store.deleteJob(jobId, { expectVersion: job.version });
    } catch (error) {
      // A concurrent delete won: to this caller the video is simply gone.
      if (isAppError(error, 'not_found') || isAppError(error, 'version_conflict')) {
        throw new AppError('not_found', `Video not found: ${jobId}`);
      }
      throw error;
    }
    // The row goes first so a crash here leaves only unreachable files, never a
    // listed video whose content is missing.
    await Promise.all(Object.values(job.asset?.keys ?? {}).map((key) => blobs.delete(key)));
    return job;
  }

  /**
   * The blob key of a stored variant of the tenant's job. `not_found` (with a code
   * saying why) while the job has not completed or when the variant was not produced.
   */
  async assetKey(tenantId: string, jobId: string, variant: VideoVariant): Promise<string> {
    const job = await this.get(tenantId, jobId);
    if (job.state !== 'completed' || !job.asset) {
      throw new AppError(
        'not_found',
        `Video ${jobId} is ${job.state}; its content is available once it has completed`,
        { details: { code: 'video_not_ready' } },
      );
    }
    const key = job.asset.keys[variant];
    if (!key) {
      throw new AppError('not_found', `Video ${jobId} has no ${variant}`, {
        param: 'variant',
        details: { code: 'variant_not_available' },
      });
    }
    return key;
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
