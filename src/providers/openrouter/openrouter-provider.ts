/**
 * OpenRouter's asynchronous video API (`POST /videos`, `GET /videos/{id}`,
 * `GET /videos/{id}/content`), called through the official `@openrouter/sdk` standalone
 * functions with its auto-retry switched off: the pipeline owns retries, so a create is
 * never sent twice by the SDK.
 *
 * Contract sources: OpenRouterTeam/typescript-sdk `src/models/videogenerationrequest.ts`,
 * `src/models/videogenerationresponse.ts`, `src/funcs/videoGeneration*.ts`; OpenRouterTeam/docs
 * `guides/overview/multimodal/video-generation.mdx` and
 * `cookbook/video-generation/video-generation-webhooks.mdx`.
 *
 * The providerJobId is OpenRouter's own job id, unchanged. OpenRouter reports no progress,
 * so progress stays 0 until the job completes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { OpenRouterCore } from '@openrouter/sdk/core.js';
import type { VideoGenerationRequest } from '@openrouter/sdk/models';
import type { APICall, APIPromise } from '@openrouter/sdk/types/async.js';
import type { Result } from '@openrouter/sdk/types/fp.js';
import { AppError, ProviderError } from '../../core/errors.ts';
import { lazily } from '../../core/lazily.ts';
import type {
  Clock,
  InputReference,
  JobError,
  ProviderDownload,
  ProviderJobStatus,
  RouteParams,
  SubmitInput,
  VideoProvider,
  VideoVariant,
  WebhookRequest,
} from '../../core/ports.ts';
import { FRAMES, referenceImageUrl } from '../frames.ts';

const PROVIDER_ID = 'openrouter';
export const OPENROUTER_DEFAULT_BASE_URL = 'https://openrouter.ai/api/v1';
/** The only parameter style this adapter speaks (also used when a route names none). */
export const OPENROUTER_PARAM_STYLE = 'openrouter';
/** Webhook signatures older (or newer) than this are rejected, as the docs advise. */
const WEBHOOK_TOLERANCE_SECONDS = 300;

/** What one upstream model accepts; the source of `checkParams`. */
export interface OpenRouterModelLimits {
  /** Allowed `duration` values in seconds. */
  durations: readonly number[];
  /** Allowed `resolution` values (e.g. `720p`). */
  resolutions: readonly string[];
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/**
 * Durations and resolutions per upstream model, as `GET /videos/models` lists them
 * (supported_durations / supported_resolutions). Extend with the `models` option.
 */
export const OPENROUTER_MODELS: Readonly<Record<string, OpenRouterModelLimits>> = {
  'google/veo-3.1': { durations: [4, 6, 8], resolutions: ['720p', '1080p'] },
  'google/veo-3.1-fast': { durations: [4, 6, 8], resolutions: ['720p', '1080p'] },
  'google/veo-3.1-lite': { durations: [4, 6, 8], resolutions: ['720p', '1080p'] },
  'kwaivgi/kling-v3.0-pro': { durations: range(3, 15), resolutions: ['720p', '1080p'] },
  'bytedance/seedance-2.0': { durations: range(4, 15), resolutions: ['480p', '720p', '1080p'] },
  'alibaba/wan-2.7': { durations: range(2, 15), resolutions: ['720p', '1080p'] },
};

const MODERATION_PATTERN = /content policy|moderation|safety|prohibited|nsfw|inappropriate/i;
const TIMEOUT_PATTERN = /timed? ?out|time limit|deadline/i;
/** Socket errors raised before a request could be written: the upstream surely saw nothing. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/**
 * The SDK's functions, imported on first use: their generated schemas cost a process
 * ~55 MB of memory, which a gateway without OpenRouter configured must not pay.
 */
async function importSdk() {
  const [core, http, getKey, generate, getGeneration, getContent] = await Promise.all([
    import('@openrouter/sdk/core.js'),
    import('@openrouter/sdk/lib/http.js'),
    import('@openrouter/sdk/funcs/apiKeysGetCurrentKeyMetadata.js'),
    import('@openrouter/sdk/funcs/videoGenerationGenerate.js'),
    import('@openrouter/sdk/funcs/videoGenerationGetGeneration.js'),
    import('@openrouter/sdk/funcs/videoGenerationGetVideoContent.js'),
  ]);
  return {
    OpenRouterCore: core.OpenRouterCore,
    HTTPClient: http.HTTPClient,
    apiKeysGetCurrentKeyMetadata: getKey.apiKeysGetCurrentKeyMetadata,
    videoGenerationGenerate: generate.videoGenerationGenerate,
    videoGenerationGetGeneration: getGeneration.videoGenerationGetGeneration,
    videoGenerationGetVideoContent: getContent.videoGenerationGetVideoContent,
  };
}

type OpenRouterSdk = Awaited<ReturnType<typeof importSdk>>;

const loadSdk = lazily(importSdk);

export interface OpenRouterProviderOptions {
  apiKey: string;
  /** Defaults to {@link OPENROUTER_DEFAULT_BASE_URL}. */
  baseUrl?: string;
  /**
   * Accepted like every adapter's; unused, because the only time this adapter needs
   * (webhook freshness) arrives with the call as `WebhookRequest.now`.
   */
  clock?: Clock;
  /** Replaces the global fetch (tests, proxies). */
  fetch?: typeof fetch;
  /** Workspace webhook signing secret; without it every webhook is rejected. */
  webhookSecret?: string;
  /** Timeout of submit, status and check calls. Default 30 s. */
  timeoutMs?: number;
  /** How long a download may wait for the response headers. Default 60 s. */
  downloadHeadersTimeoutMs?: number;
  /** Extra or overriding entries of {@link OPENROUTER_MODELS}. */
  models?: Readonly<Record<string, OpenRouterModelLimits>>;
}

export function createOpenRouterProvider(options: OpenRouterProviderOptions): OpenRouterProvider {
  return new OpenRouterProvider(options);
}

export class OpenRouterProvider implements VideoProvider {
  readonly id = PROVIDER_ID;
  readonly capabilities = { remix: false, inputReference: true, idempotentSubmit: false };

  readonly #apiKey: string;
  readonly #baseUrl: string;
  readonly #fetch: typeof fetch | undefined;
  #client: Promise<{ sdk: OpenRouterSdk; core: OpenRouterCore }> | undefined;
  readonly #webhookSecret: string | undefined;
  readonly #timeoutMs: number;
  readonly #downloadHeadersTimeoutMs: number;
  readonly #models: Readonly<Record<string, OpenRouterModelLimits>>;

  constructor(options: OpenRouterProviderOptions) {
    if (!options.apiKey) throw new RangeError('OpenRouterProvider needs an apiKey');
    this.#apiKey = options.apiKey;
    this.#baseUrl = options.baseUrl ?? OPENROUTER_DEFAULT_BASE_URL;
    this.#fetch = options.fetch;
    this.#webhookSecret = options.webhookSecret || undefined;
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#downloadHeadersTimeoutMs = options.downloadHeadersTimeoutMs ?? 60_000;
    this.#models = { ...OPENROUTER_MODELS, ...options.models };
  }

  /** The SDK and this adapter's client of it, made on the first upstream call. */
  #connect(): Promise<{ sdk: OpenRouterSdk; core: OpenRouterCore }> {
    this.#client ??= loadSdk().then((sdk) => {
      const fetcher = this.#fetch;
      const core = new sdk.OpenRouterCore({
        apiKey: this.#apiKey,
        serverURL: this.#baseUrl,
        retryConfig: { strategy: 'none' },
        ...(fetcher
          ? { httpClient: new sdk.HTTPClient({ fetcher: (input, init) => fetcher(input, init) }) }
          : {}),
      });
      return { sdk, core };
    });
    return this.#client;
  }

  checkParams(params: RouteParams): void {
    checkOpenRouterParams(params, this.#models);
  }

  async submit(input: SubmitInput): Promise<{ providerJobId: string }> {
    this.checkParams(input);
    const size = FRAMES[input.size];
    if (!size) throw new RangeError(`checkParams let size ${input.size} through`);
    const request: VideoGenerationRequest = {
      model: input.upstreamModel,
      prompt: input.prompt,
      duration: input.seconds,
      aspectRatio: size.aspectRatio,
      resolution: size.resolution,
      ...(input.inputReference
        ? {
            frameImages: [
              {
                type: 'image_url',
                imageUrl: { url: referenceUrl(input.inputReference) },
                frameType: 'first_frame',
              },
            ],
          }
        : {}),
      ...(input.callbackUrl ? { callbackUrl: input.callbackUrl } : {}),
    };
    const { sdk, core } = await this.#connect();
    const { value } = await call(
      'submit',
      sdk.videoGenerationGenerate(
        core,
        { videoGenerationRequest: request },
        { timeoutMs: this.#timeoutMs },
      ),
    );
    return { providerJobId: value.id };
  }

  async status(providerJobId: string): Promise<ProviderJobStatus> {
    const { sdk, core } = await this.#connect();
    const { value } = await call(
      'status',
      sdk.videoGenerationGetGeneration(
        core,
        { jobId: providerJobId },
        { timeoutMs: this.#timeoutMs },
      ),
    );
    return mapStatus(value.status, value.error);
  }

  async download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null> {
    // OpenRouter serves the video only: no thumbnail or spritesheet exists upstream.
    if (variant !== 'video') return null;
    const { sdk, core } = await this.#connect();
    // The timer bounds the wait for headers only; a long, healthy body is never cut.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#downloadHeadersTimeoutMs);
    try {
      const { value, response } = await call(
        'download',
        sdk.videoGenerationGetVideoContent(
          core,
          { jobId: providerJobId, index: 0 },
          { signal: controller.signal },
        ),
      );
      const length = Number(response.headers.get('content-length'));
      return {
        body: Readable.fromWeb(value as NodeReadableStream<Uint8Array>),
        contentType: response.headers.get('content-type') ?? 'video/mp4',
        ...(Number.isSafeInteger(length) && length > 0 ? { bytes: length } : {}),
      };
    } finally {
      clearTimeout(timer);
    }
  }

  async verifyWebhook(request: WebhookRequest): Promise<{ providerJobId: string }> {
    const reject = (reason: string): never => {
      throw new ProviderError(PROVIDER_ID, `Rejected OpenRouter webhook: ${reason}`, {
        httpStatus: 401,
        certain: true,
        retryable: false,
      });
    };
    if (!this.#webhookSecret) return reject('no webhook secret is configured');
    const header = request.headers['x-openrouter-signature'];
    if (!header) return reject('missing X-OpenRouter-Signature header');
    const parts = header.split(',').map((part) => part.trim());
    const timestamp = parts.find((part) => part.startsWith('t='))?.slice(2) ?? '';
    const signatures = parts.filter((part) => part.startsWith('v1=')).map((part) => part.slice(3));
    if (!/^\d+$/.test(timestamp) || signatures.length === 0) {
      return reject('malformed X-OpenRouter-Signature header');
    }
    const ageSeconds = Math.floor(request.now / 1000) - Number(timestamp);
    if (Math.abs(ageSeconds) > WEBHOOK_TOLERANCE_SECONDS) return reject('stale timestamp');
    const expected = createHmac('sha256', this.#webhookSecret)
      .update(`${timestamp},`)
      .update(request.rawBody)
      .digest();
    const valid = signatures.some((signature) => {
      const given = Buffer.from(signature, 'hex');
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    if (!valid) return reject('signature mismatch');
    let id: unknown;
    try {
      id = (JSON.parse(request.rawBody.toString('utf8')) as { data?: { id?: unknown } }).data?.id;
    } catch {
      return reject('body is not JSON');
    }
    if (typeof id !== 'string' || id === '') return reject('body has no data.id');
    return { providerJobId: id };
  }

  async check(): Promise<{ reachable: boolean; authenticated: boolean; detail: string }> {
    // GET /key is the cheapest call that needs the key (GET /videos/models is public).
    const { sdk, core } = await this.#connect();
    const [, apiCall] = await sdk
      .apiKeysGetCurrentKeyMetadata(core, undefined, {
        timeoutMs: this.#timeoutMs,
      })
      .$inspect();
    if (apiCall.status !== 'complete') {
      return { reachable: false, authenticated: false, detail: 'OpenRouter could not be reached' };
    }
    const status = apiCall.response.status;
    if (apiCall.response.ok) {
      return { reachable: true, authenticated: true, detail: `GET /key answered ${status}` };
    }
    if (status === 401 || status === 403) {
      return {
        reachable: true,
        authenticated: false,
        detail: `OpenRouter rejected the API key (${status})`,
      };
    }
    return { reachable: true, authenticated: false, detail: `GET /key answered ${status}` };
  }
}

/** The pure check behind {@link OpenRouterProvider.checkParams}. */
export function checkOpenRouterParams(
  params: RouteParams,
  models: Readonly<Record<string, OpenRouterModelLimits>> = OPENROUTER_MODELS,
): void {
  const style = params.paramStyle ?? OPENROUTER_PARAM_STYLE;
  if (style !== OPENROUTER_PARAM_STYLE) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via openrouter has no parameter style '${style}'. Allowed: ${OPENROUTER_PARAM_STYLE}`,
      { param: 'model' },
    );
  }
  const limits = models[params.upstreamModel];
  if (!limits) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} is not a model the openrouter adapter knows. Allowed: ${Object.keys(models).join(', ')}`,
      { param: 'model' },
    );
  }
  if (!limits.durations.includes(params.seconds)) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via openrouter cannot serve seconds=${params.seconds}. Allowed: ${limits.durations.join(', ')}`,
      { param: 'seconds' },
    );
  }
  const size = FRAMES[params.size];
  if (!size || !limits.resolutions.includes(size.resolution)) {
    const allowed = Object.entries(FRAMES)
      .filter(([, mapped]) => limits.resolutions.includes(mapped.resolution))
      .map(([name]) => name);
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via openrouter cannot serve size=${params.size}. Allowed: ${allowed.join(', ')}`,
      { param: 'size' },
    );
  }
}

function referenceUrl(reference: InputReference): string {
  const url = referenceImageUrl(reference);
  if (url) return url;
  throw new AppError('validation_error', 'input_reference has neither a URL nor image bytes', {
    param: 'input_reference',
  });
}

function mapStatus(status: string, error: string | undefined): ProviderJobStatus {
  switch (status) {
    case 'pending':
      return { state: 'queued', progress: 0, providerStatus: status };
    case 'completed':
      return { state: 'completed', progress: 100, providerStatus: status };
    case 'failed':
      return { state: 'failed', progress: 0, providerStatus: status, error: failureOf(error) };
    case 'cancelled':
    case 'expired':
      return {
        state: 'failed',
        progress: 0,
        providerStatus: status,
        error: { code: status, message: error || `The OpenRouter job was ${status}.` },
      };
    default:
      // in_progress, and any status word newer than this adapter: keep polling.
      return { state: 'in_progress', progress: 0, providerStatus: status };
  }
}

function failureOf(message: string | undefined): JobError {
  const text = message || 'OpenRouter failed the job.';
  if (MODERATION_PATTERN.test(text)) return { code: 'moderation_blocked', message: text };
  if (TIMEOUT_PATTERN.test(text)) return { code: 'timeout', message: text };
  return { code: 'upstream_error', message: text };
}

/**
 * Awaits an SDK call and turns every failure into a ProviderError. The HTTP status is read
 * from the raw response, so an error body the SDK cannot parse is still classified right.
 */
async function call<T>(
  operation: 'submit' | 'status' | 'download',
  promise: APIPromise<Result<T, unknown>>,
): Promise<{ value: T; response: Response }> {
  let result: Result<T, unknown>;
  let apiCall: APICall;
  try {
    [result, apiCall] = await promise.$inspect();
  } catch (error) {
    throw transportError(operation, error);
  }
  if (result.ok && apiCall.status === 'complete') {
    return { value: result.value, response: apiCall.response };
  }
  if (apiCall.status === 'complete') {
    const status = apiCall.response.status;
    if (apiCall.response.ok) {
      // A 2xx we cannot read: for a submit the job may exist, so its outcome is unknown;
      // for a read it is upstream drift worth a bounded number of retries.
      throw new ProviderError(
        PROVIDER_ID,
        `OpenRouter ${operation} answered ${status} with an unexpected body`,
        {
          httpStatus: status,
          certain: operation !== 'submit',
          retryable: operation !== 'submit',
          cause: result.error,
        },
      );
    }
    throw new ProviderError(
      PROVIDER_ID,
      `OpenRouter ${operation} failed: HTTP ${status}${upstreamMessage(result.error)}`,
      { httpStatus: status, certain: true, retryable: retryableStatus(status) },
    );
  }
  throw transportError(operation, result.error);
}

function retryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 425 || status === 429 || status >= 500;
}

function upstreamMessage(error: unknown): string {
  const body = (error as { body?: unknown } | undefined)?.body;
  if (typeof body !== 'string') return '';
  try {
    const message = (JSON.parse(body) as { error?: { message?: unknown } }).error?.message;
    return typeof message === 'string' ? `: ${message.slice(0, 300)}` : '';
  } catch {
    return '';
  }
}

function transportError(operation: string, error: unknown): ProviderError {
  const name = (error as { name?: unknown } | undefined)?.name;
  if (name === 'InvalidRequestError' || name === 'SDKValidationError') {
    return new ProviderError(PROVIDER_ID, `OpenRouter ${operation} request is invalid`, {
      certain: true,
      retryable: false,
      cause: error,
    });
  }
  const code = errorCode(error);
  if (code !== undefined && NOT_SENT_CODES.has(code)) {
    return new ProviderError(PROVIDER_ID, `OpenRouter ${operation}: connection failed (${code})`, {
      certain: true,
      retryable: true,
      cause: error,
    });
  }
  // Timeouts, resets and aborts after the request left: the upstream may have acted on it.
  const detail = name === 'RequestTimeoutError' ? 'timed out' : `failed (${code ?? String(name)})`;
  return new ProviderError(PROVIDER_ID, `OpenRouter ${operation} ${detail}; outcome unknown`, {
    certain: false,
    retryable: true,
    cause: error,
  });
}

/** The first `code` on the error's cause chain (undici nests the socket error). */
function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}
