/**
 * `fal`: video models on fal's queue (https://queue.fal.run), authenticated with
 * `Authorization: Key <FAL_KEY>`.
 *
 * Contract followed (fal-ai/fal-js `libs/client/src/queue.ts`, `request.ts`,
 * `types/common.ts`; fal docs "Queue", "Webhooks", "Model errors", "Request errors"):
 *
 * - submit `POST {base}/{endpoint_id}[?fal_webhook=URL]`, body = the model input ->
 *   `{request_id, response_url, status_url, cancel_url}`;
 * - status `GET {base}/{app}/requests/{id}/status` -> `IN_QUEUE | IN_PROGRESS | COMPLETED`,
 *   where `{app}` is the endpoint id WITHOUT its sub-path (`fal-ai/kling-video`, not
 *   `fal-ai/kling-video/v3/pro/text-to-video`);
 * - result `GET {base}/{app}/requests/{id}`: the model output, or, for a COMPLETED request
 *   that failed, an error answer (`detail[]` typed model errors such as
 *   `content_policy_violation`, or a request error with `error_type` / `X-Fal-Error-Type`);
 * - cancel `PUT {base}/{app}/requests/{id}/cancel`;
 * - output files are public CDN URLs, fetched without credentials.
 *
 * SDK use: status, result and cancel go through `@fal-ai/client`. The client always builds
 * `https://queue.fal.run/...` URLs; a `requestMiddleware` rewrites that origin to the
 * configured `baseUrl` (an emulator, a regional proxy). The client's queue calls carry
 * their own retry policy (3-5 attempts, seconds apart) that overrides `config.retry`; the
 * `fetch` we hand it turns every failure into a ProviderError, which its retry loop does
 * not treat as transient, so each call is sent once and retrying stays the pipeline's job.
 * The SUBMIT uses plain fetch: it is the one call that bills, and the client's
 * `queue.submit` retries 429/502/503/504 and dropped connections, which can create (and
 * charge for) a second upstream job. Sending it ourselves makes "sent at most once"
 * independent of SDK internals.
 *
 * providerJobId: `<endpoint_id>|<request_id>`; the endpoint id tells which app root the
 * status/result/cancel URLs live under.
 *
 * Webhooks (fal docs "Webhooks" / "Verifying your webhook"): headers
 * `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` (unix s), `-Signature` (hex
 * Ed25519 over `request_id\nuser_id\ntimestamp\nsha256hex(body)`), public keys from the
 * JWKS at `https://rest.alpha.fal.ai/.well-known/jwks.json` (cached at most 24 h, as the
 * docs advise; refetched once when no cached key verifies), timestamps accepted within
 * ±300 s. The body names only the request id, never the endpoint: see
 * {@link FalProvider.verifyWebhook}.
 */
import { createHash, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { FalClient } from '@fal-ai/client';
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

const PROVIDER_ID = 'fal';
export const FAL_QUEUE_URL = 'https://queue.fal.run';
export const FAL_JWKS_URL = 'https://rest.alpha.fal.ai/.well-known/jwks.json';
const SDK_ORIGIN = 'https://queue.fal.run';
const DEFAULT_TIMEOUT_MS = 30_000;
const JWKS_TTL_MS = 24 * 60 * 60 * 1000;
/** A JWKS refetch triggered by a failed verification happens at most this often. */
const JWKS_REFETCH_COOLDOWN_MS = 60_000;
const WEBHOOK_TOLERANCE_S = 300;
/** fal reports no percentage; a running job shows this much. */
const IN_PROGRESS_PERCENT = 50;
/** A request id no job has: `check()` asks for its status to prove the key works. */
const PROBE_REQUEST_ID = '00000000-0000-0000-0000-000000000000';

// ---------------------------------------------------------------- parameter styles

interface ParamStyle {
  seconds: readonly number[];
  sizes: readonly string[];
  /** The upstream fields for seconds/size (prompt and image are added by the caller). */
  fields(seconds: number, shape: Frame): Record<string, unknown>;
}

const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);
const ALL_SIZES = Object.keys(FRAMES);

/** How each family of fal endpoints spells duration and shape (see the model API pages). */
export const FAL_PARAM_STYLES: Readonly<Record<string, ParamStyle>> = {
  // fal-ai/veo3.1, fal-ai/veo3.1/fast: duration "4s"|"6s"|"8s"; audio off halves the price.
  veo: {
    seconds: [4, 6, 8],
    sizes: ALL_SIZES,
    fields: (seconds, shape) => ({
      duration: `${seconds}s`,
      aspect_ratio: shape.aspectRatio,
      resolution: shape.resolution,
      generate_audio: false,
    }),
  },
  // fal-ai/kling-video/v3/{standard,pro}/text-to-video: duration "3".."15", no resolution field.
  kling: {
    seconds: range(3, 15),
    sizes: ALL_SIZES,
    fields: (seconds, shape) => ({
      duration: String(seconds),
      aspect_ratio: shape.aspectRatio,
      generate_audio: false,
    }),
  },
  // bytedance/seedance-2.0/text-to-video: duration "4".."15", resolution 480p|720p|1080p.
  seedance: {
    seconds: range(4, 15),
    sizes: ALL_SIZES,
    fields: (seconds, shape) => ({
      duration: String(seconds),
      aspect_ratio: shape.aspectRatio,
      resolution: shape.resolution,
      generate_audio: false,
    }),
  },
  // fal-ai/wan/v2.7/text-to-video: duration integer 2..15, resolution 720p|1080p.
  wan: {
    seconds: range(2, 15),
    sizes: ALL_SIZES,
    fields: (seconds, shape) => ({
      duration: seconds,
      aspect_ratio: shape.aspectRatio,
      resolution: shape.resolution,
    }),
  },
};

function styleOf(params: RouteParams): ParamStyle {
  const name = params.paramStyle;
  const style = name === undefined ? undefined : FAL_PARAM_STYLES[name];
  if (!style) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via fal has no parameter style '${name ?? '(none)'}'. Allowed: ${Object.keys(FAL_PARAM_STYLES).join(', ')}`,
      { param: 'model' },
    );
  }
  return style;
}

/** Pure: throws AppError `validation_error` naming the allowed values. */
export function checkFalParams(params: RouteParams): ParamStyle {
  const style = styleOf(params);
  if (!style.seconds.includes(params.seconds)) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via fal cannot serve seconds=${params.seconds}. Allowed: ${style.seconds.join(', ')}`,
      { param: 'seconds' },
    );
  }
  if (!style.sizes.includes(params.size)) {
    throw new AppError(
      'validation_error',
      `${params.upstreamModel} via fal cannot serve size=${params.size}. Allowed: ${style.sizes.join(', ')}`,
      { param: 'size' },
    );
  }
  return style;
}

// ---------------------------------------------------------------- job ids

/** `<endpoint_id>|<request_id>` */
export function formatFalJobId(endpointId: string, requestId: string): string {
  return `${endpointId}|${requestId}`;
}

function parseJobId(providerJobId: string): { endpointId: string; requestId: string } {
  const cut = providerJobId.lastIndexOf('|');
  const endpointId = providerJobId.slice(0, cut);
  const requestId = providerJobId.slice(cut + 1);
  if (cut <= 0 || !endpointId.includes('/') || !/^[\w-]+$/.test(requestId)) {
    throw new ProviderError(PROVIDER_ID, `Unknown fal job '${providerJobId}'`, {
      httpStatus: 404,
      certain: true,
      retryable: false,
    });
  }
  return { endpointId, requestId };
}

/** The fal request id inside a providerJobId: what a verified webhook names. */
export function falRequestIdOf(providerJobId: string): string {
  return parseJobId(providerJobId).requestId;
}

// ---------------------------------------------------------------- errors

/** An HTTP answer other than 2xx, with what fal said about it. */
class FalHttpError extends ProviderError {
  readonly body: unknown;
  readonly errorType: string | undefined;

  constructor(what: string, status: number, body: unknown, errorType: string | undefined) {
    super(PROVIDER_ID, `fal ${what} answered HTTP ${status}${describe(body, errorType)}`, {
      httpStatus: status,
      certain: true,
      retryable: isRetryableStatus(status),
    });
    this.name = 'FalHttpError';
    this.body = body;
    this.errorType = errorType;
  }
}

function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

function describe(body: unknown, errorType: string | undefined): string {
  const detail = detailText(body);
  const parts = [errorType, detail].filter((part) => part !== undefined && part !== '');
  return parts.length > 0 ? `: ${parts.join(': ').slice(0, 300)}` : '';
}

function detailText(body: unknown): string | undefined {
  if (!isRecord(body)) return undefined;
  const { detail } = body;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((item) => (isRecord(item) && typeof item.msg === 'string' ? item.msg : ''))
      .filter(Boolean)
      .join('; ');
  }
  return typeof body.error === 'string' ? body.error : undefined;
}

function detailTypes(body: unknown): string[] {
  if (!isRecord(body) || !Array.isArray(body.detail)) return [];
  return body.detail.flatMap((item) =>
    isRecord(item) && typeof item.type === 'string' ? [item.type] : [],
  );
}

const CONNECT_FAILURES = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && isRecord(current); depth += 1) {
    if (typeof current.code === 'string') return current.code;
    current = current.cause;
  }
  return undefined;
}

/**
 * A call that got no HTTP answer. Only a failure to connect proves the request never
 * reached fal; a timeout or a reset may come after fal accepted it. No `cause`: the SDK's
 * retry loop walks causes for transport codes, and this must not look transient to it.
 */
function transportError(what: string, error: unknown): ProviderError {
  if (error instanceof ProviderError) return error;
  const code = errorCode(error);
  const timedOut =
    error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError');
  const reason = timedOut ? 'timed out' : `failed (${code ?? (error as Error)?.name ?? 'error'})`;
  return new ProviderError(PROVIDER_ID, `fal ${what} ${reason}`, {
    certain: !timedOut && code !== undefined && CONNECT_FAILURES.has(code),
    retryable: true,
  });
}

// ---------------------------------------------------------------- webhook keys

interface Jwks {
  keys: KeyObject[];
  fetchedAt: number;
}

function keysOf(body: unknown): KeyObject[] {
  if (!isRecord(body) || !Array.isArray(body.keys)) return [];
  return body.keys.flatMap((jwk) => {
    if (!isRecord(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') return [];
    if (typeof jwk.x !== 'string') return [];
    try {
      // fal's live JWKS pads `x`; JWK wants unpadded base64url.
      const x = jwk.x.replace(/=+$/, '');
      return [createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' })];
    } catch {
      return [];
    }
  });
}

function unauthorized(message: string): ProviderError {
  return new ProviderError(PROVIDER_ID, message, {
    httpStatus: 401,
    certain: true,
    retryable: false,
  });
}

// ---------------------------------------------------------------- the provider

export interface FalProviderOptions {
  /** FAL_KEY (`key_id:key_secret`). */
  apiKey: string;
  /** Queue origin; default https://queue.fal.run. */
  baseUrl?: string;
  clock: Clock;
  fetch?: typeof fetch;
  /** Per call: until the answer's headers for downloads, the whole answer otherwise. */
  requestTimeoutMs?: number;
  /** Where fal publishes its webhook signing keys. */
  jwksUrl?: string;
  /** How long fetched webhook keys are trusted; at most 24 h per fal's docs. */
  jwksCacheMs?: number;
  /** Accepted webhook clock skew, in seconds (fal documents 5 minutes). */
  webhookToleranceSeconds?: number;
  /** Endpoint whose queue `check()` probes; any fal endpoint id works. */
  checkEndpointId?: string;
}

export function createFalProvider(options: FalProviderOptions): FalProvider {
  return new FalProvider(options);
}

/** The SDK, imported on first use, so a gateway without fal configured never loads it. */
const loadSdk = lazily(() => import('@fal-ai/client'));

export class FalProvider implements VideoProvider {
  readonly id = PROVIDER_ID;
  readonly capabilities = { remix: false, inputReference: true, idempotentSubmit: false };

  readonly #apiKey: string;
  readonly #baseUrl: string;
  readonly #clock: Clock;
  readonly #fetch: typeof fetch;
  readonly #timeoutMs: number;
  readonly #jwksUrl: string;
  readonly #jwksCacheMs: number;
  readonly #toleranceS: number;
  readonly #checkEndpointId: string;
  #client: Promise<FalClient> | undefined;
  #jwks: Jwks | null = null;

  constructor(options: FalProviderOptions) {
    if (!options.apiKey) throw new RangeError('fal apiKey is required');
    this.#apiKey = options.apiKey;
    this.#baseUrl = (options.baseUrl ?? FAL_QUEUE_URL).replace(/\/+$/, '');
    this.#clock = options.clock;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#timeoutMs = options.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#jwksUrl = options.jwksUrl ?? FAL_JWKS_URL;
    this.#jwksCacheMs = Math.min(options.jwksCacheMs ?? JWKS_TTL_MS, JWKS_TTL_MS);
    this.#toleranceS = options.webhookToleranceSeconds ?? WEBHOOK_TOLERANCE_S;
    this.#checkEndpointId = options.checkEndpointId ?? 'fal-ai/veo3.1';
  }

  /** The SDK's queue client, made on first use. */
  async #queue(): Promise<FalClient['queue']> {
    const baseUrl = this.#baseUrl;
    this.#client ??= loadSdk().then(({ createFalClient }) =>
      createFalClient({
        credentials: this.#apiKey,
        fetch: (input, init) => this.#sdkFetch(input, init),
        retry: { maxRetries: 0 },
        // The client only knows queue.fal.run; point it at the configured origin.
        requestMiddleware: async (request) =>
          request.url.startsWith(SDK_ORIGIN)
            ? { ...request, url: baseUrl + request.url.slice(SDK_ORIGIN.length) }
            : request,
      }),
    );
    return (await this.#client).queue;
  }

  checkParams(params: RouteParams): void {
    checkFalParams(params);
  }

  async submit(input: SubmitInput): Promise<{ providerJobId: string }> {
    const style = checkFalParams(input);
    const shape = FRAMES[input.size] as Frame;
    const body: Record<string, unknown> = {
      prompt: input.prompt,
      ...style.fields(input.seconds, shape),
    };
    const imageUrl = referenceImageUrl(input.inputReference);
    if (imageUrl) body.image_url = imageUrl;

    const url = new URL(`${this.#baseUrl}/${input.upstreamModel.replace(/^\/+/, '')}`);
    if (input.callbackUrl) url.searchParams.set('fal_webhook', input.callbackUrl);
    let response: Response;
    let answer: unknown;
    try {
      response = await this.#fetch(url, {
        method: 'POST',
        headers: {
          Authorization: `Key ${this.#apiKey}`,
          'Content-Type': 'application/json',
          Accept: 'application/json',
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      throw transportError('submit', error);
    }
    try {
      answer = await readJson(response);
    } catch (error) {
      // fal answered; if it said 2xx the job may exist and we lost its id.
      if (!response.ok) throw httpError('submit', response, undefined);
      throw new ProviderError(PROVIDER_ID, 'fal submit answer could not be read', {
        httpStatus: response.status,
        certain: false,
        retryable: false,
        cause: error,
      });
    }
    if (!response.ok) throw httpError('submit', response, answer);
    const requestId = isRecord(answer) ? answer.request_id : undefined;
    if (typeof requestId !== 'string' || !/^[\w-]+$/.test(requestId)) {
      throw new ProviderError(PROVIDER_ID, 'fal submit answer has no request_id', {
        httpStatus: response.status,
        certain: false,
        retryable: false,
      });
    }
    return { providerJobId: formatFalJobId(input.upstreamModel, requestId) };
  }

  async status(providerJobId: string): Promise<ProviderJobStatus> {
    const { endpointId, requestId } = parseJobId(providerJobId);
    const queue = await this.#queue();
    const status: unknown = await queue.status(endpointId, { requestId, logs: false });
    const word = isRecord(status) && typeof status.status === 'string' ? status.status : '';
    switch (word) {
      case 'IN_QUEUE':
        return { state: 'queued', progress: 0, providerStatus: word };
      case 'IN_PROGRESS':
        return { state: 'in_progress', progress: IN_PROGRESS_PERCENT, providerStatus: word };
      case 'COMPLETED': {
        // The status of a failed request also says COMPLETED: the result tells.
        const failure =
          jobErrorOf(status, undefined) ?? (await this.#resultFailure(endpointId, requestId));
        return failure
          ? { state: 'failed', progress: 0, providerStatus: word, error: failure }
          : { state: 'completed', progress: 100, providerStatus: word };
      }
      case 'CANCELED':
      case 'CANCELLED':
        return {
          state: 'failed',
          progress: 0,
          providerStatus: word,
          error: { code: 'cancelled', message: 'The request was cancelled.' },
        };
      case 'FAILED':
        return {
          state: 'failed',
          progress: 0,
          providerStatus: word,
          error: jobErrorOf(status, undefined) ?? {
            code: 'upstream_error',
            message: 'fal failed the request.',
          },
        };
      default:
        throw new ProviderError(PROVIDER_ID, `fal status answered an unknown status '${word}'`, {
          certain: true,
          retryable: true,
        });
    }
  }

  async download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null> {
    // fal's video models return the video file only.
    if (variant !== 'video') return null;
    const { endpointId, requestId } = parseJobId(providerJobId);
    const queue = await this.#queue();
    let output: unknown;
    try {
      ({ data: output } = await queue.result(endpointId, { requestId }));
    } catch (error) {
      if (error instanceof FalHttpError && jobErrorOf(error.body, error.errorType)) {
        throw new ProviderError(PROVIDER_ID, `fal request ${requestId} failed; it has no video`, {
          httpStatus: 410,
          certain: true,
          retryable: false,
        });
      }
      throw error;
    }
    const video = isRecord(output) && isRecord(output.video) ? output.video : undefined;
    if (typeof video?.url !== 'string') {
      throw new ProviderError(PROVIDER_ID, `fal request ${requestId} has no video in its result`, {
        httpStatus: 410,
        certain: true,
        retryable: false,
      });
    }
    return this.#fetchFile(video.url, video.content_type);
  }

  async cancel(providerJobId: string): Promise<void> {
    const { endpointId, requestId } = parseJobId(providerJobId);
    const queue = await this.#queue();
    try {
      await queue.cancel(endpointId, { requestId });
    } catch (error) {
      // 400 ALREADY_COMPLETED: nothing left to stop.
      const done =
        error instanceof FalHttpError &&
        error.httpStatus === 400 &&
        isRecord(error.body) &&
        error.body.status === 'ALREADY_COMPLETED';
      if (!done) throw error;
    }
  }

  /** fal's webhooks name the request id alone; our id also carries the endpoint. */
  webhookIdOf(providerJobId: string): string {
    return falRequestIdOf(providerJobId);
  }

  /**
   * Verifies fal's Ed25519 signature over the raw body. fal's webhook names only the
   * request id, so the returned providerJobId is the bare `<request_id>` (what
   * {@link falRequestIdOf} extracts from a full providerJobId), not `<endpoint>|<request>`.
   */
  async verifyWebhook(request: WebhookRequest): Promise<{ providerJobId: string }> {
    const requestId = request.headers['x-fal-webhook-request-id'];
    const userId = request.headers['x-fal-webhook-user-id'];
    const timestamp = request.headers['x-fal-webhook-timestamp'];
    const signatureHex = request.headers['x-fal-webhook-signature'];
    if (!requestId || !userId || !timestamp || !signatureHex) {
      throw unauthorized('fal webhook is missing its signature headers');
    }
    if (!/^\d+$/.test(timestamp)) throw unauthorized('fal webhook timestamp is malformed');
    const skew = Math.abs(request.now / 1000 - Number(timestamp));
    if (skew > this.#toleranceS) throw unauthorized('fal webhook timestamp is outside tolerance');
    if (!/^[0-9a-fA-F]{128}$/.test(signatureHex)) {
      throw unauthorized('fal webhook signature is malformed');
    }
    const signature = Buffer.from(signatureHex, 'hex');
    const bodyHash = createHash('sha256').update(request.rawBody).digest('hex');
    const message = Buffer.from(`${requestId}\n${userId}\n${timestamp}\n${bodyHash}`, 'utf8');
    const verifies = (keys: KeyObject[]) =>
      keys.some((key) => verify(null, message, key, signature));

    let jwks = await this.#keys(false);
    if (!verifies(jwks.keys)) {
      // fal may have rotated its keys since we cached them: look once more.
      if (this.#clock.now() - jwks.fetchedAt < JWKS_REFETCH_COOLDOWN_MS) {
        throw unauthorized('fal webhook signature does not verify');
      }
      jwks = await this.#keys(true);
      if (!verifies(jwks.keys)) throw unauthorized('fal webhook signature does not verify');
    }
    let body: unknown;
    try {
      body = JSON.parse(request.rawBody.toString('utf8'));
    } catch {
      throw unauthorized('fal webhook body is not JSON');
    }
    if (isRecord(body) && body.request_id !== undefined && body.request_id !== requestId) {
      throw unauthorized('fal webhook body names another request than its signed header');
    }
    return { providerJobId: requestId };
  }

  async check(): Promise<{ reachable: boolean; authenticated: boolean; detail: string }> {
    try {
      const queue = await this.#queue();
      await queue.status(this.#checkEndpointId, {
        requestId: PROBE_REQUEST_ID,
        logs: false,
      });
      return { reachable: true, authenticated: true, detail: 'fal queue answered' };
    } catch (error) {
      if (error instanceof FalHttpError) {
        const status = error.httpStatus ?? 0;
        if (status === 401 || status === 403) {
          return {
            reachable: true,
            authenticated: false,
            detail: `fal rejected the key (${status})`,
          };
        }
        if (status < 500) {
          // An unknown request id is refused only after the key was accepted.
          return { reachable: true, authenticated: true, detail: `fal queue answered ${status}` };
        }
        return { reachable: true, authenticated: false, detail: `fal queue answered ${status}` };
      }
      return {
        reachable: false,
        authenticated: false,
        detail: error instanceof Error ? error.message : 'fal is unreachable',
      };
    }
  }

  /** The job's own failure, when a COMPLETED request's result is an error answer. */
  async #resultFailure(endpointId: string, requestId: string): Promise<JobError | undefined> {
    const queue = await this.#queue();
    try {
      await queue.result(endpointId, { requestId });
      return undefined;
    } catch (error) {
      const failure =
        error instanceof FalHttpError ? jobErrorOf(error.body, error.errorType) : undefined;
      if (failure) return failure;
      throw error;
    }
  }

  async #keys(refresh: boolean): Promise<Jwks> {
    const now = this.#clock.now();
    if (!refresh && this.#jwks && now - this.#jwks.fetchedAt < this.#jwksCacheMs) {
      return this.#jwks;
    }
    let body: unknown;
    try {
      const response = await this.#fetch(this.#jwksUrl, {
        headers: { Accept: 'application/json' },
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      if (!response.ok) throw httpError('JWKS', response, undefined);
      body = await response.json();
    } catch (error) {
      // Cannot check signatures right now: fal retries the webhook later.
      throw transportError('JWKS fetch', error);
    }
    this.#jwks = { keys: keysOf(body), fetchedAt: now };
    return this.#jwks;
  }

  async #fetchFile(url: string, announcedType: unknown): Promise<ProviderDownload> {
    const abort = new AbortController();
    const timer = setTimeout(
      () => abort.abort(new DOMException('headers timed out', 'TimeoutError')),
      this.#timeoutMs,
    );
    let response: Response;
    try {
      // A public CDN URL: no credentials go with it.
      response = await this.#fetch(url, { signal: abort.signal });
    } catch (error) {
      throw transportError('file download', error);
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel().catch(() => undefined);
      const gone = [401, 403, 404, 410].includes(response.status);
      throw new ProviderError(
        PROVIDER_ID,
        gone
          ? `fal output file is gone (HTTP ${response.status})`
          : `fal output file download answered HTTP ${response.status}`,
        {
          httpStatus: gone ? 410 : response.status,
          certain: true,
          retryable: !gone && isRetryableStatus(response.status),
        },
      );
    }
    const length = Number(response.headers.get('content-length') ?? Number.NaN);
    const contentType =
      response.headers.get('content-type') ??
      (typeof announcedType === 'string' ? announcedType : 'video/mp4');
    return {
      body: Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
      contentType,
      ...(Number.isSafeInteger(length) && length >= 0 ? { bytes: length } : {}),
    };
  }

  /** The fetch the SDK uses: one attempt, bounded in time, every failure a ProviderError. */
  async #sdkFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    const what = `${init?.method ?? 'GET'} ${new URL(String(input instanceof Request ? input.url : input)).pathname}`;
    let response: Response;
    try {
      response = await this.#fetch(input, { ...init, signal });
    } catch (error) {
      throw transportError(what, error);
    }
    if (response.ok) return response;
    let body: unknown;
    try {
      body = await readJson(response);
    } catch {
      body = undefined;
    }
    throw httpError(what, response, body);
  }
}

function httpError(what: string, response: Response, body: unknown): FalHttpError {
  const errorType =
    response.headers.get('x-fal-error-type') ??
    (isRecord(body) && typeof body.error_type === 'string' ? body.error_type : undefined);
  return new FalHttpError(what, response.status, body, errorType);
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  return text === '' ? undefined : JSON.parse(text);
}

/** Maps fal's error answer for a finished request onto our error codes; undefined if it is not one. */
function jobErrorOf(body: unknown, headerType: string | undefined): JobError | undefined {
  const types = detailTypes(body);
  const errorType =
    headerType ??
    (isRecord(body) && typeof body.error_type === 'string' ? body.error_type : undefined);
  const message = detailText(body) || errorType || 'fal failed the request.';
  if (types.some((type) => type.includes('content_policy'))) {
    return { code: 'moderation_blocked', message };
  }
  if (errorType === 'request_timeout' || errorType === 'startup_timeout') {
    return { code: 'timeout', message };
  }
  if (errorType === 'client_cancelled') return { code: 'cancelled', message };
  if (errorType !== undefined || types.length > 0) return { code: 'upstream_error', message };
  // A bare `error` on a status answer (newer queue versions) is the job's failure too.
  if (isRecord(body) && typeof body.error === 'string' && body.error !== '') {
    return { code: 'upstream_error', message: body.error };
  }
  return undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}
