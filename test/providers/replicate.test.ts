import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { after, before, beforeEach, describe, it } from 'node:test';
import { AppError, ProviderError } from '../../src/core/errors.ts';
import type { SubmitInput, WebhookRequest } from '../../src/core/ports.ts';
import {
  createReplicateProvider,
  type ReplicateProvider,
} from '../../src/providers/replicate/replicate-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import {
  type ReplicateEmulator,
  SENSITIVE_MARKER,
  startReplicateEmulator,
} from '../emulators/replicate-emulator.ts';

const TOKEN = `r8_${randomBytes(16).toString('hex')}`;
const SECRET = `whsec_${randomBytes(24).toString('base64')}`;
const STARTING_MS = 1_000;
const PROCESSING_MS = 4_000;

let now = Date.UTC(2026, 9, 1, 12);
const clock = { now: () => now };

function provider(overrides: Partial<Parameters<typeof createReplicateProvider>[0]> = {}) {
  return createReplicateProvider({
    apiKey: TOKEN,
    baseUrl: emulator.baseUrl,
    clock,
    webhookSecret: SECRET,
    timeoutMs: 2_000,
    ...overrides,
  });
}

function job(overrides: Partial<SubmitInput> = {}): SubmitInput {
  return {
    jobId: 'video_1',
    upstreamModel: 'google/veo-3.1',
    paramStyle: 'veo',
    prompt: 'a lighthouse at dusk',
    seconds: 8,
    size: '1280x720',
    ...overrides,
  };
}

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function creates() {
  return emulator.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/predictions'));
}

async function rejectsWith(
  promise: Promise<unknown>,
  expected: { httpStatus?: number; certain?: boolean; retryable?: boolean },
): Promise<ProviderError> {
  let caught: unknown;
  await promise.catch((error: unknown) => {
    caught = error;
  });
  assert.ok(caught instanceof ProviderError, `expected a ProviderError, got ${String(caught)}`);
  for (const [key, value] of Object.entries(expected)) {
    assert.equal(caught[key as keyof ProviderError], value, `${key} of: ${caught.message}`);
  }
  assert.ok(!caught.message.includes(TOKEN), 'the token never appears in errors');
  return caught;
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

let emulator: ReplicateEmulator;
let replicate: ReplicateProvider;

before(async () => {
  emulator = await startReplicateEmulator({
    apiToken: TOKEN,
    clock,
    webhookSecret: SECRET,
    assetsDir: defaultAssetsDir(),
    startingMs: STARTING_MS,
    processingMs: PROCESSING_MS,
  });
  replicate = provider();
});

after(() => emulator.close());

beforeEach(() => {
  emulator.requests.length = 0;
  Object.assign(emulator.knobs, {
    latencyMs: 0,
    createFailures: [],
    getFailures: [],
    hangNextCreate: false,
    outputsExpired: false,
    outputsTruncated: false,
  });
});

describe('ReplicateProvider lifecycle', () => {
  it('submits once, reports queued -> in_progress -> completed, and streams the asset', async () => {
    const { providerJobId } = await replicate.submit(job());
    assert.match(providerJobId, /^[a-z0-9]{26}$/);
    assert.equal(creates().length, 1);
    const create = creates()[0];
    assert.equal(create?.path, '/v1/models/google/veo-3.1/predictions');
    assert.equal(create?.headers.authorization, `Bearer ${TOKEN}`);
    assert.deepEqual(create?.body, {
      input: {
        prompt: 'a lighthouse at dusk',
        duration: 8,
        aspect_ratio: '16:9',
        resolution: '720p',
      },
    });

    assert.deepEqual(await replicate.status(providerJobId), {
      state: 'queued',
      progress: 0,
      providerStatus: 'starting',
    });
    now += STARTING_MS + PROCESSING_MS / 2;
    assert.deepEqual(await replicate.status(providerJobId), {
      state: 'in_progress',
      progress: 50,
      providerStatus: 'processing',
    });
    now += PROCESSING_MS / 4;
    assert.equal((await replicate.status(providerJobId)).progress, 75);
    now += PROCESSING_MS;
    assert.deepEqual(await replicate.status(providerJobId), {
      state: 'completed',
      progress: 100,
      providerStatus: 'succeeded',
    });

    const download = await replicate.download(providerJobId, 'video');
    assert.ok(download);
    assert.equal(download.contentType, 'video/mp4');
    const bytes = await readAll(download.body);
    const asset = await readFile(`${defaultAssetsDir()}/landscape.mp4`);
    assert.equal(download.bytes, asset.length);
    assert.ok(bytes.equals(asset));
    const fileRequest = emulator.requests.find((r) => r.path.startsWith('/files/'));
    assert.equal(fileRequest?.headers.authorization, undefined, 'no token to the file host');

    assert.equal(await replicate.download(providerJobId, 'thumbnail'), null);
    assert.equal(await replicate.download(providerJobId, 'spritesheet'), null);
  });

  it('download before completion is a retryable 409', async () => {
    const { providerJobId } = await replicate.submit(job());
    await rejectsWith(replicate.download(providerJobId, 'video'), {
      httpStatus: 409,
      retryable: true,
    });
  });

  it('maps a cancelled prediction to failed/cancelled', async () => {
    const { providerJobId } = await replicate.submit(job());
    await replicate.cancel(providerJobId);
    const status = await replicate.status(providerJobId);
    assert.equal(status.state, 'failed');
    assert.equal(status.providerStatus, 'canceled');
    assert.equal(status.error?.code, 'cancelled');
    assert.ok(emulator.requests.some((r) => r.path === `/v1/predictions/${providerJobId}/cancel`));
  });

  it('maps a sensitive-content failure (E005) to moderation_blocked', async () => {
    const { providerJobId } = await replicate.submit(job({ prompt: `a cat ${SENSITIVE_MARKER}` }));
    now += STARTING_MS + PROCESSING_MS;
    const status = await replicate.status(providerJobId);
    assert.equal(status.state, 'failed');
    assert.equal(status.providerStatus, 'failed');
    assert.equal(status.error?.code, 'moderation_blocked');
    assert.match(status.error?.message ?? '', /flagged as sensitive/);
    await rejectsWith(replicate.download(providerJobId, 'video'), {
      httpStatus: 409,
      retryable: false,
    });
  });

  it('an unknown prediction is a non-retryable 404', async () => {
    await rejectsWith(replicate.status('doesnotexist'), {
      httpStatus: 404,
      retryable: false,
    });
    await rejectsWith(replicate.status('../account'), { httpStatus: 404, retryable: false });
  });
});

describe('ReplicateProvider parameter mapping', () => {
  const cases: Array<{ name: string; input: Partial<SubmitInput>; path: string; body: object }> = [
    {
      name: 'veo portrait 720p',
      input: { seconds: 4, size: '720x1280' },
      path: '/v1/models/google/veo-3.1/predictions',
      body: { duration: 4, aspect_ratio: '9:16', resolution: '720p' },
    },
    {
      name: 'veo 1792x1024 with a reference URL',
      input: {
        seconds: 6,
        size: '1792x1024',
        inputReference: { url: 'https://example.com/a.png' },
      },
      path: '/v1/models/google/veo-3.1/predictions',
      body: {
        duration: 6,
        aspect_ratio: '16:9',
        resolution: '1080p',
        image: 'https://example.com/a.png',
      },
    },
    {
      name: 'kling 1024x1792, uploaded bytes as a data: URL',
      input: {
        upstreamModel: 'kwaivgi/kling-v3-video',
        paramStyle: 'kling',
        seconds: 15,
        size: '1024x1792',
        inputReference: { data: Buffer.from('png-bytes'), contentType: 'image/png' },
      },
      path: '/v1/models/kwaivgi/kling-v3-video/predictions',
      body: {
        duration: 15,
        aspect_ratio: '9:16',
        mode: 'pro',
        start_image: `data:image/png;base64,${Buffer.from('png-bytes').toString('base64')}`,
      },
    },
    {
      name: 'kling 1280x720 standard mode',
      input: {
        upstreamModel: 'kwaivgi/kling-v3-video',
        paramStyle: 'kling',
        seconds: 3,
        size: '1280x720',
      },
      path: '/v1/models/kwaivgi/kling-v3-video/predictions',
      body: { duration: 3, aspect_ratio: '16:9', mode: 'standard' },
    },
    {
      name: 'seedance (style inferred from the model) with an image',
      input: {
        upstreamModel: 'bytedance/seedance-2.0',
        paramStyle: undefined,
        seconds: 10,
        size: '720x1280',
        inputReference: { url: 'https://example.com/b.jpg' },
      },
      path: '/v1/models/bytedance/seedance-2.0/predictions',
      body: {
        duration: 10,
        aspect_ratio: '9:16',
        resolution: '720p',
        image: 'https://example.com/b.jpg',
      },
    },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      await replicate.submit(job(c.input));
      assert.equal(creates().length, 1);
      assert.equal(creates()[0]?.path, c.path);
      assert.deepEqual(creates()[0]?.body, {
        input: { prompt: 'a lighthouse at dusk', ...c.body },
      });
    });
  }

  it('asks for the completed webhook when a callback URL is given', async () => {
    await replicate.submit(job({ callbackUrl: 'https://gw.example.com/hooks/replicate' }));
    assert.deepEqual(creates()[0]?.body, {
      input: {
        prompt: 'a lighthouse at dusk',
        duration: 8,
        aspect_ratio: '16:9',
        resolution: '720p',
      },
      webhook: 'https://gw.example.com/hooks/replicate',
      webhook_events_filter: ['completed'],
    });
  });
});

describe('ReplicateProvider.checkParams', () => {
  const rejects = (params: Partial<SubmitInput>, param: string, message: string) => {
    assert.throws(
      () => replicate.checkParams(job(params)),
      (error: unknown) =>
        error instanceof AppError &&
        error.code === 'validation_error' &&
        error.param === param &&
        error.message === message,
    );
  };

  it('names the allowed seconds', () => {
    rejects(
      { seconds: 5 },
      'seconds',
      'Veo via Replicate cannot serve seconds=5. Allowed: 4, 6, 8',
    );
    rejects(
      { upstreamModel: 'kwaivgi/kling-v3-video', paramStyle: 'kling', seconds: 20 },
      'seconds',
      'Kling via Replicate cannot serve seconds=20. Allowed: 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15',
    );
    rejects(
      { upstreamModel: 'bytedance/seedance-2.0', paramStyle: 'seedance', seconds: 3 },
      'seconds',
      'Seedance via Replicate cannot serve seconds=3. Allowed: 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15',
    );
  });

  it('names the allowed sizes', () => {
    rejects(
      { size: '640x480' },
      'size',
      'Veo via Replicate cannot serve size=640x480. Allowed: 1280x720, 720x1280, 1792x1024, 1024x1792',
    );
  });

  it('rejects unknown styles and malformed model refs', () => {
    rejects(
      { paramStyle: 'sora' },
      'model',
      "Replicate cannot serve google/veo-3.1 with params 'sora'. Allowed: veo, kling, seedance",
    );
    rejects(
      { upstreamModel: 'veo', paramStyle: 'veo' },
      'model',
      "Replicate model 'veo' must be written owner/name",
    );
  });

  it('accepts every supported combination without I/O', () => {
    const before = emulator.requests.length;
    replicate.checkParams(job({ seconds: 4, size: '1024x1792' }));
    replicate.checkParams(
      job({ upstreamModel: 'kwaivgi/kling-v3-video', paramStyle: undefined, seconds: 12 }),
    );
    assert.equal(emulator.requests.length, before);
  });

  it('submit refuses invalid parameters before any request', async () => {
    await rejectsWith(replicate.submit(job({ seconds: 5 })), {
      httpStatus: 400,
      certain: true,
      retryable: false,
    });
    assert.equal(creates().length, 0);
  });
});

describe('ReplicateProvider error classification', () => {
  for (const status of [429, 500]) {
    it(`create answered ${status}: certain, retryable, sent exactly once (no SDK retry)`, async () => {
      emulator.knobs.createFailures = [status];
      await rejectsWith(replicate.submit(job()), {
        httpStatus: status,
        certain: true,
        retryable: true,
      });
      assert.equal(creates().length, 1);
    });
  }

  it('create answered 400: certain, not retryable', async () => {
    emulator.knobs.createFailures = [400];
    await rejectsWith(replicate.submit(job()), {
      httpStatus: 400,
      certain: true,
      retryable: false,
    });
    assert.equal(creates().length, 1);
  });

  it('an unknown model (404) is certain, not retryable, and carries the detail', async () => {
    const error = await rejectsWith(replicate.submit(job({ upstreamModel: 'google/veo-9' })), {
      httpStatus: 404,
      certain: true,
      retryable: false,
    });
    assert.match(error.message, /does not exist/);
  });

  it('an input the model refuses (422) is certain, not retryable', async () => {
    const misrouted = job({ paramStyle: 'seedance', seconds: 10 });
    const error = await rejectsWith(replicate.submit(misrouted), {
      httpStatus: 422,
      certain: true,
      retryable: false,
    });
    assert.match(error.message, /duration must be one of 4, 6, 8/);
    assert.equal(creates().length, 1);
  });

  it('a wrong token (401): certain, not retryable, token not echoed', async () => {
    const wrong = provider({ apiKey: 'r8_wrong' });
    const error = await rejectsWith(wrong.submit(job()), {
      httpStatus: 401,
      certain: true,
      retryable: false,
    });
    assert.ok(!error.message.includes('r8_wrong'));
  });

  it('connection refused: certain, retryable', async () => {
    const down = provider({ baseUrl: `http://127.0.0.1:${await closedPort()}/v1` });
    await rejectsWith(down.submit(job()), { certain: true, retryable: true });
  });

  it('a create that times out after it was sent: certain false, exactly one create', async () => {
    emulator.knobs.hangNextCreate = true;
    // Long enough for a loaded machine to deliver the request before the client gives up.
    const impatient = provider({ timeoutMs: 1000 });
    const error = await rejectsWith(impatient.submit(job()), { certain: false, retryable: true });
    assert.match(error.message, /outcome is unknown/);
    assert.equal(creates().length, 1);
  });

  it('a failing status check is retryable and not retried inside the adapter', async () => {
    const { providerJobId } = await replicate.submit(job());
    emulator.knobs.getFailures = [503];
    await rejectsWith(replicate.status(providerJobId), { httpStatus: 503, retryable: true });
    const gets = emulator.requests.filter((r) => r.path === `/v1/predictions/${providerJobId}`);
    assert.equal(gets.length, 1);
    assert.equal((await replicate.status(providerJobId)).state, 'queued');
  });

  it('latency below the timeout is fine', async () => {
    emulator.knobs.latencyMs = 30;
    const { providerJobId } = await replicate.submit(job());
    assert.equal((await replicate.status(providerJobId)).state, 'queued');
  });
});

describe('ReplicateProvider downloads', () => {
  async function completed(): Promise<string> {
    const { providerJobId } = await replicate.submit(job({ size: '720x1280', seconds: 4 }));
    now += STARTING_MS + PROCESSING_MS;
    return providerJobId;
  }

  it('an expired output (404 after the one-hour clean-up) is gone: not retryable', async () => {
    const providerJobId = await completed();
    emulator.knobs.outputsExpired = true;
    await rejectsWith(replicate.download(providerJobId, 'video'), {
      httpStatus: 410,
      retryable: false,
    });
  });

  it('a truncated body is detected', async () => {
    const providerJobId = await completed();
    emulator.knobs.outputsTruncated = true;
    const download = await replicate.download(providerJobId, 'video');
    assert.ok(download?.bytes);
    const asset = await readFile(`${defaultAssetsDir()}/portrait.mp4`);
    assert.equal(download.bytes, asset.length + 4096);
    let received = 0;
    let failed = false;
    try {
      for await (const chunk of download.body) received += (chunk as Buffer).length;
    } catch {
      failed = true;
    }
    assert.ok(failed || received !== download.bytes, 'truncation must be visible');
  });

  it('a file host down is retryable', async () => {
    const providerJobId = await completed();
    const port = await closedPort();
    const redirected = provider({
      fetch: (url, init) =>
        fetch(String(url).includes('/files/') ? `http://127.0.0.1:${port}/x` : url, init),
    });
    await rejectsWith(redirected.download(providerJobId, 'video'), { retryable: true });
  });
});

describe('ReplicateProvider webhooks', () => {
  let receiver: Server;
  let callbackUrl: string;
  const received: WebhookRequest[] = [];

  before(async () => {
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const headers: Record<string, string | undefined> = {};
        for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v[0] : v;
        received.push({ rawBody: Buffer.concat(chunks), headers, now: clock.now() });
        res.writeHead(200).end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    callbackUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/replicate`;
  });
  after(() => new Promise((resolve) => receiver.close(resolve)));

  async function deliveredWebhook(): Promise<{ request: WebhookRequest; providerJobId: string }> {
    received.length = 0;
    const { providerJobId } = await replicate.submit(job({ callbackUrl }));
    now += STARTING_MS + PROCESSING_MS;
    const deliveries = await emulator.deliverWebhooks();
    assert.deepEqual(
      deliveries.filter((d) => d.id === providerJobId),
      [{ id: providerJobId, status: 200 }],
    );
    const request = received.find((r) => r.rawBody.includes(providerJobId));
    assert.ok(request);
    return { request, providerJobId };
  }

  it('accepts a genuine signed webhook and names the prediction', async () => {
    const { request, providerJobId } = await deliveredWebhook();
    assert.match(request.headers['webhook-signature'] ?? '', /^v1,/);
    assert.deepEqual(await replicate.verifyWebhook(request), { providerJobId });
  });

  it('fetches the default secret once when none is configured', async () => {
    const { request, providerJobId } = await deliveredWebhook();
    const unconfigured = provider({ webhookSecret: undefined });
    assert.deepEqual(await unconfigured.verifyWebhook(request), { providerJobId });
    assert.deepEqual(await unconfigured.verifyWebhook(request), { providerJobId });
    const secretReads = emulator.requests.filter((r) => r.path === '/v1/webhooks/default/secret');
    assert.equal(secretReads.length, 1);
  });

  it('rejects a tampered body', async () => {
    const { request } = await deliveredWebhook();
    const body = request.rawBody.toString('utf8').replace('"succeeded"', '"failed"');
    await rejectsWith(replicate.verifyWebhook({ ...request, rawBody: Buffer.from(body) }), {
      httpStatus: 401,
      certain: true,
      retryable: false,
    });
  });

  it('rejects a signature made with another secret', async () => {
    const { request } = await deliveredWebhook();
    const other = provider({ webhookSecret: `whsec_${randomBytes(24).toString('base64')}` });
    await rejectsWith(other.verifyWebhook(request), { httpStatus: 401 });
  });

  it('rejects a stale or future timestamp', async () => {
    const { request } = await deliveredWebhook();
    await rejectsWith(replicate.verifyWebhook({ ...request, now: request.now + 301_000 }), {
      httpStatus: 401,
    });
    await rejectsWith(replicate.verifyWebhook({ ...request, now: request.now - 301_000 }), {
      httpStatus: 401,
    });
    assert.ok(await replicate.verifyWebhook({ ...request, now: request.now + 299_000 }));
  });

  it('rejects missing headers', async () => {
    const { request } = await deliveredWebhook();
    for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const headers = { ...request.headers, [header]: undefined };
      await rejectsWith(replicate.verifyWebhook({ ...request, headers }), { httpStatus: 401 });
    }
  });
});

describe('ReplicateProvider.check', () => {
  it('reports reachable and authenticated with the right token', async () => {
    const result = await replicate.check();
    assert.equal(result.reachable, true);
    assert.equal(result.authenticated, true);
    assert.ok(emulator.requests.some((r) => r.method === 'GET' && r.path === '/v1/account'));
  });

  it('reports not authenticated with a wrong token', async () => {
    const result = await provider({ apiKey: 'r8_wrong' }).check();
    assert.deepEqual(
      { reachable: result.reachable, authenticated: result.authenticated },
      { reachable: true, authenticated: false },
    );
    assert.ok(!result.detail.includes('r8_wrong'));
  });

  it('reports unreachable when nothing listens', async () => {
    const result = await provider({ baseUrl: `http://127.0.0.1:${await closedPort()}/v1` }).check();
    assert.equal(result.reachable, false);
    assert.equal(result.authenticated, false);
  });
});
