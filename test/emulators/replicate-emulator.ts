/**
 * Emulator of Replicate's HTTP API (predictions), following:
 *
 * - replicate/replicate-javascript `lib/predictions.js` (create `POST /models/{owner}/{name}/predictions`
 *   with `{input, webhook, webhook_events_filter}`, get `GET /predictions/{id}`, cancel
 *   `POST /predictions/{id}/cancel`), `lib/accounts.js` (`GET /account`), `lib/webhooks.js`
 *   (`GET /webhooks/default/secret` -> `{key}`), `index.d.ts` (the Prediction shape) and
 *   `index.js` (`Authorization: Bearer`);
 * - https://replicate.com/docs/topics/predictions/lifecycle (starting, processing, succeeded,
 *   failed, canceled, aborted) and /data-retention (API outputs removed after an hour);
 * - https://replicate.com/docs/topics/webhooks/verify-webhook (Standard Webhooks: `webhook-id`,
 *   `webhook-timestamp` in seconds, `webhook-signature: v1,<base64 HMAC-SHA256 of
 *   "id.timestamp.body" keyed with the base64-decoded part of the whsec_ secret>`);
 * - the model input schemas on replicate.com: google/veo-3.1 (duration 4|6|8, aspect_ratio
 *   16:9|9:16, resolution 720p|1080p, image), kwaivgi/kling-v3-video (duration 3..15, mode
 *   standard|pro, start_image), bytedance/seedance-2.0 (duration -1..15, resolution, image).
 *   Errors are problem JSON `{title, detail, status}`.
 *
 * A prediction is `starting` for `startingMs`, then `processing` (tqdm-style progress in `logs`)
 * for `processingMs` of the injected clock, then `succeeded` with an output URL on this server
 * (like replicate.delivery: no auth), which serves assets/landscape.mp4 or portrait.mp4.
 * A prompt containing {@link SENSITIVE_MARKER} ends `failed` with Replicate's E005 error.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Clock } from '../../src/core/ports.ts';

export const SENSITIVE_MARKER = '[[replicate:sensitive]]';
export const SENSITIVE_ERROR =
  'The input or output was flagged as sensitive. Please try again with different inputs. (E005)';

interface ModelSchema {
  durations: readonly number[];
  fields: Readonly<Record<string, readonly string[]>>;
  imageField: string;
}

const between = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

const MODELS: Readonly<Record<string, ModelSchema>> = {
  'google/veo-3.1': {
    durations: [4, 6, 8],
    fields: { aspect_ratio: ['16:9', '9:16'], resolution: ['720p', '1080p'] },
    imageField: 'image',
  },
  'kwaivgi/kling-v3-video': {
    durations: between(3, 15),
    fields: { aspect_ratio: ['16:9', '9:16', '1:1'], mode: ['standard', 'pro'] },
    imageField: 'start_image',
  },
  'bytedance/seedance-2.0': {
    durations: between(-1, 15),
    fields: {
      aspect_ratio: ['16:9', '4:3', '1:1', '3:4', '9:16', '21:9', 'adaptive'],
      resolution: ['480p', '720p', '1080p'],
    },
    imageField: 'image',
  },
};

const WEBHOOK_EVENTS = ['start', 'output', 'logs', 'completed'];
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'aborted']);

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: unknown;
}

interface StoredPrediction {
  id: string;
  model: string;
  input: Record<string, unknown>;
  createdAt: number;
  webhook?: string;
  webhookEvents?: string[];
  canceledAt?: number;
  notified: boolean;
}

export interface ReplicateEmulatorOptions {
  apiToken: string;
  clock: Clock;
  /** `whsec_<base64>` served at /webhooks/default/secret and used to sign webhooks. */
  webhookSecret: string;
  assetsDir: string;
  startingMs?: number;
  processingMs?: number;
}

export interface ReplicateEmulator {
  /** `http://127.0.0.1:<port>/v1`, the SDK's baseUrl. */
  baseUrl: string;
  requests: RecordedRequest[];
  /** Created predictions by id (including one whose create never got an answer). */
  predictions: Map<string, StoredPrediction>;
  knobs: {
    /** Delay before answering any API request. */
    latencyMs: number;
    /** Status codes the next creates answer, one per create, before doing anything. */
    createFailures: number[];
    /** Status codes the next prediction GETs answer. */
    getFailures: number[];
    /** The next create registers the prediction, then never answers. */
    hangNextCreate: boolean;
    /** Output files answer 404, as after Replicate's one-hour clean-up. */
    outputsExpired: boolean;
    /** Output files announce more bytes than they send, then the socket ends. */
    outputsTruncated: boolean;
  };
  /**
   * POSTs the signed `completed` webhook of every ended prediction that asked for one and was
   * not notified yet; resolves with what each receiver answered (status 0: unreachable).
   */
  deliverWebhooks(): Promise<Array<{ id: string; status: number }>>;
  close(): Promise<void>;
}

export async function startReplicateEmulator(
  options: ReplicateEmulatorOptions,
): Promise<ReplicateEmulator> {
  const startingMs = options.startingMs ?? 1_000;
  const processingMs = options.processingMs ?? 4_000;
  const predictions = new Map<string, StoredPrediction>();
  const requests: RecordedRequest[] = [];
  const knobs: ReplicateEmulator['knobs'] = {
    latencyMs: 0,
    createFailures: [],
    getFailures: [],
    hangNextCreate: false,
    outputsExpired: false,
    outputsTruncated: false,
  };
  let origin = '';

  const statusOf = (p: StoredPrediction): string => {
    const now = options.clock.now();
    const elapsed = now - p.createdAt;
    if (p.canceledAt !== undefined) return 'canceled';
    if (elapsed < startingMs) return 'starting';
    if (elapsed < startingMs + processingMs) return 'processing';
    return String(p.input.prompt ?? '').includes(SENSITIVE_MARKER) ? 'failed' : 'succeeded';
  };

  const render = (p: StoredPrediction) => {
    const status = statusOf(p);
    const iso = (ms: number) => new Date(ms).toISOString();
    const startedAt = p.createdAt + startingMs;
    const endedAt = p.canceledAt ?? startedAt + processingMs;
    const percent = Math.floor((Math.max(0, options.clock.now() - startedAt) / processingMs) * 100);
    const logs =
      status === 'starting'
        ? ''
        : status === 'processing'
          ? `Generating video\n${String(percent).padStart(3)}%|${'#'.repeat(percent / 10)}| ${percent}/100 [00:01<00:01, 1.00it/s]\n`
          : 'Generating video\n100%|##########| 100/100 [00:04<00:00, 1.00it/s]\n';
    return {
      id: p.id,
      model: p.model,
      version: 'hidden',
      input: p.input,
      logs,
      output: status === 'succeeded' ? `${origin}/files/${p.id}/output.mp4` : null,
      data_removed: false,
      error: status === 'failed' ? SENSITIVE_ERROR : null,
      status,
      source: 'api',
      created_at: iso(p.createdAt),
      started_at: status === 'starting' ? null : iso(startedAt),
      completed_at: TERMINAL.has(status) ? iso(endedAt) : null,
      urls: {
        get: `${origin}/v1/predictions/${p.id}`,
        cancel: `${origin}/v1/predictions/${p.id}/cancel`,
        web: `https://replicate.com/p/${p.id}`,
      },
      metrics: TERMINAL.has(status) ? { predict_time: processingMs / 1000 } : {},
      ...(p.webhook ? { webhook: p.webhook, webhook_events_filter: p.webhookEvents } : {}),
    };
  };

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      try {
        body = raw ? JSON.parse(raw) : null;
      } catch {
        body = raw;
      }
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      requests.push({ method: req.method ?? '', path, headers: req.headers, body });
      if (path.startsWith('/files/')) {
        void serveFile(path, res);
        return;
      }
      setTimeout(() => handleApi(req, res, path, body), knobs.latencyMs);
    });
  });

  const problem = (res: ServerResponse, status: number, title: string, detail: string) => {
    res.writeHead(status, { 'content-type': 'application/problem+json' });
    res.end(JSON.stringify({ title, detail, status }));
  };
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };

  function handleApi(req: IncomingMessage, res: ServerResponse, path: string, body: unknown) {
    if (req.headers.authorization !== `Bearer ${options.apiToken}`) {
      return problem(res, 401, 'Unauthenticated', 'You did not pass a valid authentication token');
    }
    const create = /^\/v1\/models\/([^/]+)\/([^/]+)\/predictions$/.exec(path);
    if (req.method === 'POST' && create) {
      const failure = knobs.createFailures.shift();
      if (failure !== undefined)
        return problem(res, failure, 'Injected failure', `HTTP ${failure}`);
      return createPrediction(res, `${create[1]}/${create[2]}`, body);
    }
    const get = /^\/v1\/predictions\/([a-z0-9]+)$/.exec(path);
    if (req.method === 'GET' && get) {
      const failure = knobs.getFailures.shift();
      if (failure !== undefined)
        return problem(res, failure, 'Injected failure', `HTTP ${failure}`);
      const p = predictions.get(get[1] as string);
      return p ? json(res, 200, render(p)) : problem(res, 404, 'Not found', 'Prediction not found');
    }
    const cancel = /^\/v1\/predictions\/([a-z0-9]+)\/cancel$/.exec(path);
    if (req.method === 'POST' && cancel) {
      const p = predictions.get(cancel[1] as string);
      if (!p) return problem(res, 404, 'Not found', 'Prediction not found');
      if (!TERMINAL.has(statusOf(p))) p.canceledAt = options.clock.now();
      return json(res, 200, render(p));
    }
    if (req.method === 'GET' && path === '/v1/account') {
      return json(res, 200, {
        type: 'user',
        username: 'emulator',
        name: 'Emulator',
        github_url: null,
      });
    }
    if (req.method === 'GET' && path === '/v1/webhooks/default/secret') {
      return json(res, 200, { key: options.webhookSecret });
    }
    return problem(res, 404, 'Not found', `No route ${req.method} ${path}`);
  }

  function createPrediction(res: ServerResponse, model: string, body: unknown) {
    const schema = MODELS[model];
    if (!schema) return problem(res, 404, 'Model not found', `The model ${model} does not exist`);
    const request = (body ?? {}) as Record<string, unknown>;
    const input = request.input as Record<string, unknown> | undefined;
    if (!input || typeof input !== 'object') {
      return problem(res, 422, 'Input validation failed', 'input is required');
    }
    const invalid = validate(schema, input);
    if (invalid) return problem(res, 422, 'Input validation failed', invalid);
    if (request.webhook !== undefined) {
      try {
        new URL(String(request.webhook));
      } catch {
        return problem(res, 422, 'Invalid webhook', 'webhook must be a URL');
      }
    }
    const events = request.webhook_events_filter;
    if (
      events !== undefined &&
      (!Array.isArray(events) || events.some((e) => !WEBHOOK_EVENTS.includes(String(e))))
    ) {
      return problem(res, 422, 'Invalid webhook_events_filter', `Allowed: ${WEBHOOK_EVENTS}`);
    }
    const p: StoredPrediction = {
      id: randomId(),
      model,
      input,
      createdAt: options.clock.now(),
      notified: false,
      ...(typeof request.webhook === 'string' ? { webhook: request.webhook } : {}),
      ...(Array.isArray(events) ? { webhookEvents: events.map(String) } : {}),
    };
    predictions.set(p.id, p);
    if (knobs.hangNextCreate) {
      knobs.hangNextCreate = false;
      return;
    }
    json(res, 201, render(p));
  }

  async function serveFile(path: string, res: ServerResponse): Promise<void> {
    const match = /^\/files\/([a-z0-9]+)\/output\.mp4$/.exec(path);
    const p = match ? predictions.get(match[1] as string) : undefined;
    if (!p || statusOf(p) !== 'succeeded' || knobs.outputsExpired) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('Not found');
      return;
    }
    const portrait = p.input.aspect_ratio === '9:16';
    const file = join(options.assetsDir, portrait ? 'portrait.mp4' : 'landscape.mp4');
    const { size } = await stat(file);
    if (knobs.outputsTruncated) {
      res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': size + 4096 });
      const stream = createReadStream(file);
      stream.pipe(res, { end: false });
      stream.on('end', () => res.socket?.destroy());
      return;
    }
    res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': size });
    createReadStream(file).pipe(res);
  }

  async function deliverWebhooks(): Promise<Array<{ id: string; status: number }>> {
    const deliveries: Array<{ id: string; status: number }> = [];
    for (const p of predictions.values()) {
      const wantsCompleted = !p.webhookEvents || p.webhookEvents.includes('completed');
      if (!p.webhook || p.notified || !wantsCompleted || !TERMINAL.has(statusOf(p))) continue;
      p.notified = true;
      const body = JSON.stringify(render(p));
      const id = `msg_${randomBytes(12).toString('hex')}`;
      const timestamp = String(Math.floor(options.clock.now() / 1000));
      const key = Buffer.from(options.webhookSecret.split('_').pop() ?? '', 'base64');
      const signature = createHmac('sha256', key)
        .update(`${id}.${timestamp}.${body}`)
        .digest('base64');
      const status = await fetch(p.webhook, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'webhook-id': id,
          'webhook-timestamp': timestamp,
          'webhook-signature': `v1,${signature}`,
        },
        body,
      }).then(
        async (response) => {
          await response.arrayBuffer();
          return response.status;
        },
        () => 0,
      );
      deliveries.push({ id: p.id, status });
    }
    return deliveries;
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    baseUrl: `${origin}/v1`,
    requests,
    predictions,
    knobs,
    deliverWebhooks,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function validate(schema: ModelSchema, input: Record<string, unknown>): string | null {
  if (typeof input.prompt !== 'string' || input.prompt === '') return 'prompt is required';
  if (input.duration !== undefined) {
    if (!Number.isInteger(input.duration) || !schema.durations.includes(input.duration as number)) {
      return `duration must be one of ${schema.durations.join(', ')}`;
    }
  }
  for (const [field, allowed] of Object.entries(schema.fields)) {
    if (input[field] !== undefined && !allowed.includes(String(input[field]))) {
      return `${field} must be one of ${allowed.join(', ')}`;
    }
  }
  const image = input[schema.imageField];
  if (image !== undefined && !/^(https?:|data:)/.test(String(image))) {
    return `${schema.imageField} must be a URL`;
  }
  return null;
}

/** Replicate prediction ids: 26 lowercase base32 characters. */
function randomId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  return Array.from(randomBytes(26), (b) => alphabet[b % 32]).join('');
}
