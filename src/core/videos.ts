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
import type { WebhookService } from './webhooks.ts';

export const MAX_PROMPT_LENGTH = 32_000;

export interface GenerateInput {
  tenantId: string;
  keyId: string;
  prompt: string | undefined;
  model?: string;
  seconds?: number;
  size?: string;
  inputReference?: InputReference;
  /** Where this job's end is also POSTed (a one-off webhook endpoint). */
  webhookUrl?: string;
}

/** One way to serve a model: a configured provider and how it names the model. */
export interface Route {
  provider: VideoProvider;
  upstreamModel: string;
  paramStyle?: string;
}

function routeParams(route: Route): { upstreamModel: string; paramStyle?: string } {
  return {
    upstreamModel: route.upstreamModel,
    ...(route.paramStyle ? { paramStyle: route.paramStyle } : {}),
  };
}

export interface VideoServiceOptions {
  pollIntervalMs: number;
  /** How long a submit may take before the worker treats it as interrupted. */
  submitTimeoutMs: number;
  /** Lifetime of signed download URLs. */
  urlTtlSeconds: number;
  /** Public base URL upstreams can POST webhooks to; null means polling only. */
  upstreamWebhookBaseUrl: string | null;
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
      /** Saves a request's `webhook_url`; without it such requests are refused. */
      webhooks?: Pick<WebhookService, 'createJobEndpoint'>;
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
    return this.start({
      tenantId: input.tenantId,
      keyId: input.keyId,
      prompt,
      resolved,
      routes: this.routesFor(resolved, Boolean(input.inputReference)),
      ...(input.inputReference ? { inputReference: input.inputReference } : {}),
      ...(input.webhookUrl === undefined ? {} : { webhookUrl: input.webhookUrl }),
    });
  }

  /**
   * The catalog routes able to serve this request, in catalog order: provider
   * configured, reference image supported if one was sent, parameters accepted by the
   * adapter. None left is a 400 naming what the routes allow (nothing charged yet).
   */
  routesFor(resolved: ResolvedRequest, withReference: boolean): Route[] {
    const routes: Route[] = [];
    let refusal: AppError | null = null;
    let configured = 0;
    for (const route of resolved.model.routes) {
      const provider = this.deps.providers.get(route.provider);
      if (!provider) continue;
      configured += 1;
      if (withReference && !provider.capabilities.inputReference) {
        refusal ??= new AppError(
          'validation_error',
          `Model ${resolved.model.id} does not accept input_reference`,
          {
            param: 'input_reference',
          },
        );
        continue;
      }
      const candidate: Route = {
        provider,
        upstreamModel: route.upstreamModel,
        ...(route.params ? { paramStyle: route.params } : {}),
      };
      try {
        provider.checkParams?.({
          ...routeParams(candidate),
          seconds: resolved.seconds,
          size: resolved.size,
        });
      } catch (error) {
        if (!(error instanceof AppError)) throw error;
        refusal ??= error;
        continue;
      }
      routes.push(candidate);
    }
    if (routes.length > 0) return routes;
    if (refusal) throw refusal;
    throw new AppError('upstream_error', `Model ${resolved.model.id} is not available right now`, {
      details: { configuredRoutes: configured },
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
      // The upstream remixes its own job: no failover to another route.
      routes: [{ provider, upstreamModel: source.upstreamModel }],
      remixOf: { jobId: source.jobId, providerJobId: source.providerJobId },
    });
  }

  /**
   * Creates and charges the job in one step, then submits it to the first route. A
   * submit that certainly failed and may be retried (connection refused, 429, 5xx) moves
   * on to the next route; one whose outcome is unknown (timeout after sending) is never
   * resubmitted. Shared by generate and remix.
   */
  private async start(input: {
    tenantId: string;
    keyId: string;
    prompt: string;
    resolved: ResolvedRequest;
    routes: Route[];
    inputReference?: InputReference;
    remixOf?: { jobId: string; providerJobId: string };
    webhookUrl?: string;
  }): Promise<{ job: Job; balance: number }> {
    const { store, clock, options } = this.deps;
    const { resolved, prompt, routes } = input;
    const first = routes[0] as Route;
    const jobId = newVideoId();
    let oneOffEndpointId: string | null = null;
    if (input.webhookUrl !== undefined) {
      if (!this.deps.webhooks) {
        throw new AppError('validation_error', 'webhook_url is not supported here', {
          param: 'webhook_url',
        });
      }
      // Saved before the job exists, so no event of the job can miss it.
      const endpoint = await this.deps.webhooks.createJobEndpoint({
        tenantId: input.tenantId,
        jobId,
        url: input.webhookUrl,
      });
      oneOffEndpointId = endpoint.endpointId;
    }
    const now = clock.now();
    // The lease covers the submit: if this process dies mid-submit, the worker finds
    // the job once the lease lapses and decides whether it may resubmit.
    const owner = newLeaseOwner();
    const { job, balance } = await store
      .createJob(
        queuedJob({
          jobId,
          tenantId: input.tenantId,
          keyId: input.keyId,
          prompt,
          resolved,
          route: first,
          remixedFromJobId: input.remixOf?.jobId ?? null,
          now,
          leaseOwner: owner,
          submitTimeoutMs: options.submitTimeoutMs,
        }),
        {
          entryId: `charge:${jobId}`,
          tenantId: input.tenantId,
          kind: 'charge',
          amount: -resolved.cost,
          reason: `${input.remixOf ? 'remix' : 'video'} ${resolved.model.id} ${resolved.seconds}s ${resolved.size}`,
          jobId,
          createdAt: now,
        },
      )
      .catch(async (error: unknown) => {
        // Nothing was charged and the job does not exist: drop its endpoint. A leftover
        // one (crash here) is inert, no event ever names it; the charge's error is the answer.
        if (oneOffEndpointId) await store.deleteEndpoint(oneOffEndpointId).catch(() => undefined);
        throw error;
      });

    return {
      job: await this.submit(job, routes, {
        ...(input.inputReference ? { inputReference: input.inputReference } : {}),
        ...(input.remixOf ? { remixOf: input.remixOf } : {}),
      }),
      balance,
    };
  }

  /**
   * Submits a created, charged job (leased by its creator) to its first route, failing
   * over as `start` describes. A job that could not be submitted is failed and refunded,
   * and surfaces as `upstream_error`. Shared by start and batches.
   */
  async submit(
    job: Job,
    routes: Route[],
    extras: {
      inputReference?: InputReference;
      remixOf?: { jobId: string; providerJobId: string };
    } = {},
  ): Promise<Job> {
    const { store, clock, pipeline, options } = this.deps;
    const { jobId, prompt } = job;
    let lastError: unknown;
    for (const [index, route] of routes.entries()) {
      try {
        const { providerJobId } = await route.provider.submit({
          jobId,
          ...routeParams(route),
          prompt,
          seconds: job.seconds,
          size: job.size,
          ...(extras.inputReference ? { inputReference: extras.inputReference } : {}),
          ...(extras.remixOf ? { remixOfProviderJobId: extras.remixOf.providerJobId } : {}),
          ...this.callback(route.provider, jobId),
        });
        const submitted = await store.updateJob(
          jobId,
          {
            provider: route.provider.id,
            upstreamModel: route.upstreamModel,
            providerJobId,
            providerStatus: 'queued',
            nextCheckAt: clock.now() + options.pollIntervalMs,
            leaseOwner: null,
            leaseUntil: 0,
            updatedAt: clock.now(),
          },
          { expectVersion: job.version },
        );
        return submitted;
      } catch (error) {
        lastError = error;
        const failOver =
          error instanceof ProviderError &&
          error.certain &&
          error.retryable &&
          index < routes.length - 1;
        if (!failOver) break;
      }
    }
    const unknown = lastError instanceof ProviderError && !lastError.certain;
    const message =
      lastError instanceof ProviderError ? lastError.message : 'The provider could not be reached';
    const failed = await pipeline.fail(job, {
      code: unknown ? 'upstream_unknown' : 'upstream_error',
      message: unknown ? `${message} (outcome unknown; not resubmitted)` : message,
    });
    const refunded = await store.getBalance(job.tenantId);
    throw new AppError('upstream_error', `${message}. Credits refunded.`, {
      cause: lastError,
      details: { videoId: failed.jobId, creditsRemaining: refunded },
    });
  }

  /** Where the upstream should report completion, when upstream webhooks are on. */
  private callback(provider: VideoProvider, jobId: string): { callbackUrl?: string } {
    const base = this.deps.options.upstreamWebhookBaseUrl;
    if (!base || !provider.verifyWebhook) return {};
    return { callbackUrl: `${base}/webhooks/upstream/${provider.id}?job=${jobId}` };
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

export function validatePrompt(prompt: string | undefined): string {
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

/**
 * A new job as it is created: queued, charged, and leased to its creator for the
 * submit, so the worker recovers it if the process dies before the upstream answers.
 */
export function queuedJob(input: {
  jobId: string;
  tenantId: string;
  keyId: string;
  prompt: string;
  resolved: ResolvedRequest;
  route: Route;
  remixedFromJobId: string | null;
  now: number;
  leaseOwner: string;
  submitTimeoutMs: number;
}): Job {
  const { resolved, now } = input;
  return {
    jobId: input.jobId,
    tenantId: input.tenantId,
    keyId: input.keyId,
    model: resolved.model.id,
    provider: input.route.provider.id,
    upstreamModel: input.route.upstreamModel,
    providerJobId: null,
    prompt: input.prompt,
    seconds: resolved.seconds,
    size: resolved.size,
    state: 'queued',
    progress: 0,
    providerStatus: 'submitting',
    error: null,
    cost: resolved.cost,
    asset: null,
    remixedFromJobId: input.remixedFromJobId,
    createdAt: now,
    updatedAt: now,
    completedAt: null,
    nextCheckAt: now + input.submitTimeoutMs,
    checkFailures: 0,
    leaseOwner: input.leaseOwner,
    leaseUntil: now + input.submitTimeoutMs,
    version: 1,
  };
}
