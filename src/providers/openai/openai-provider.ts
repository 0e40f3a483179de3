/**
 * Any OpenAI `/v1/videos`-compatible upstream (OpenAI's own API until its retirement,
 * Azure OpenAI's `/openai/v1`, and the relays that copy the shape), through the official
 * `openai` SDK (v6: `src/resources/videos.ts`, `src/resources/webhooks/webhooks.ts`).
 *
 * - The SDK never retries (`maxRetries: 0`): a retried create can bill twice upstream,
 *   and retrying status checks is the pipeline's job.
 * - Azure sends the key in an `api-key` header instead of `Authorization: Bearer`
 *   (option `apiKeyHeader`).
 * - new-api relays report `processing` where OpenAI says `in_progress`.
 * - The upstream job id (`video_...`) is the providerJobId, unchanged, so webhooks
 *   (`data.id`) and status calls use the same id.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import OpenAI, { toFile } from 'openai';
import { AppError, ProviderError } from '../../core/errors.ts';
import type {
  Clock,
  JobError,
  ProviderDownload,
  ProviderJobStatus,
  RouteParams,
  SubmitInput,
  VideoProvider,
  VideoVariant,
  WebhookRequest,
} from '../../core/ports.ts';

type VideoCreateParams = OpenAI.Videos.VideoCreateParams;
type Video = OpenAI.Videos.Video;

export const OPENAI_DEFAULT_BASE_URL = 'https://api.openai.com/v1';

/** Standard Webhooks tolerance, the SDK's default too. */
const WEBHOOK_TOLERANCE_SECONDS = 300;

const OPENAI_SECONDS = [4, 8, 12] as const;
const SIZES_720P = ['720x1280', '1280x720'] as const;
const ALL_SIZES = [...SIZES_720P, '1024x1792', '1792x1024'] as const;

/**
 * Sizes per upstream model family (dated snapshots such as `sora-2-pro-2025-10-06`
 * match by prefix, longest first). Models this table does not know (a relay serving
 * its own names behind the same API) get every size the API defines.
 */
const SIZES_BY_MODEL: ReadonlyArray<readonly [prefix: string, sizes: readonly string[]]> = [
  ['sora-2-pro', ALL_SIZES],
  ['sora-2', SIZES_720P],
];

const VARIANT_CONTENT_TYPES: Record<VideoVariant, string> = {
  video: 'video/mp4',
  thumbnail: 'image/webp',
  spritesheet: 'image/jpeg',
};

/** Error causes that prove the request never reached the upstream. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH']);

type Operation = 'submit' | 'status' | 'download' | 'check';

export interface OpenAICompatibleProviderOptions {
  /** Provider id in the catalog; distinct ids let two such upstreams be configured. */
  id?: string;
  apiKey: string;
  /** Including the version path, e.g. `https://{res}.openai.azure.com/openai/v1`. */
  baseUrl?: string;
  /**
   * Accepted so every adapter is wired alike; nothing here reads time (webhook freshness
   * uses the request's `now`, job timing is the upstream's).
   */
  clock?: Clock;
  fetch?: typeof globalThis.fetch;
  /** Send the key in this header instead of `Authorization: Bearer` (Azure: `api-key`). */
  apiKeyHeader?: string;
  /** Per-request timeout; a create that times out has an unknown outcome. */
  timeoutMs?: number;
  /** Standard Webhooks secret (`whsec_...`) the upstream signs its webhooks with. */
  webhookSecret?: string;
}

export function createOpenAICompatibleProvider(
  options: OpenAICompatibleProviderOptions,
): OpenAICompatibleProvider {
  return new OpenAICompatibleProvider(options);
}

export class OpenAICompatibleProvider implements VideoProvider {
  readonly id: string;
  readonly capabilities = { remix: true, inputReference: true, idempotentSubmit: false };

  readonly #client: OpenAI;
  readonly #webhookSecret: string | undefined;
  readonly #apiKey: string;

  constructor(options: OpenAICompatibleProviderOptions) {
    if (!options.apiKey) throw new Error('OpenAICompatibleProvider needs an apiKey');
    this.id = options.id ?? 'openai';
    this.#webhookSecret = options.webhookSecret;
    this.#apiKey = options.apiKey;
    const keyHeader = options.apiKeyHeader?.toLowerCase();
    this.#client = new OpenAI({
      apiKey: options.apiKey,
      baseURL: options.baseUrl ?? OPENAI_DEFAULT_BASE_URL,
      maxRetries: 0,
      timeout: options.timeoutMs ?? 60_000,
      ...(options.fetch ? { fetch: options.fetch } : {}),
      ...(keyHeader && keyHeader !== 'authorization'
        ? // A null value removes the SDK's own Authorization header: the key goes out once.
          { defaultHeaders: { [keyHeader]: options.apiKey, Authorization: null } }
        : {}),
    });
  }

  checkParams(params: RouteParams): void {
    const style = params.paramStyle ?? 'openai';
    if (style !== 'openai') {
      throw new AppError(
        'validation_error',
        `${params.upstreamModel} via ${this.id}: unknown parameter style '${style}'. Allowed: openai`,
        { param: 'model' },
      );
    }
    if (!(OPENAI_SECONDS as readonly number[]).includes(params.seconds)) {
      throw new AppError(
        'validation_error',
        `${params.upstreamModel} via ${this.id} cannot serve seconds=${params.seconds}. Allowed: ${OPENAI_SECONDS.join(', ')}`,
        { param: 'seconds' },
      );
    }
    const sizes = sizesFor(params.upstreamModel);
    if (!sizes.includes(params.size)) {
      throw new AppError(
        'validation_error',
        `${params.upstreamModel} via ${this.id} cannot serve size=${params.size}. Allowed: ${sizes.join(', ')}`,
        { param: 'size' },
      );
    }
  }

  async submit(input: SubmitInput): Promise<{ providerJobId: string }> {
    let video: Video;
    if (input.remixOfProviderJobId !== undefined) {
      try {
        video = await this.#client.videos.remix(input.remixOfProviderJobId, {
          prompt: input.prompt,
        });
      } catch (error) {
        throw this.#classify(error, 'submit');
      }
      return { providerJobId: this.#acceptedId(video) };
    }
    try {
      this.checkParams(input);
    } catch (error) {
      // Nothing was sent: the request is refused here as the upstream would refuse it.
      throw new ProviderError(this.id, (error as Error).message, {
        httpStatus: 400,
        certain: true,
        retryable: false,
        cause: error,
      });
    }
    const body: VideoCreateParams = {
      model: input.upstreamModel,
      prompt: input.prompt,
      seconds: String(input.seconds) as VideoCreateParams['seconds'],
      size: input.size as VideoCreateParams['size'],
    };
    const reference = input.inputReference;
    if (reference?.data !== undefined) {
      const type = reference.contentType ?? 'image/png';
      body.input_reference = await toFile(reference.data, `reference.${extensionOf(type)}`, {
        type,
      });
    } else if (reference?.url !== undefined) {
      body.input_reference = { image_url: reference.url };
    }
    try {
      video = await this.#client.videos.create(body);
    } catch (error) {
      throw this.#classify(error, 'submit');
    }
    return { providerJobId: this.#acceptedId(video) };
  }

  async status(providerJobId: string): Promise<ProviderJobStatus> {
    let video: Video;
    try {
      video = await this.#client.videos.retrieve(providerJobId);
    } catch (error) {
      throw this.#classify(error, 'status');
    }
    return this.#mapStatus(video);
  }

  async download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null> {
    let response: Response;
    try {
      response = await this.#client.videos.downloadContent(providerJobId, { variant });
    } catch (error) {
      // The upstream renders no thumbnail/spritesheet for this job: not a failure.
      if (variant !== 'video' && error instanceof OpenAI.NotFoundError) return null;
      throw this.#classify(error, 'download');
    }
    if (!response.body) {
      throw new ProviderError(
        this.id,
        `${this.id} sent no body for ${variant} of ${providerJobId}`,
        {
          httpStatus: response.status,
          certain: true,
          retryable: true,
        },
      );
    }
    const length = Number(response.headers.get('content-length') ?? Number.NaN);
    const contentType =
      response.headers.get('content-type')?.split(';')[0]?.trim() || VARIANT_CONTENT_TYPES[variant];
    return {
      body: Readable.fromWeb(response.body as unknown as NodeReadableStream<Uint8Array>),
      contentType:
        contentType === 'application/octet-stream' || contentType === 'application/binary'
          ? VARIANT_CONTENT_TYPES[variant]
          : contentType,
      ...(Number.isSafeInteger(length) && length >= 0 ? { bytes: length } : {}),
    };
  }

  async verifyWebhook(request: WebhookRequest): Promise<{ providerJobId: string }> {
    const reject = (message: string, cause?: unknown) =>
      new ProviderError(this.id, `Webhook rejected: ${message}`, {
        httpStatus: 401,
        certain: true,
        retryable: false,
        ...(cause === undefined ? {} : { cause }),
      });
    if (!this.#webhookSecret) throw reject('no webhook secret is configured');
    const timestamp = Number(request.headers['webhook-timestamp']);
    if (!Number.isSafeInteger(timestamp)) throw reject('missing or invalid webhook-timestamp');
    if (Math.abs(request.now / 1000 - timestamp) > WEBHOOK_TOLERANCE_SECONDS) {
      throw reject('stale webhook-timestamp');
    }
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (value !== undefined) headers[name] = value;
    }
    let event: unknown;
    try {
      // Freshness was judged above on the request's `now`; the SDK checks the signature.
      event = await this.#client.webhooks.unwrap(
        request.rawBody.toString('utf8'),
        headers,
        this.#webhookSecret,
        Number.MAX_SAFE_INTEGER,
      );
    } catch (error) {
      throw reject(error instanceof Error ? error.message : 'invalid signature', error);
    }
    const { type, data } = (event ?? {}) as { type?: unknown; data?: { id?: unknown } };
    if (typeof type !== 'string' || !type.startsWith('video.') || typeof data?.id !== 'string') {
      throw new ProviderError(this.id, `Webhook event ${String(type)} is not about a video`, {
        httpStatus: 400,
        certain: true,
        retryable: false,
      });
    }
    return { providerJobId: data.id };
  }

  async check(): Promise<{ reachable: boolean; authenticated: boolean; detail: string }> {
    try {
      const page = await this.#client.models.list();
      return {
        reachable: true,
        authenticated: true,
        detail: `${page.data.length} models listed`,
      };
    } catch (error) {
      const failure = this.#classify(error, 'check');
      return {
        reachable: failure.httpStatus !== undefined,
        authenticated: false,
        detail: failure.message,
      };
    }
  }

  #acceptedId(video: Video): string {
    if (typeof video?.id === 'string' && video.id.length > 0) return video.id;
    // The upstream answered 2xx, so it may have started (and will bill) a job we cannot name.
    throw new ProviderError(this.id, `${this.id} accepted the video but sent no id`, {
      certain: false,
      retryable: false,
    });
  }

  #mapStatus(video: Video): ProviderJobStatus {
    const word = String(video.status);
    const progress = clampProgress(video.progress);
    switch (word) {
      case 'queued':
      case 'pending':
        return { state: 'queued', progress, providerStatus: word };
      case 'in_progress':
      case 'processing':
        return { state: 'in_progress', progress, providerStatus: word };
      case 'completed':
        return { state: 'completed', progress: 100, providerStatus: word };
      case 'failed':
        return { state: 'failed', progress, providerStatus: word, error: jobErrorOf(video.error) };
      case 'cancelled':
      case 'canceled':
        return {
          state: 'failed',
          progress,
          providerStatus: word,
          error: { code: 'cancelled', message: 'The provider cancelled the job.' },
        };
      default:
        throw new ProviderError(this.id, `${this.id} reported an unknown status '${word}'`, {
          certain: true,
          retryable: true,
        });
    }
  }

  #classify(error: unknown, operation: Operation): ProviderError {
    if (error instanceof ProviderError) return error;
    const what = `${this.id} ${operation}`;
    if (error instanceof OpenAI.APIConnectionTimeoutError) {
      // The request went out; whether a create was accepted is unknown.
      return new ProviderError(this.id, `${what} timed out`, {
        certain: operation !== 'submit',
        retryable: true,
        cause: error,
      });
    }
    if (error instanceof OpenAI.APIConnectionError) {
      const neverSent = NOT_SENT_CODES.has(causeCode(error) ?? '');
      return new ProviderError(
        this.id,
        `${what}: connection failed (${causeCode(error) ?? 'unknown'})`,
        {
          certain: operation !== 'submit' || neverSent,
          retryable: true,
          cause: error,
        },
      );
    }
    if (error instanceof OpenAI.APIError && error.status !== undefined) {
      const status = error.status;
      // Upstreams echo (masked) keys in 401 messages; never let ours through whole.
      const message = upstreamMessage(error).replaceAll(this.#apiKey, '[redacted]');
      return new ProviderError(this.id, `${what} answered ${status}: ${message}`, {
        httpStatus: status,
        certain: true,
        retryable: status === 408 || status === 409 || status === 429 || status >= 500,
        cause: error,
      });
    }
    return new ProviderError(this.id, `${what} failed: ${(error as Error)?.message ?? 'unknown'}`, {
      certain: operation !== 'submit',
      retryable: true,
      cause: error,
    });
  }
}

function sizesFor(upstreamModel: string): readonly string[] {
  return SIZES_BY_MODEL.find(([prefix]) => upstreamModel.startsWith(prefix))?.[1] ?? ALL_SIZES;
}

function clampProgress(progress: unknown): number {
  const value = Number(progress);
  return Number.isFinite(value) ? Math.min(100, Math.max(0, Math.round(value))) : 0;
}

function jobErrorOf(error: Video['error'] | undefined): JobError {
  const code = typeof error?.code === 'string' ? error.code : '';
  const message =
    typeof error?.message === 'string' && error.message
      ? error.message
      : 'The provider failed the job.';
  // Azure reports content-policy refusals as `content_filter`.
  if (/moderation|content_policy|content_filter|safety/i.test(code)) {
    return { code: 'moderation_blocked', message };
  }
  if (/timeout|timed_out/i.test(code)) return { code: 'timeout', message };
  if (/expired/i.test(code)) return { code: 'expired', message };
  return { code: 'upstream_error', message: code ? `${message} (${code})` : message };
}

function upstreamMessage(error: InstanceType<typeof OpenAI.APIError>): string {
  const body = error.error as { message?: unknown } | undefined;
  const message = typeof body?.message === 'string' ? body.message : 'no message';
  return message.length > 300 ? `${message.slice(0, 300)}...` : message;
}

/** The first `code` along the cause chain (undici puts ECONNREFUSED two levels down). */
function causeCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current instanceof Error; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = current.cause;
  }
  return undefined;
}

function extensionOf(contentType: string): string {
  const subtype = contentType.split('/')[1]?.split(';')[0]?.trim();
  return subtype === 'jpeg' ? 'jpg' : subtype || 'png';
}
