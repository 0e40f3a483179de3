/**
 * An HTTP emulator of fal's queue API, for the FalProvider tests. It follows:
 *
 * - fal-ai/fal-js `libs/client/src/queue.ts` + `request.ts` (URL shapes: submit on the full
 *   endpoint id, status/result/cancel on the app root WITHOUT the sub-path, `fal_webhook`
 *   query, `Authorization: Key <FAL_KEY>`), `types/common.ts` (queue status shapes,
 *   `WebHookResponse`);
 * - docs.fal.ai/model-endpoints/queue (submit answer `{request_id, response_url,
 *   status_url, cancel_url}`, `IN_QUEUE` + `queue_position`, `IN_PROGRESS`, `COMPLETED`;
 *   cancel 202 `CANCELLATION_REQUESTED` / 400 `ALREADY_COMPLETED`);
 * - fal docs "Model errors" (`detail[]` of `{loc, msg, type, url}`, e.g.
 *   `content_policy_violation`, 422) and "Request errors" (`{detail, error_type}` plus
 *   header `X-Fal-Error-Type`, e.g. `request_timeout` 504, `client_cancelled` 499);
 * - docs.fal.ai/model-endpoints/webhooks (body `{request_id, gateway_request_id, status:
 *   "OK"|"ERROR", payload, error}`, headers `X-Fal-Webhook-Request-Id/-User-Id/-Timestamp/
 *   -Signature`, hex Ed25519 over `request_id\nuser_id\ntimestamp\nsha256hex(body)`,
 *   keys published as a JWKS of OKP/Ed25519 keys with base64url `x`);
 * - fal docs "Media expiration" (outputs are public CDN URLs that stop answering once
 *   expired).
 *
 * The job lifecycle runs on an injected clock: `IN_QUEUE` for the first `queuedMs`, then
 * `IN_PROGRESS` until `durationMs`, then `COMPLETED`. Prompt markers choose the outcome:
 * {@link FAL_MODERATION_MARKER} (content policy violation), {@link FAL_TIMEOUT_MARKER}
 * (request_timeout). Knobs: `latencyMs`, `failNextSubmits`, `hangNextSubmit`,
 * `failNextStatus`, `expireFiles`, `truncateFiles`, `rotateKey`, `deliverWebhook`.
 */
import { createHash, generateKeyPairSync, type KeyObject, randomUUID, sign } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import type { Clock } from '../../src/core/ports.ts';

export const FAL_MODERATION_MARKER = '[[fal:content_policy]]';
export const FAL_TIMEOUT_MARKER = '[[fal:request_timeout]]';

export interface RecordedRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: unknown;
}

export interface FalEmulatorJob {
  requestId: string;
  endpointId: string;
  /** `owner/alias`: where status/result/cancel live. */
  appRoot: string;
  input: Record<string, unknown>;
  createdAt: number;
  webhookUrl: string | null;
  cancelledAt: number | null;
}

export interface DeliveredWebhook {
  status: number;
  rawBody: Buffer;
  headers: Record<string, string>;
}

export interface FalEmulatorOptions {
  apiKey: string;
  clock: Clock;
  assetsDir: string;
  queuedMs?: number;
  durationMs?: number;
  userId?: string;
}

type Outcome = 'ok' | 'moderation' | 'timeout' | 'cancelled';

export class FalEmulator {
  readonly requests: RecordedRequest[] = [];
  readonly jobs = new Map<string, FalEmulatorJob>();
  /** Delay before every answer. */
  latencyMs = 0;
  /** Output files answer 404, as after fal's media expiration. */
  expireFiles = false;
  /** Output files announce their full Content-Length, send half, and drop the socket. */
  truncateFiles = false;

  readonly #options: Required<FalEmulatorOptions>;
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  #submitFailures: number[] = [];
  #statusFailures: number[] = [];
  #hangNextSubmit = false;
  #privateKey: KeyObject;
  #publicKey: KeyObject;
  #baseUrl = '';

  constructor(options: FalEmulatorOptions) {
    this.#options = { queuedMs: 1_000, durationMs: 10_000, userId: 'user-emulated', ...options };
    ({ privateKey: this.#privateKey, publicKey: this.#publicKey } = generateKeyPairSync('ed25519'));
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) json(res, 500, { detail: String(error) });
        else res.destroy();
      });
    });
    this.#server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
  }

  async start(): Promise<this> {
    this.#server.listen(0, '127.0.0.1');
    await once(this.#server, 'listening');
    const { port } = this.#server.address() as AddressInfo;
    this.#baseUrl = `http://127.0.0.1:${port}`;
    return this;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    this.#server.close();
    await once(this.#server, 'close');
  }

  get url(): string {
    return this.#baseUrl;
  }

  get jwksUrl(): string {
    return `${this.#baseUrl}/.well-known/jwks.json`;
  }

  /** The next `count` submits answer `status` without creating a job. */
  failNextSubmits(count: number, status: number): void {
    this.#submitFailures.push(...Array.from({ length: count }, () => status));
  }

  /** The next submit registers its job, then never answers (the client must time out). */
  hangNextSubmit(): void {
    this.#hangNextSubmit = true;
  }

  /** The next `count` status calls answer `status`. */
  failNextStatus(count: number, status: number): void {
    this.#statusFailures.push(...Array.from({ length: count }, () => status));
  }

  /** New signing key; the JWKS then publishes only the new one. */
  rotateKey(): void {
    ({ privateKey: this.#privateKey, publicKey: this.#publicKey } = generateKeyPairSync('ed25519'));
  }

  requestsTo(method: string, pattern: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && pattern.test(r.path));
  }

  /** Headers fal would send with `rawBody`, signed with `key` (default: the published key). */
  signWebhook(
    rawBody: Buffer,
    options: { requestId: string; timestampSeconds: number; key?: KeyObject },
  ): Record<string, string> {
    const timestamp = String(options.timestampSeconds);
    const bodyHash = createHash('sha256').update(rawBody).digest('hex');
    const message = Buffer.from(
      `${options.requestId}\n${this.#options.userId}\n${timestamp}\n${bodyHash}`,
    );
    return {
      'content-type': 'application/json',
      'x-fal-webhook-request-id': options.requestId,
      'x-fal-webhook-user-id': this.#options.userId,
      'x-fal-webhook-timestamp': timestamp,
      'x-fal-webhook-signature': sign(null, message, options.key ?? this.#privateKey).toString(
        'hex',
      ),
    };
  }

  /** The webhook body fal sends once the request ended. */
  webhookBody(requestId: string): Buffer {
    const job = this.#job(requestId);
    const result = this.#result(job);
    const body =
      result.status === 200
        ? {
            request_id: requestId,
            gateway_request_id: requestId,
            status: 'OK',
            payload: result.body,
          }
        : {
            request_id: requestId,
            gateway_request_id: requestId,
            status: 'ERROR',
            error: `Invalid status code: ${result.status}`,
            payload: result.body,
          };
    return Buffer.from(JSON.stringify(body));
  }

  /** POSTs the signed completion webhook of an ended job to its `fal_webhook` URL. */
  async deliverWebhook(requestId: string): Promise<DeliveredWebhook> {
    const job = this.#job(requestId);
    if (!job.webhookUrl) throw new Error(`job ${requestId} has no webhook URL`);
    if (this.#phase(job) !== 'COMPLETED') throw new Error(`job ${requestId} has not ended`);
    const rawBody = this.webhookBody(requestId);
    const headers = this.signWebhook(rawBody, {
      requestId,
      timestampSeconds: Math.floor(this.#options.clock.now() / 1000),
    });
    const response = await fetch(job.webhookUrl, {
      method: 'POST',
      headers,
      body: new Uint8Array(rawBody),
    });
    await response.arrayBuffer();
    return { status: response.status, rawBody, headers };
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', this.#baseUrl);
    const raw = await readBody(req);
    let body: unknown;
    try {
      body = raw.length > 0 ? JSON.parse(raw.toString('utf8')) : undefined;
    } catch {
      body = undefined;
    }
    const method = req.method ?? 'GET';
    this.requests.push({
      method,
      path: url.pathname,
      query: url.searchParams,
      headers: req.headers,
      body,
    });
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));

    const path = url.pathname.replace(/^\/+/, '');
    if (method === 'GET' && path === '.well-known/jwks.json') {
      const { x } = this.#publicKey.export({ format: 'jwk' });
      // fal's live JWKS pads `x`; so does ours, so clients must cope.
      return json(res, 200, { keys: [{ kty: 'OKP', crv: 'Ed25519', x: `${x}=`, use: 'sig' }] });
    }
    const file = /^cdn\/([\w-]+)\/output\.mp4$/.exec(path);
    if (method === 'GET' && file) return this.#serveFile(res, this.#job(file[1] as string));

    if (req.headers.authorization !== `Key ${this.#options.apiKey}`) {
      return json(res, 401, { detail: 'No user found for Key ID and Secret' });
    }
    const request = /^([^/]+\/[^/]+)\/requests\/([\w-]+)(\/status|\/cancel)?$/.exec(path);
    if (request) {
      const [, appRoot, requestId, action] = request as unknown as [
        string,
        string,
        string,
        string?,
      ];
      const job = this.jobs.get(requestId);
      // A request lives under its app root only; a sub-path URL does not find it.
      if (!job || job.appRoot !== appRoot) return json(res, 404, { detail: 'Request not found' });
      if (method === 'GET' && action === '/status') return this.#status(res, job);
      if (method === 'GET' && action === undefined) {
        const result = this.#result(job);
        return json(res, result.status, result.body, result.headers);
      }
      if (method === 'PUT' && action === '/cancel') return this.#cancel(res, job);
      return json(res, 405, { detail: 'Method not allowed' });
    }
    if (method === 'POST' && path.split('/').length >= 2) return this.#submit(req, res, url, body);
    return json(res, 404, { detail: 'Not found' });
  }

  #submit(req: IncomingMessage, res: ServerResponse, url: URL, body: unknown) {
    const failure = this.#submitFailures.shift();
    if (failure !== undefined) {
      return json(res, failure, { detail: `Injected failure ${failure}` });
    }
    const input =
      typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : null;
    if (!input || typeof input.prompt !== 'string') {
      return json(res, 422, {
        detail: [{ loc: ['body', 'prompt'], msg: 'field required', type: 'missing' }],
      });
    }
    const endpointId = url.pathname.replace(/^\/+/, '');
    const [owner, alias] = endpointId.split('/');
    const requestId = randomUUID();
    const job: FalEmulatorJob = {
      requestId,
      endpointId,
      appRoot: `${owner}/${alias}`,
      input,
      createdAt: this.#options.clock.now(),
      webhookUrl: url.searchParams.get('fal_webhook'),
      cancelledAt: null,
    };
    this.jobs.set(requestId, job);
    if (this.#hangNextSubmit) {
      // Accepted, but the answer never comes: the caller cannot know the job exists.
      this.#hangNextSubmit = false;
      req.socket.setTimeout(0);
      return;
    }
    const root = `${this.#baseUrl}/${job.appRoot}/requests/${requestId}`;
    json(res, 200, {
      request_id: requestId,
      gateway_request_id: requestId,
      response_url: root,
      status_url: `${root}/status`,
      cancel_url: `${root}/cancel`,
      queue_position: 0,
    });
  }

  #status(res: ServerResponse, job: FalEmulatorJob) {
    const failure = this.#statusFailures.shift();
    if (failure !== undefined) return json(res, failure, { detail: `Injected failure ${failure}` });
    const phase = this.#phase(job);
    const root = `${this.#baseUrl}/${job.appRoot}/requests/${job.requestId}`;
    const urls = {
      request_id: job.requestId,
      response_url: root,
      status_url: `${root}/status`,
      cancel_url: `${root}/cancel`,
    };
    if (phase === 'IN_QUEUE') return json(res, 200, { status: phase, queue_position: 0, ...urls });
    return json(res, 200, { status: phase, logs: null, ...urls });
  }

  #cancel(res: ServerResponse, job: FalEmulatorJob) {
    if (this.#phase(job) === 'COMPLETED') return json(res, 400, { status: 'ALREADY_COMPLETED' });
    job.cancelledAt = this.#options.clock.now();
    json(res, 202, { status: 'CANCELLATION_REQUESTED' });
  }

  #phase(job: FalEmulatorJob): 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED' {
    if (job.cancelledAt !== null) return 'COMPLETED';
    const elapsed = this.#options.clock.now() - job.createdAt;
    if (elapsed >= this.#options.durationMs) return 'COMPLETED';
    return elapsed < this.#options.queuedMs ? 'IN_QUEUE' : 'IN_PROGRESS';
  }

  #outcome(job: FalEmulatorJob): Outcome {
    if (job.cancelledAt !== null) return 'cancelled';
    const prompt = String(job.input.prompt);
    if (prompt.includes(FAL_MODERATION_MARKER)) return 'moderation';
    if (prompt.includes(FAL_TIMEOUT_MARKER)) return 'timeout';
    return 'ok';
  }

  #result(job: FalEmulatorJob): {
    status: number;
    body: unknown;
    headers?: Record<string, string>;
  } {
    if (this.#phase(job) !== 'COMPLETED') {
      return { status: 400, body: { detail: 'Request is still in progress' } };
    }
    switch (this.#outcome(job)) {
      case 'moderation':
        return {
          status: 422,
          body: {
            detail: [
              {
                loc: ['body', 'prompt'],
                msg: 'The content could not be processed because it contained material flagged by a content checker.',
                type: 'content_policy_violation',
                url: 'https://docs.fal.ai/errors#content_policy_violation',
              },
            ],
          },
        };
      case 'timeout':
        return {
          status: 504,
          body: { detail: 'Request timed out', error_type: 'request_timeout' },
          headers: { 'x-fal-error-type': 'request_timeout' },
        };
      case 'cancelled':
        return {
          status: 499,
          body: {
            detail: 'The request was cancelled by the client.',
            error_type: 'client_cancelled',
          },
          headers: { 'x-fal-error-type': 'client_cancelled' },
        };
      default: {
        const file = this.#assetPath(job);
        return {
          status: 200,
          body: {
            video: {
              url: `${this.#baseUrl}/cdn/${job.requestId}/output.mp4`,
              content_type: 'video/mp4',
              file_name: 'output.mp4',
              file_size: statSync(file).size,
            },
            seed: 42,
          },
        };
      }
    }
  }

  #assetPath(job: FalEmulatorJob): string {
    const portrait = job.input.aspect_ratio === '9:16';
    return join(this.#options.assetsDir, portrait ? 'portrait.mp4' : 'landscape.mp4');
  }

  #serveFile(res: ServerResponse, job: FalEmulatorJob) {
    if (this.expireFiles || this.#outcome(job) !== 'ok' || this.#phase(job) !== 'COMPLETED') {
      return json(res, 404, { detail: 'Not found' });
    }
    const path = this.#assetPath(job);
    const size = statSync(path).size;
    res.writeHead(200, { 'content-type': 'video/mp4', 'content-length': String(size) });
    if (this.truncateFiles) {
      const half = createReadStream(path, { start: 0, end: Math.floor(size / 2) });
      half.on('data', (chunk) => res.write(chunk));
      half.on('end', () => res.socket?.destroy());
      return;
    }
    createReadStream(path).pipe(res);
  }

  #job(requestId: string): FalEmulatorJob {
    const job = this.jobs.get(requestId);
    if (!job) throw new Error(`unknown request ${requestId}`);
    return job;
  }
}

function json(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
