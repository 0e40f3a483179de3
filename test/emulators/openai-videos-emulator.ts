/**
 * Emulator of an OpenAI `/v1/videos`-compatible upstream (OpenAI, Azure OpenAI's
 * `/openai/v1` with an `api-key` header, new-api style relays that say `processing`).
 *
 * Follows:
 * - openai/openai-node v6 `src/resources/videos.ts` (create/retrieve/remix/downloadContent,
 *   the `Video` object, `seconds` as the STRING "4"|"8"|"12", the four sizes) and
 *   `src/internal/uploads.ts` (6.28+ always POSTs the create as multipart/form-data,
 *   nested fields bracket-encoded: `input_reference[image_url]`; the remix goes as JSON);
 * - openai/openai-openapi `openapi.yaml` (`POST /videos` takes JSON or multipart,
 *   `GET /videos/{id}/content?variant=video|thumbnail|spritesheet` answers mp4/webp/jpeg,
 *   `GET /models`, errors as `{"error":{"message","type","param","code"}}`);
 * - BerriAI/litellm PR #32602 (checked against the live API): the content endpoint
 *   answers 404 "Video is not ready yet" while the job is queued/in_progress;
 * - openai-node `src/resources/webhooks/webhooks.ts` and the Standard Webhooks spec:
 *   `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 over
 *   "id.timestamp.body">`, body `{id, object:"event", type:"video.completed"|"video.failed",
 *   created_at, data:{id}}`. Signed here with the `standardwebhooks` package, so the
 *   adapter's SDK verification is checked against an independent implementation.
 *
 * Jobs run on an injected clock: `queued` for `queuedMs`, `in_progress` (or `processing`)
 * for `runMs`, then `completed`, or `failed` with `moderation_blocked` when the prompt
 * holds {@link MODERATION_MARKER}. Faults are knobs on `emulator.faults`.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import { Webhook } from 'standardwebhooks';
import type { Clock } from '../../src/core/ports.ts';

export const MODERATION_MARKER = '[[emulate:moderation_blocked]]';

const SECONDS = ['4', '8', '12'];
const ALL_SIZES = ['720x1280', '1280x720', '1024x1792', '1792x1024'];
const MODEL_SIZES: Record<string, string[]> = {
  'sora-2': ['720x1280', '1280x720'],
  'sora-2-pro': ALL_SIZES,
};
const VARIANTS: Record<string, { suffix: string; contentType: string }> = {
  video: { suffix: '.mp4', contentType: 'video/mp4' },
  thumbnail: { suffix: '-thumbnail.webp', contentType: 'image/webp' },
  spritesheet: { suffix: '-spritesheet.jpg', contentType: 'image/jpeg' },
};

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  /** `json`, `multipart` or `none`. */
  encoding: 'json' | 'multipart' | 'none';
  /** Parsed fields; bracket-encoded multipart names are nested back into objects. */
  body: Record<string, unknown>;
  files: Array<{ field: string; filename: string; type: string; bytes: number }>;
}

export interface EmulatedJob {
  id: string;
  model: string;
  prompt: string;
  seconds: string;
  size: string;
  createdAt: number;
  remixedFrom: string | null;
  notified: boolean;
}

export interface OpenAIVideosFaults {
  /** Delay before every answer. */
  latencyMs: number;
  /** HTTP statuses the next creates answer with, one per create (job not registered). */
  createFailures: number[];
  /** The next create registers the job, then never answers (a client timeout). */
  hangNextCreate: boolean;
  /** The next create registers the job, then the socket is destroyed unanswered. */
  resetNextCreate: boolean;
  /** HTTP statuses the next status calls answer with. */
  statusFailures: number[];
  /** Content of every job answers this status (the upstream deleted the output). */
  contentGone: 404 | 410 | null;
  /** Content announces its full Content-Length, sends half, and cuts the socket. */
  truncateContent: boolean;
  /** Thumbnails and spritesheets exist (else they answer 404). */
  previews: boolean;
}

export interface OpenAIVideosEmulatorOptions {
  apiKey: string;
  clock: Clock;
  /** `authorization` (Bearer, OpenAI) or `api-key` (Azure). */
  authHeader?: 'authorization' | 'api-key';
  /** Path prefix of the API (`/v1`; Azure `/openai/v1`). */
  basePath?: string;
  /** Word for a running job: OpenAI `in_progress`, new-api `processing`. */
  runningWord?: 'in_progress' | 'processing';
  queuedMs?: number;
  runMs?: number;
  assetsDir: string;
  /** Where `deliverWebhooks` POSTs, signed with `secret` (`whsec_...`). */
  webhook?: { url: string; secret: string };
}

export interface OpenAIVideosEmulator {
  /** Base URL including the version path, for the SDK's `baseURL`. */
  baseUrl: string;
  /** Every request received, in order (to count creates and check their bodies). */
  requests: RecordedRequest[];
  jobs: Map<string, EmulatedJob>;
  faults: OpenAIVideosFaults;
  /** Requests that were creates (`POST .../videos`). */
  creates(): RecordedRequest[];
  /** POSTs a signed event for every job that ended since the last call; the HTTP statuses. */
  deliverWebhooks(): Promise<number[]>;
  close(): Promise<void>;
}

export async function startOpenAIVideosEmulator(
  options: OpenAIVideosEmulatorOptions,
): Promise<OpenAIVideosEmulator> {
  const basePath = options.basePath ?? '/v1';
  const authHeader = options.authHeader ?? 'authorization';
  const queuedMs = options.queuedMs ?? 1_000;
  const runMs = options.runMs ?? 4_000;
  const runningWord = options.runningWord ?? 'in_progress';
  const requests: RecordedRequest[] = [];
  const jobs = new Map<string, EmulatedJob>();
  const sockets = new Set<Socket>();
  const faults: OpenAIVideosFaults = {
    latencyMs: 0,
    createFailures: [],
    hangNextCreate: false,
    resetNextCreate: false,
    statusFailures: [],
    contentGone: null,
    truncateContent: false,
    previews: true,
  };

  const stateOf = (job: EmulatedJob) => {
    const elapsed = Math.max(0, options.clock.now() - job.createdAt);
    if (elapsed < queuedMs) return { status: 'queued', progress: 0 };
    if (elapsed < queuedMs + runMs) {
      return { status: runningWord, progress: Math.floor(((elapsed - queuedMs) / runMs) * 100) };
    }
    if (job.prompt.includes(MODERATION_MARKER)) return { status: 'failed', progress: 0 };
    return { status: 'completed', progress: 100 };
  };

  const videoObject = (job: EmulatedJob) => {
    const { status, progress } = stateOf(job);
    const endedAt = Math.floor((job.createdAt + queuedMs + runMs) / 1000);
    return {
      id: job.id,
      object: 'video',
      model: job.model,
      status,
      progress,
      created_at: Math.floor(job.createdAt / 1000),
      completed_at: status === 'completed' ? endedAt : null,
      expires_at: status === 'completed' ? endedAt + 3600 : null,
      prompt: job.prompt,
      size: job.size,
      seconds: job.seconds,
      remixed_from_video_id: job.remixedFrom,
      error:
        status === 'failed'
          ? {
              code: 'moderation_blocked',
              message: 'Your request was blocked by our moderation system.',
            }
          : null,
    };
  };

  const register = (fields: Omit<EmulatedJob, 'id' | 'createdAt' | 'notified'>) => {
    const job: EmulatedJob = {
      ...fields,
      id: `video_${randomBytes(16).toString('hex')}`,
      createdAt: options.clock.now(),
      notified: false,
    };
    jobs.set(job.id, job);
    return job;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, raw: Buffer) => {
    const url = new URL(req.url ?? '/', 'http://emulator');
    const record: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      encoding: 'none',
      body: {},
      files: [],
    };
    requests.push(record);
    if (faults.latencyMs > 0) await new Promise((r) => setTimeout(r, faults.latencyMs));

    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const fail = (status: number, message: string, code: string | null, param?: string) =>
      send(status, {
        error: {
          message,
          type:
            status === 401
              ? 'invalid_request_error'
              : status >= 500
                ? 'server_error'
                : 'invalid_request_error',
          param: param ?? null,
          code,
        },
      });

    const presented =
      authHeader === 'authorization'
        ? /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1]
        : req.headers['api-key'];
    if (presented !== options.apiKey) {
      return fail(401, 'Incorrect API key provided.', 'invalid_api_key');
    }
    if (!url.pathname.startsWith(basePath)) return fail(404, 'Unknown path', null);
    const route = url.pathname.slice(basePath.length);

    try {
      const parsed = await parseBody(req.headers['content-type'], raw);
      Object.assign(record, parsed);
    } catch {
      return fail(400, 'The request body could not be parsed.', 'invalid_body');
    }

    if (req.method === 'GET' && route === '/models') {
      return send(200, {
        object: 'list',
        data: Object.keys(MODEL_SIZES).map((id) => ({
          id,
          object: 'model',
          created: 1_759_708_800,
          owned_by: 'system',
        })),
      });
    }

    if (req.method === 'POST' && route === '/videos') {
      const failure = faults.createFailures.shift();
      if (failure !== undefined) {
        return fail(
          failure,
          failure === 429 ? 'Rate limit reached for requests' : `Injected error ${failure}`,
          failure === 429 ? 'rate_limit_exceeded' : null,
        );
      }
      const body = record.body;
      const prompt = body.prompt;
      if (typeof prompt !== 'string' || prompt.length === 0 || prompt.length > 32_000) {
        return fail(400, 'prompt is required (1..32000 characters).', 'invalid_value', 'prompt');
      }
      const model = String(body.model ?? 'sora-2');
      const sizes = MODEL_SIZES[model];
      if (!sizes) return fail(400, `Invalid model '${model}'.`, 'invalid_value', 'model');
      const seconds = body.seconds ?? '4';
      if (typeof seconds !== 'string' || !SECONDS.includes(seconds)) {
        return fail(
          400,
          `Invalid value for seconds: expected one of '4', '8', '12' (a string).`,
          'invalid_value',
          'seconds',
        );
      }
      const size = body.size ?? '720x1280';
      if (typeof size !== 'string' || !sizes.includes(size)) {
        return fail(
          400,
          `Invalid size '${String(size)}' for ${model}. Allowed: ${sizes.join(', ')}`,
          'invalid_value',
          'size',
        );
      }
      const file = record.files.find((f) => f.field === 'input_reference');
      if (file && !file.type.startsWith('image/')) {
        return fail(400, 'input_reference must be an image.', 'invalid_value', 'input_reference');
      }
      const job = register({ model, prompt, seconds, size, remixedFrom: null });
      if (faults.hangNextCreate) {
        faults.hangNextCreate = false;
        return;
      }
      if (faults.resetNextCreate) {
        faults.resetNextCreate = false;
        req.socket.destroy();
        return;
      }
      return send(200, videoObject(job));
    }

    const match = /^\/videos\/([^/]+)(\/content|\/remix)?$/.exec(route);
    const job = match?.[1] ? jobs.get(match[1]) : undefined;
    if (!match || !job) return fail(404, 'Video not found.', 'not_found');

    if (req.method === 'GET' && match[2] === undefined) {
      const failure = faults.statusFailures.shift();
      if (failure !== undefined) return fail(failure, `Injected error ${failure}`, null);
      return send(200, videoObject(job));
    }

    if (req.method === 'POST' && match[2] === '/remix') {
      const prompt = record.body.prompt;
      if (typeof prompt !== 'string' || prompt.length === 0) {
        return fail(400, 'prompt is required.', 'invalid_value', 'prompt');
      }
      if (stateOf(job).status !== 'completed') {
        return fail(400, 'Only completed videos can be remixed.', 'invalid_value');
      }
      const remix = register({
        model: job.model,
        prompt,
        seconds: job.seconds,
        size: job.size,
        remixedFrom: job.id,
      });
      return send(200, videoObject(remix));
    }

    if (req.method === 'GET' && match[2] === '/content') {
      const variant = url.searchParams.get('variant') ?? 'video';
      const spec = VARIANTS[variant];
      if (!spec) return fail(400, `Invalid variant '${variant}'.`, 'invalid_value', 'variant');
      if (stateOf(job).status !== 'completed') {
        return fail(
          404,
          'Video is not ready yet, use GET /v1/videos/{video_id} to check status.',
          null,
        );
      }
      if (faults.contentGone) return fail(faults.contentGone, 'Video content has expired.', null);
      if (variant !== 'video' && !faults.previews) {
        return fail(404, `No ${variant} for this video.`, null);
      }
      const [w = 0, h = 0] = job.size.split('x').map(Number);
      const path = join(options.assetsDir, `${h > w ? 'portrait' : 'landscape'}${spec.suffix}`);
      const { size } = await stat(path);
      res.writeHead(200, { 'content-type': spec.contentType, 'content-length': String(size) });
      if (faults.truncateContent) {
        const half = (await readFile(path)).subarray(0, Math.floor(size / 2));
        res.write(half, () => res.socket?.destroy());
        return;
      }
      createReadStream(path).pipe(res);
      return;
    }
    return fail(404, 'Unknown route.', null);
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      handle(req, res, Buffer.concat(chunks)).catch((error: unknown) => {
        if (!res.headersSent) {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: String(error), type: 'server_error' } }));
        }
      });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('emulator has no port');

  return {
    baseUrl: `http://127.0.0.1:${address.port}${basePath}`,
    requests,
    jobs,
    faults,
    creates: () => requests.filter((r) => r.method === 'POST' && r.path === `${basePath}/videos`),
    async deliverWebhooks() {
      const target = options.webhook;
      if (!target) throw new Error('emulator started without a webhook target');
      const signer = new Webhook(target.secret);
      const statuses: number[] = [];
      for (const job of jobs.values()) {
        const { status } = stateOf(job);
        if (job.notified || (status !== 'completed' && status !== 'failed')) continue;
        job.notified = true;
        const now = options.clock.now();
        const eventId = `evt_${randomBytes(12).toString('hex')}`;
        const payload = JSON.stringify({
          id: eventId,
          object: 'event',
          type: `video.${status}`,
          created_at: Math.floor(now / 1000),
          data: { id: job.id },
        });
        const response = await fetch(target.url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            'webhook-id': eventId,
            'webhook-timestamp': String(Math.floor(now / 1000)),
            'webhook-signature': signer.sign(eventId, new Date(now), payload),
          },
          body: payload,
        });
        await response.arrayBuffer();
        statuses.push(response.status);
      }
      return statuses;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

async function parseBody(
  contentType: string | undefined,
  raw: Buffer,
): Promise<Pick<RecordedRequest, 'encoding' | 'body' | 'files'>> {
  if (raw.length === 0) return { encoding: 'none', body: {}, files: [] };
  if (contentType?.startsWith('application/json')) {
    return { encoding: 'json', body: JSON.parse(raw.toString('utf8')), files: [] };
  }
  if (!contentType?.startsWith('multipart/form-data')) throw new Error('unsupported body');
  // Node's fetch Request carries a spec-compliant multipart parser.
  const form = await new Request('http://emulator/', {
    method: 'POST',
    headers: { 'content-type': contentType },
    body: new Uint8Array(raw),
  }).formData();
  const body: Record<string, unknown> = {};
  const files: RecordedRequest['files'] = [];
  for (const [name, value] of form.entries()) {
    if (typeof value === 'string') {
      setBracketed(body, name, value);
    } else {
      files.push({ field: name, filename: value.name, type: value.type, bytes: value.size });
    }
  }
  return { encoding: 'multipart', body, files };
}

/** `input_reference[image_url]=x` -> `{ input_reference: { image_url: 'x' } }`. */
function setBracketed(target: Record<string, unknown>, name: string, value: string): void {
  const [head = name, ...rest] = name.split('[').map((part) => part.replace(/]$/, ''));
  let node = target;
  let key = head;
  for (const part of rest) {
    const child = node[key];
    node[key] = typeof child === 'object' && child !== null ? child : {};
    node = node[key] as Record<string, unknown>;
    key = part;
  }
  node[key] = value;
}
