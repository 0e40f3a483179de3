/**
 * Emulator of OpenRouter's asynchronous video API, following:
 *
 * - OpenRouterTeam/docs `guides/overview/multimodal/video-generation.mdx`: `POST /api/v1/videos`
 *   answers 202 `{id, polling_url, status:"pending"}`; `GET /api/v1/videos/{id}` answers
 *   `{id, polling_url, status, generation_id?, unsigned_urls?, usage?{cost,is_byok}, error?}`
 *   with status pending|in_progress|completed|failed (|cancelled|expired);
 *   `GET /api/v1/videos/{id}/content?index=0` streams video/mp4 and needs the key.
 * - OpenRouterTeam/docs `cookbook/video-generation/video-generation-webhooks.mdx`: the webhook
 *   envelope `{type:"video.generation.<status>", created_at, data:{id,status,...}}`, headers
 *   `X-OpenRouter-Signature: t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>,<raw body>")>` and
 *   `X-OpenRouter-Idempotency-Key: <job id>-<status>`.
 * - OpenRouterTeam/typescript-sdk `src/models/videogenerationrequest.ts`,
 *   `src/models/videogenerationresponse.ts`, `src/funcs/videoGeneration*.ts` (paths, 202 on
 *   create, error bodies `{error:{code,message}}`, 409/410 on content), and
 *   `src/models/operations/getcurrentkey.ts` for `GET /api/v1/key` (the cheap authenticated call).
 *
 * Deviations for testing: `callback_url` may be plain http on a loopback host (OpenRouter
 * demands https); job ids look like the SDK's documented `gen-vid-<unix s>-<20 alphanumerics>`.
 *
 * A job is `pending` for the first 10% of `jobDurationMs` on the injected clock, then
 * `in_progress`, then ends. Prompt markers pick the ending: {@link MODERATION_MARKER} fails
 * with "Content policy violation", {@link CANCELLED_MARKER} / {@link EXPIRED_MARKER} end
 * `cancelled` / `expired`, {@link CONTENT_GONE_MARKER} completes but its content answers 410.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Clock } from '../../src/core/ports.ts';

export const MODERATION_MARKER = '[[openrouter:moderation]]';
export const CANCELLED_MARKER = '[[openrouter:cancelled]]';
export const EXPIRED_MARKER = '[[openrouter:expired]]';
export const CONTENT_GONE_MARKER = '[[openrouter:content_gone]]';

type Ending = 'completed' | 'failed' | 'cancelled' | 'expired';

interface EmulatedJob {
  id: string;
  body: Record<string, unknown>;
  createdAt: number;
  ending: Ending;
  contentGone: boolean;
  webhookSent: boolean;
}

export interface RecordedRequest {
  method: string;
  /** Path with query, e.g. `/api/v1/videos/abc/content?index=0`. */
  path: string;
  headers: IncomingMessage['headers'];
  /** Parsed JSON body (POSTs), else null. */
  body: Record<string, unknown> | null;
}

export interface WebhookDelivery {
  jobId: string;
  status: number;
  rawBody: string;
  headers: Record<string, string>;
}

export interface OpenRouterEmulatorOptions {
  apiKey: string;
  clock: Clock;
  /** Time from submit to the job's end on `clock`. Default 10 000. */
  jobDurationMs?: number;
  /** Workspace signing secret used for webhooks. */
  webhookSecret?: string;
  /** Directory with landscape.mp4 / portrait.mp4. */
  assetsDir: string;
}

export interface OpenRouterEmulator {
  /** `http://127.0.0.1:<port>/api/v1`, the adapter's baseUrl. */
  baseUrl: string;
  requests: RecordedRequest[];
  /** The POST /videos requests received. */
  creates(): RecordedRequest[];
  /** Milliseconds every answer is delayed. */
  latencyMs: number;
  /** The next `count` creates answer `status` without registering a job. */
  failNextSubmits(count: number, status: number): void;
  /** The next create registers its job, then holds the answer for `ms` (a client timeout). */
  hangNextSubmit(ms: number): void;
  /** The next `count` status calls answer `status`. */
  failNextStatus(count: number, status: number): void;
  /** Content answers announce the full length but end the socket halfway. */
  truncateContent: boolean;
  /**
   * POSTs a signed webhook for every ended job with a callback_url not yet notified
   * (status 0 in the result: the receiver could not be reached).
   */
  flushWebhooks(): Promise<WebhookDelivery[]>;
  close(): Promise<void>;
}

/** `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>,<body>")>`, as the cookbook signs. */
export function openRouterSignature(secret: string, rawBody: string, unixSeconds: number): string {
  const digest = createHmac('sha256', secret).update(`${unixSeconds},${rawBody}`).digest('hex');
  return `t=${unixSeconds},v1=${digest}`;
}

const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

function newJobId(now: number): string {
  const random = [...randomBytes(20)].map((byte) => ALPHANUMERIC[byte % 62]).join('');
  return `gen-vid-${Math.floor(now / 1000)}-${random}`;
}

function endingOf(prompt: string): Ending {
  if (prompt.includes(MODERATION_MARKER)) return 'failed';
  if (prompt.includes(CANCELLED_MARKER)) return 'cancelled';
  if (prompt.includes(EXPIRED_MARKER)) return 'expired';
  return 'completed';
}

const ENDING_ERRORS: Record<Exclude<Ending, 'completed'>, string> = {
  failed: 'Content policy violation',
  cancelled: 'Job was cancelled',
  expired: 'Job exceeded maximum time to live',
};

export async function startOpenRouterEmulator(
  options: OpenRouterEmulatorOptions,
): Promise<OpenRouterEmulator> {
  const durationMs = options.jobDurationMs ?? 10_000;
  const jobs = new Map<string, EmulatedJob>();
  const requests: RecordedRequest[] = [];
  let submitFailures: { count: number; status: number } = { count: 0, status: 500 };
  let statusFailures: { count: number; status: number } = { count: 0, status: 500 };
  let hangMs = 0;
  let baseUrl = '';

  const statusOf = (job: EmulatedJob): string => {
    const elapsed = options.clock.now() - job.createdAt;
    if (elapsed >= durationMs) return job.ending;
    return elapsed < durationMs * 0.1 ? 'pending' : 'in_progress';
  };

  const present = (job: EmulatedJob): Record<string, unknown> => {
    const status = statusOf(job);
    const view: Record<string, unknown> = {
      id: job.id,
      polling_url: `${baseUrl}/videos/${job.id}`,
      status,
    };
    if (status === 'pending') return view;
    view.generation_id = `gen-${job.id.slice(8)}`;
    if (status === 'completed') {
      view.unsigned_urls = [`${baseUrl}/videos/${job.id}/content?index=0`];
      view.usage = { cost: 0.5, is_byok: false };
    } else if (status !== 'in_progress') {
      view.error = ENDING_ERRORS[status as Exclude<Ending, 'completed'>];
    }
    return view;
  };

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const fail = (res: ServerResponse, status: number, message: string) =>
    send(res, status, { error: { code: status, message } });

  const sendContent = async (res: ServerResponse, job: EmulatedJob) => {
    const orientation = job.body.aspect_ratio === '9:16' ? 'portrait' : 'landscape';
    const path = join(options.assetsDir, `${orientation}.mp4`);
    const { size } = await stat(path);
    res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': String(size) });
    if (emulator.truncateContent) {
      const bytes = await readFile(path);
      res.write(bytes.subarray(0, Math.floor(size / 2)), () => res.socket?.destroy());
      return;
    }
    createReadStream(path).pipe(res);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, raw: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://emulator');
    let body: Record<string, unknown> | null = null;
    if (req.method === 'POST') {
      try {
        body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        requests.push({ method: 'POST', path: url.pathname, headers: req.headers, body: null });
        return fail(res, 400, 'Request body is not valid JSON');
      }
    }
    requests.push({
      method: req.method ?? 'GET',
      path: `${url.pathname}${url.search}`,
      headers: req.headers,
      body,
    });
    if (emulator.latencyMs > 0) await new Promise((r) => setTimeout(r, emulator.latencyMs));

    if (req.method === 'GET' && url.pathname === '/api/v1/videos/models') {
      return send(res, 200, { data: [] });
    }
    if (req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return fail(res, 401, 'No cookie auth credentials found');
    }
    if (req.method === 'GET' && url.pathname === '/api/v1/key') {
      return send(res, 200, { data: keyMetadata() });
    }
    if (req.method === 'POST' && url.pathname === '/api/v1/videos') {
      return create(res, body ?? {});
    }
    const match = /^\/api\/v1\/videos\/([^/]+)(\/content)?$/.exec(url.pathname);
    const job = match ? jobs.get(decodeURIComponent(match[1] as string)) : undefined;
    if (req.method !== 'GET' || !match) return fail(res, 404, 'Not Found');
    if (!match[2]) {
      if (statusFailures.count > 0) {
        statusFailures.count -= 1;
        return fail(res, statusFailures.status, 'Injected status failure');
      }
      if (!job) return fail(res, 404, 'Video generation job not found');
      return send(res, 200, present(job));
    }
    if (!job) return fail(res, 404, 'Video generation job not found');
    const status = statusOf(job);
    if (status === 'pending' || status === 'in_progress') {
      return fail(res, 409, 'Video generation is not complete');
    }
    if (status !== 'completed' || job.contentGone) {
      return fail(res, 410, 'Video content is no longer available');
    }
    if ((url.searchParams.get('index') ?? '0') !== '0') return fail(res, 404, 'No such output');
    return sendContent(res, job);
  };

  const create = async (res: ServerResponse, body: Record<string, unknown>) => {
    if (submitFailures.count > 0) {
      submitFailures.count -= 1;
      return fail(res, submitFailures.status, 'Injected submit failure');
    }
    if (typeof body.model !== 'string' || body.model === '') {
      return fail(res, 400, 'model is required');
    }
    if (typeof body.prompt !== 'string' || body.prompt === '') {
      return fail(res, 400, 'prompt is required');
    }
    if (body.duration !== undefined && !Number.isInteger(body.duration)) {
      return fail(res, 400, 'duration must be an integer');
    }
    const callback = body.callback_url;
    if (callback !== undefined) {
      const parsed = parseUrl(callback);
      const loopback = parsed?.hostname === '127.0.0.1' || parsed?.hostname === 'localhost';
      if (!parsed || (parsed.protocol !== 'https:' && !loopback)) {
        return fail(res, 400, 'callback_url must be an HTTPS URL');
      }
    }
    const now = options.clock.now();
    const job: EmulatedJob = {
      id: newJobId(now),
      body,
      createdAt: now,
      ending: endingOf(body.prompt),
      contentGone: body.prompt.includes(CONTENT_GONE_MARKER),
      webhookSent: false,
    };
    jobs.set(job.id, job);
    if (hangMs > 0) {
      const wait = hangMs;
      hangMs = 0;
      await new Promise((r) => setTimeout(r, wait));
    }
    if (!res.destroyed) send(res, 202, present(job));
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        if (!res.headersSent) fail(res, 500, String(error));
        else res.destroy();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/api/v1`;

  const emulator: OpenRouterEmulator = {
    baseUrl,
    requests,
    creates: () =>
      requests.filter(
        (r) => r.method === 'POST' && r.path.replace(/\?.*/, '') === '/api/v1/videos',
      ),
    latencyMs: 0,
    truncateContent: false,
    failNextSubmits(count, status) {
      submitFailures = { count, status };
    },
    hangNextSubmit(ms) {
      hangMs = ms;
    },
    failNextStatus(count, status) {
      statusFailures = { count, status };
    },
    async flushWebhooks() {
      const deliveries: WebhookDelivery[] = [];
      for (const job of jobs.values()) {
        const status = statusOf(job);
        const callback = job.body.callback_url;
        if (job.webhookSent || typeof callback !== 'string') continue;
        if (status === 'pending' || status === 'in_progress') continue;
        const { polling_url: _pollingUrl, ...data } = present(job);
        const rawBody = JSON.stringify({
          type: `video.generation.${status}`,
          created_at: new Date(options.clock.now()).toISOString(),
          data: { ...data, model: job.body.model },
        });
        const headers: Record<string, string> = {
          'content-type': 'application/json',
          'x-openrouter-idempotency-key': `${job.id}-${status}`,
        };
        if (options.webhookSecret) {
          headers['x-openrouter-signature'] = openRouterSignature(
            options.webhookSecret,
            rawBody,
            Math.floor(options.clock.now() / 1000),
          );
        }
        // An unreachable receiver reads as status 0 and is retried by the next flush.
        const answered = await fetch(callback, { method: 'POST', headers, body: rawBody }).then(
          async (response) => {
            await response.arrayBuffer();
            return response.status;
          },
          () => 0,
        );
        job.webhookSent = answered >= 200 && answered < 300;
        deliveries.push({ jobId: job.id, status: answered, rawBody, headers });
      }
      return deliveries;
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
  return emulator;
}

function parseUrl(value: unknown): URL | null {
  if (typeof value !== 'string') return null;
  try {
    return new URL(value);
  } catch {
    return null;
  }
}

/** A `GET /key` answer shaped as `GetCurrentKeyData` in the SDK requires. */
function keyMetadata(): Record<string, unknown> {
  return {
    allowed_data_regions: ['global'],
    byok_usage: 0,
    byok_usage_daily: 0,
    byok_usage_monthly: 0,
    byok_usage_weekly: 0,
    creator_user_id: null,
    free_model_daily_requests: { limit: 50, remaining: 50, used: 0 },
    include_byok_in_limit: false,
    is_free_tier: false,
    is_management_key: false,
    is_provisioning_key: false,
    label: 'sk-or-v1-emu...',
    limit: null,
    limit_remaining: null,
    limit_reset: null,
    organization_id: null,
    rate_limit: { interval: '10s', note: 'emulated', requests: 100 },
    usage: 0,
    usage_daily: 0,
    usage_monthly: 0,
    usage_weekly: 0,
    workspace_id: null,
  };
}
