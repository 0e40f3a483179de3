/**
 * Replicate predictions, through the official `replicate` SDK (v1.4).
 *
 * Contract (replicate/replicate-javascript `lib/predictions.js`, `lib/util.js`, `index.d.ts`;
 * replicate.com/docs/topics/predictions/lifecycle, /data-retention, /webhooks/verify-webhook):
 *
 * - submit: `POST /models/{owner}/{name}/predictions {input, webhook?, webhook_events_filter}`;
 *   the providerJobId is Replicate's prediction id, unchanged (also the `id` of webhook bodies).
 * - status: `GET /predictions/{id}`; `starting` -> queued, `processing` -> in_progress (progress
 *   is the last `NN%` in `logs`, else 50), `succeeded` -> completed, `failed` -> failed
 *   (`moderation_blocked` when the error reads like a safety filter), `canceled` -> cancelled,
 *   `aborted` (deadline passed before it started) -> timeout.
 * - download: the prediction's `output` URL. API outputs are deleted after one hour, so a 404/410
 *   on the file (or `data_removed`) means the asset is gone: not retryable.
 *
 * Why every SDK call gets its own one-shot `fetch`: the SDK's `withAutomaticRetries` (lib/util.js)
 * cannot be turned off (`maxRetries || 5`) and retries a GET on 429/5xx, ANY method on 429, and any
 * method whose fetch threw (a reset connection included). A retried create could bill twice, and
 * retries are the pipeline's job, so the wrapper answers every retry of one request with the
 * outcome of its first attempt: exactly one HTTP request per SDK call.
 */
import { timingSafeEqual } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Prediction, default as Replicate } from 'replicate';
import { Webhook } from 'standardwebhooks';
import { AppError, ProviderError } from '../../core/errors.ts';
import { lazily } from '../../core/lazily.ts';
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
import { FRAMES, type Frame, referenceImageUrl } from '../frames.ts';

const PROVIDER_ID = 'replicate';
const DEFAULT_BASE_URL = 'https://api.replicate.com/v1';
const DEFAULT_TIMEOUT_MS = 30_000;
/** Standard Webhooks' replay window; Replicate documents no other. */
const DEFAULT_WEBHOOK_TOLERANCE_S = 300;
/** The SDK's own ceiling for inline (data: URL) file inputs (lib/util.js MAX_DATA_URI_SIZE). */
const MAX_INLINE_REFERENCE_BYTES = 10_000_000;
const MAX_DETAIL_CHARS = 300;
const PREDICTION_ID = /^[a-z0-9]{1,64}$/i;
const MODEL_REF = /^[\w.-]+\/[\w.-]+$/;
/** Replicate's safety filter failure ("flagged as sensitive ... (E005)") and model-side NSFW filters. */
const MODERATION_ERROR =
  /\bE005\b|flagged as sensitive|sensitive content|nsfw|content polic|safety (?:filter|system|check)|moderation/i;
/** Connection failures where the request surely never reached the upstream. */
const NOT_SENT_CODES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

interface ParamStyle {
  /** Model name used in messages. */
  label: string;
  seconds: readonly number[];
  /** The reference image's input field. */
  imageField: string;
  /** Upstream input fields for one frame shape. */
  frame(frame: Frame): Record<string, string>;
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

/**
 * Input schemas of the models on replicate.com (`/{model}/api`): Veo 3.1 takes duration 4|6|8,
 * aspect_ratio, resolution, `image`; Kling v3 takes duration 3..15, aspect_ratio, `mode`
 * (standard = 720p, pro = 1080p), `start_image`; Seedance 2.0 takes duration 4..15 (-1 = auto,
 * not offered), aspect_ratio, resolution, `image`.
 */
const PARAM_STYLES: Readonly<Record<string, ParamStyle>> = {
  veo: {
    label: 'Veo',
    seconds: [4, 6, 8],
    imageField: 'image',
    frame: (f) => ({ aspect_ratio: f.aspectRatio, resolution: f.resolution }),
  },
  kling: {
    label: 'Kling',
    seconds: range(3, 15),
    imageField: 'start_image',
    frame: (f) => ({
      aspect_ratio: f.aspectRatio,
      mode: f.resolution === '720p' ? 'standard' : 'pro',
    }),
  },
  seedance: {
    label: 'Seedance',
    seconds: range(4, 15),
    imageField: 'image',
    frame: (f) => ({ aspect_ratio: f.aspectRatio, resolution: f.resolution }),
  },
};

/** Style of a route that names none, by its upstream model. */
const STYLE_BY_MODEL: Readonly<Record<string, string>> = {
  'google/veo-3.1': 'veo',
  'kwaivgi/kling-v3-video': 'kling',
  'bytedance/seedance-2.0': 'seedance',
};

export interface ReplicateProviderOptions {
  /** API token (`REPLICATE_API_TOKEN`), sent as `Authorization: Bearer`. */
  apiKey: string;
  /** Default `https://api.replicate.com/v1`. */
  baseUrl?: string;
  clock: Clock;
  /** Used for API calls and output downloads; default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /**
   * `whsec_...` signing secret. When absent, the first webhook fetches it from
   * `GET /webhooks/default/secret` and keeps it.
   */
  webhookSecret?: string;
  /** Deadline of one API call, and of a download's response headers. Default 30 s. */
  timeoutMs?: number;
  /** Accepted webhook-timestamp skew in seconds. Default 300. */
  webhookToleranceSeconds?: number;
}

export function createReplicateProvider(options: ReplicateProviderOptions): ReplicateProvider {
  return new ReplicateProvider(options);
}

/** The SDK, imported on first use, so a gateway without Replicate configured never loads it. */
const loadSdk = lazily(() => import('replicate'));

export class ReplicateProvider implements VideoProvider {
  readonly id = PROVIDER_ID;
  readonly capabilities = { remix: false, inputReference: true, idempotentSubmit: false };

  readonly #apiKey: string;
  readonly #baseUrl: string;
  readonly #clock: Clock;
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number;
  readonly #toleranceS: number;
  #webhookSecret: Promise<string> | undefined;

  constructor(options: ReplicateProviderOptions) {
    if (!options.apiKey) throw new RangeError('Replicate apiKey is required');
    this.#apiKey = options.apiKey;
    this.#baseUrl = options.baseUrl ?? DEFAULT_BASE_URL;
    this.#clock = options.clock;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#toleranceS = options.webhookToleranceSeconds ?? DEFAULT_WEBHOOK_TOLERANCE_S;
    this.#webhookSecret = options.webhookSecret
      ? Promise.resolve(options.webhookSecret)
      : undefined;
  }

  checkParams(params: RouteParams): void {
    resolveRoute(params);
  }

  async submit(input: SubmitInput): Promise<{ providerJobId: string }> {
    let route: ReturnType<typeof resolveRoute>;
    try {
      route = resolveRoute(input);
    } catch (error) {
      throw new ProviderError(PROVIDER_ID, (error as Error).message, {
        httpStatus: 400,
        certain: true,
        retryable: false,
        cause: error,
      });
    }
    if (input.remixOfProviderJobId !== undefined) {
      throw new ProviderError(PROVIDER_ID, 'Replicate routes cannot remix videos', {
        httpStatus: 400,
        certain: true,
        retryable: false,
      });
    }
    const image = referenceUrl(input);
    const body = {
      model: input.upstreamModel,
      input: {
        prompt: input.prompt,
        duration: input.seconds,
        ...route.style.frame(route.frame),
        ...(image === undefined ? {} : { [route.style.imageField]: image }),
      },
      ...(input.callbackUrl === undefined
        ? {}
        : { webhook: input.callbackUrl, webhook_events_filter: ['completed' as const] }),
    };
    const prediction = await this.#call('create prediction', (client, signal) =>
      client.predictions.create({ ...body, signal }),
    );
    if (typeof prediction?.id !== 'string' || !PREDICTION_ID.test(prediction.id)) {
      // Accepted, but we cannot track it: the outcome is unknown to us.
      throw new ProviderError(
        PROVIDER_ID,
        'Replicate answered the create without a prediction id',
        {
          certain: false,
          retryable: false,
        },
      );
    }
    return { providerJobId: prediction.id };
  }

  async status(providerJobId: string): Promise<ProviderJobStatus> {
    return statusOf(await this.#get(providerJobId));
  }

  async download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null> {
    // Replicate's video models return the video only.
    if (variant !== 'video') return null;
    const prediction = await this.#get(providerJobId);
    if (prediction.status !== 'succeeded') {
      const ended = ['failed', 'canceled', 'aborted'].includes(prediction.status);
      throw new ProviderError(
        PROVIDER_ID,
        `Replicate prediction ${providerJobId} is ${prediction.status}; it has no output${ended ? '' : ' yet'}`,
        { httpStatus: 409, certain: true, retryable: !ended },
      );
    }
    const url = outputUrl(prediction.output);
    if (prediction.data_removed || url === undefined) {
      throw gone(`Replicate removed the output of prediction ${providerJobId}`);
    }
    // The output lives on a file host (replicate.delivery): never send it our token.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.#timeoutMs);
    let response: Response;
    try {
      response = await this.#fetch(url, { signal: controller.signal });
    } catch (error) {
      throw new ProviderError(
        PROVIDER_ID,
        `Replicate output download failed: ${networkDetail(error)}`,
        {
          certain: true,
          retryable: true,
          cause: error,
        },
      );
    } finally {
      clearTimeout(timer);
    }
    if (response.status === 404 || response.status === 410) {
      await response.body?.cancel();
      throw gone(
        `Replicate output of prediction ${providerJobId} is gone (HTTP ${response.status})`,
      );
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new ProviderError(
        PROVIDER_ID,
        `Replicate output download failed: HTTP ${response.status}`,
        {
          httpStatus: response.status,
          certain: true,
          retryable: response.status === 429 || response.status >= 500,
        },
      );
    }
    const length = Number(response.headers.get('content-length'));
    return {
      body: Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
      contentType: response.headers.get('content-type') ?? 'video/mp4',
      ...(Number.isSafeInteger(length) && length >= 0 && response.headers.has('content-length')
        ? { bytes: length }
        : {}),
    };
  }

  async cancel(providerJobId: string): Promise<void> {
    assertPredictionId(providerJobId);
    await this.#call('cancel prediction', (client, signal) =>
      client.predictions.cancel(providerJobId, { signal }),
    );
  }

  async verifyWebhook(request: WebhookRequest): Promise<{ providerJobId: string }> {
    const id = request.headers['webhook-id'];
    const timestamp = request.headers['webhook-timestamp'];
    const signatures = request.headers['webhook-signature'];
    if (!id || !timestamp || !signatures) throw unauthorized('missing webhook signature headers');
    const seconds = /^\d{1,12}$/.test(timestamp) ? Number(timestamp) : Number.NaN;
    if (!Number.isSafeInteger(seconds)) throw unauthorized('invalid webhook-timestamp');
    if (Math.abs(request.now / 1000 - seconds) > this.#toleranceS) {
      throw unauthorized('webhook timestamp outside the tolerance');
    }
    let signer: Webhook;
    try {
      signer = new Webhook(await this.#signingSecret());
    } catch (error) {
      if (error instanceof ProviderError) throw error;
      throw new ProviderError(PROVIDER_ID, 'Replicate webhook secret is malformed', {
        certain: true,
        retryable: false,
        cause: error,
      });
    }
    const expected = Buffer.from(signer.sign(id, new Date(seconds * 1000), request.rawBody));
    const matches = signatures.split(' ').some((candidate) => {
      const given = Buffer.from(candidate);
      return given.length === expected.length && timingSafeEqual(given, expected);
    });
    if (!matches) throw unauthorized('webhook signature does not match');
    let providerJobId: unknown;
    try {
      providerJobId = (JSON.parse(request.rawBody.toString('utf8')) as { id?: unknown }).id;
    } catch {
      providerJobId = undefined;
    }
    if (typeof providerJobId !== 'string' || !PREDICTION_ID.test(providerJobId)) {
      throw new ProviderError(PROVIDER_ID, 'Replicate webhook body names no prediction', {
        httpStatus: 400,
        certain: true,
        retryable: false,
      });
    }
    return { providerJobId };
  }

  async check(): Promise<{ reachable: boolean; authenticated: boolean; detail: string }> {
    try {
      const account = await this.#call('read account', (client, signal) =>
        client.accounts.current({ signal }),
      );
      return {
        reachable: true,
        authenticated: true,
        detail: `authenticated as ${String(account?.username ?? 'unknown')}`,
      };
    } catch (error) {
      if (error instanceof ProviderError && error.httpStatus !== undefined) {
        const denied = error.httpStatus === 401 || error.httpStatus === 403;
        return {
          reachable: true,
          authenticated: false,
          detail: denied ? 'Replicate rejected the API token' : error.message,
        };
      }
      return { reachable: false, authenticated: false, detail: (error as Error).message };
    }
  }

  async #get(providerJobId: string): Promise<Prediction> {
    assertPredictionId(providerJobId);
    return this.#call('get prediction', (client, signal) =>
      client.predictions.get(providerJobId, { signal }),
    );
  }

  /** The configured secret, or Replicate's default-endpoint secret fetched once. */
  #signingSecret(): Promise<string> {
    if (!this.#webhookSecret) {
      const pending = this.#call('read webhook secret', (client, signal) =>
        client.webhooks.default.secret.get({ signal }),
      ).then((secret) => {
        if (typeof secret?.key !== 'string' || !secret.key) {
          throw new ProviderError(PROVIDER_ID, 'Replicate returned no webhook secret', {
            certain: true,
            retryable: true,
          });
        }
        return secret.key;
      });
      // A failed fetch is not cached: the next webhook tries again.
      pending.catch(() => {
        if (this.#webhookSecret === pending) this.#webhookSecret = undefined;
      });
      this.#webhookSecret = pending;
    }
    return this.#webhookSecret;
  }

  /**
   * Runs one SDK call on a client whose fetch sends at most one request (see the file header),
   * under the call deadline, and turns every failure into a classified ProviderError.
   */
  async #call<T>(
    what: string,
    run: (client: Replicate, signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    const { default: ReplicateClient } = await loadSdk();
    const real = this.#fetch;
    let first: Promise<Response> | undefined;
    const client = new ReplicateClient({
      auth: this.#apiKey,
      baseUrl: this.#baseUrl,
      userAgent: 'reelpostly',
      fetch: (url, init) => {
        first ??= real(url, init);
        return first;
      },
    });
    const signal = AbortSignal.timeout(this.#timeoutMs);
    try {
      return await run(client, signal);
    } catch (error) {
      throw this.#classify(what, error, first !== undefined, signal.aborted);
    }
  }

  #classify(what: string, error: unknown, sent: boolean, timedOut: boolean): ProviderError {
    const response = (error as { response?: unknown }).response;
    if ((error as Error)?.name === 'ApiError' && response instanceof Response) {
      const status = response.status;
      return new ProviderError(
        PROVIDER_ID,
        `Replicate ${what} failed: HTTP ${status}${this.#detail((error as Error).message)}`,
        { httpStatus: status, certain: true, retryable: status === 429 || status >= 500 },
      );
    }
    if (!sent) {
      // Failed before any request left (e.g. the SDK refused an invalid webhook URL).
      return new ProviderError(PROVIDER_ID, `Replicate ${what} not sent: ${networkDetail(error)}`, {
        certain: true,
        retryable: false,
        cause: error,
      });
    }
    if (timedOut) {
      return new ProviderError(
        PROVIDER_ID,
        `Replicate ${what} timed out after ${this.#timeoutMs} ms; the outcome is unknown`,
        { certain: false, retryable: true, cause: error },
      );
    }
    const code = errorCode(error);
    const notSent = code !== undefined && NOT_SENT_CODES.has(code);
    return new ProviderError(PROVIDER_ID, `Replicate ${what} failed: ${networkDetail(error)}`, {
      certain: notSent,
      retryable: true,
      cause: error,
    });
  }

  /** The `detail` of Replicate's problem+json error body, trimmed and scrubbed of our token. */
  #detail(message: string): string {
    const body = /failed with status \d+[^:]*: ([\s\S]*)\.$/.exec(message)?.[1] ?? '';
    let detail = body;
    try {
      const parsed = JSON.parse(body) as { detail?: unknown; title?: unknown };
      detail = String(parsed.detail ?? parsed.title ?? '');
    } catch {
      // Not JSON: keep the text.
    }
    detail = detail.split(this.#apiKey).join('[redacted]').slice(0, MAX_DETAIL_CHARS).trim();
    return detail ? ` (${detail})` : '';
  }
}

function resolveRoute(params: RouteParams): { style: ParamStyle; frame: Frame } {
  const styleName = params.paramStyle ?? STYLE_BY_MODEL[params.upstreamModel];
  const style = styleName === undefined ? undefined : PARAM_STYLES[styleName];
  if (!style) {
    throw new AppError(
      'validation_error',
      `Replicate cannot serve ${params.upstreamModel} with params '${styleName ?? '(none)'}'. Allowed: ${Object.keys(PARAM_STYLES).join(', ')}`,
      { param: 'model' },
    );
  }
  if (!MODEL_REF.test(params.upstreamModel)) {
    throw new AppError(
      'validation_error',
      `Replicate model '${params.upstreamModel}' must be written owner/name`,
      { param: 'model' },
    );
  }
  if (!style.seconds.includes(params.seconds)) {
    throw new AppError(
      'validation_error',
      `${style.label} via Replicate cannot serve seconds=${params.seconds}. Allowed: ${style.seconds.join(', ')}`,
      { param: 'seconds' },
    );
  }
  const frame = FRAMES[params.size];
  if (!frame) {
    throw new AppError(
      'validation_error',
      `${style.label} via Replicate cannot serve size=${params.size}. Allowed: ${Object.keys(FRAMES).join(', ')}`,
      { param: 'size' },
    );
  }
  return { style, frame };
}

function referenceUrl(input: SubmitInput): string | undefined {
  const reference = input.inputReference;
  if (!reference) return undefined;
  if (reference.url) return reference.url;
  if (!reference.data) return undefined;
  if (reference.data.length > MAX_INLINE_REFERENCE_BYTES) {
    throw new ProviderError(
      PROVIDER_ID,
      `Reference image is ${reference.data.length} bytes; Replicate inline inputs are limited to ${MAX_INLINE_REFERENCE_BYTES}`,
      { httpStatus: 400, certain: true, retryable: false },
    );
  }
  return referenceImageUrl(reference, 'application/octet-stream');
}

function statusOf(prediction: Prediction): ProviderJobStatus {
  const providerStatus = String(prediction.status);
  switch (prediction.status) {
    case 'starting':
      return { state: 'queued', progress: 0, providerStatus };
    case 'processing':
      return { state: 'in_progress', progress: progressOf(prediction.logs), providerStatus };
    case 'succeeded':
      return { state: 'completed', progress: 100, providerStatus };
    case 'failed':
      return { state: 'failed', progress: 0, providerStatus, error: failureOf(prediction.error) };
    case 'canceled':
      return {
        state: 'failed',
        progress: 0,
        providerStatus,
        error: { code: 'cancelled', message: 'The prediction was cancelled at Replicate.' },
      };
    case 'aborted':
      return {
        state: 'failed',
        progress: 0,
        providerStatus,
        error: {
          code: 'timeout',
          message: 'The prediction passed its deadline before it started.',
        },
      };
    default:
      throw new ProviderError(
        PROVIDER_ID,
        `Replicate reported an unknown status '${providerStatus}'`,
        {
          certain: true,
          retryable: true,
        },
      );
  }
}

/** The last percentage the model logged (tqdm and most progress printers), capped below 100. */
function progressOf(logs: string | undefined): number {
  const matches = [...(logs ?? '').matchAll(/(\d{1,3})(?:\.\d+)?\s*%/g)];
  const last = matches.at(-1)?.[1];
  if (last === undefined) return 50;
  return Math.min(99, Math.max(0, Number(last)));
}

function failureOf(error: unknown): JobError {
  const text = typeof error === 'string' ? error : error == null ? '' : JSON.stringify(error);
  const message = text.slice(0, MAX_DETAIL_CHARS) || 'The prediction failed at Replicate.';
  if (MODERATION_ERROR.test(text)) return { code: 'moderation_blocked', message };
  return { code: 'upstream_error', message };
}

function outputUrl(output: unknown): string | undefined {
  const first = Array.isArray(output) ? output[0] : output;
  return typeof first === 'string' && /^https?:\/\//.test(first) ? first : undefined;
}

function assertPredictionId(providerJobId: string): void {
  if (!PREDICTION_ID.test(providerJobId)) {
    throw new ProviderError(PROVIDER_ID, `Unknown Replicate prediction '${providerJobId}'`, {
      httpStatus: 404,
      certain: true,
      retryable: false,
    });
  }
}

function gone(message: string): ProviderError {
  return new ProviderError(PROVIDER_ID, message, {
    httpStatus: 410,
    certain: true,
    retryable: false,
  });
}

function unauthorized(reason: string): ProviderError {
  return new ProviderError(PROVIDER_ID, `Replicate webhook rejected: ${reason}`, {
    httpStatus: 401,
    certain: true,
    retryable: false,
  });
}

function errorCode(error: unknown): string | undefined {
  const cause = (error as { cause?: { code?: unknown } })?.cause;
  const code = cause?.code ?? (error as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

function networkDetail(error: unknown): string {
  const code = errorCode(error);
  const message = error instanceof Error ? error.message : String(error);
  return code ? `${message} (${code})` : message;
}
