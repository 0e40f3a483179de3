import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AppError, ProviderError } from '../../src/core/errors.ts';
import type { ProviderDownload, SubmitInput, WebhookRequest } from '../../src/core/ports.ts';
import {
  type checkOpenRouterParams,
  OpenRouterProvider,
} from '../../src/providers/openrouter/openrouter-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import {
  CANCELLED_MARKER,
  CONTENT_GONE_MARKER,
  EXPIRED_MARKER,
  MODERATION_MARKER,
  type OpenRouterEmulator,
  openRouterSignature,
  startOpenRouterEmulator,
} from '../emulators/openrouter-emulator.ts';

const API_KEY = 'sk-or-v1-test-key';
const SECRET = 'whsec-openrouter-test';
const DURATION_MS = 10_000;
const assetsDir = defaultAssetsDir();

let now = 1_800_000_000_000;
const clock = { now: () => now };

function provider(
  emulator: OpenRouterEmulator,
  extra: Partial<ConstructorParameters<typeof OpenRouterProvider>[0]> = {},
) {
  return new OpenRouterProvider({
    apiKey: API_KEY,
    baseUrl: emulator.baseUrl,
    clock,
    webhookSecret: SECRET,
    ...extra,
  });
}

function input(overrides: Partial<SubmitInput> = {}): SubmitInput {
  return {
    jobId: 'video_test',
    upstreamModel: 'google/veo-3.1',
    prompt: 'A lighthouse at dawn',
    seconds: 8,
    size: '1280x720',
    paramStyle: 'openrouter',
    ...overrides,
  };
}

async function readAll(download: ProviderDownload): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of download.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function rejectsWith(
  promise: Promise<unknown>,
  expected: Partial<Pick<ProviderError, 'httpStatus' | 'certain' | 'retryable'>>,
): Promise<ProviderError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ProviderError, `expected ProviderError, got ${String(error)}`);
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(error[key as keyof ProviderError], value, `${key} of ${error.message}`);
    }
    assert.ok(!error.message.includes(API_KEY), 'the API key leaked into a message');
    return error;
  }
  assert.fail('expected a rejection');
}

describe('OpenRouterProvider against the OpenRouter emulator', () => {
  let emulator: OpenRouterEmulator;
  let openrouter: OpenRouterProvider;

  before(async () => {
    emulator = await startOpenRouterEmulator({
      apiKey: API_KEY,
      clock,
      jobDurationMs: DURATION_MS,
      webhookSecret: SECRET,
      assetsDir,
    });
    openrouter = provider(emulator);
  });
  after(() => emulator.close());

  it('runs a job from submit to a downloaded video', async () => {
    const { providerJobId } = await openrouter.submit(input());
    assert.match(providerJobId, /^gen-vid-\d+-[A-Za-z0-9]{20}$/);
    assert.deepEqual(await openrouter.status(providerJobId), {
      state: 'queued',
      progress: 0,
      providerStatus: 'pending',
    });
    now += DURATION_MS / 2;
    assert.equal((await openrouter.status(providerJobId)).state, 'in_progress');
    await rejectsWith(openrouter.download(providerJobId, 'video'), {
      httpStatus: 409,
      retryable: true,
    });
    now += DURATION_MS;
    assert.deepEqual(await openrouter.status(providerJobId), {
      state: 'completed',
      progress: 100,
      providerStatus: 'completed',
    });
    const download = await openrouter.download(providerJobId, 'video');
    assert.ok(download);
    const expected = await readFile(join(assetsDir, 'landscape.mp4'));
    assert.equal(download.contentType, 'video/mp4');
    assert.equal(download.bytes, expected.length);
    assert.ok((await readAll(download)).equals(expected));
    assert.equal(await openrouter.download(providerJobId, 'thumbnail'), null);
    assert.equal(await openrouter.download(providerJobId, 'spritesheet'), null);
    const content = emulator.requests.at(-1);
    assert.equal(content?.path, `/api/v1/videos/${providerJobId}/content?index=0`);
    assert.equal(content?.headers.authorization, `Bearer ${API_KEY}`);
  });

  it('maps seconds and size onto duration, aspect_ratio and resolution', async () => {
    const cases: Array<[Partial<SubmitInput>, Record<string, unknown>]> = [
      [
        { upstreamModel: 'google/veo-3.1-fast', seconds: 8, size: '1280x720' },
        { duration: 8, aspect_ratio: '16:9', resolution: '720p' },
      ],
      [
        { upstreamModel: 'kwaivgi/kling-v3.0-pro', seconds: 12, size: '720x1280' },
        { duration: 12, aspect_ratio: '9:16', resolution: '720p' },
      ],
      [
        { upstreamModel: 'bytedance/seedance-2.0', seconds: 5, size: '1792x1024' },
        { duration: 5, aspect_ratio: '16:9', resolution: '1080p' },
      ],
      [
        { upstreamModel: 'alibaba/wan-2.7', seconds: 2, size: '1024x1792', paramStyle: undefined },
        { duration: 2, aspect_ratio: '9:16', resolution: '1080p' },
      ],
    ];
    for (const [overrides, mapped] of cases) {
      const submitted = input(overrides);
      await openrouter.submit(submitted);
      assert.deepEqual(emulator.creates().at(-1)?.body, {
        model: submitted.upstreamModel,
        prompt: submitted.prompt,
        ...mapped,
      });
    }
  });

  it('sends input_reference as a first frame (URL as is, bytes as a data: URL) and the callback', async () => {
    await openrouter.submit(
      input({
        inputReference: { url: 'https://example.com/first.png' },
        callbackUrl: 'https://127.0.0.1:9/openrouter',
      }),
    );
    const body = emulator.creates().at(-1)?.body;
    assert.deepEqual(body?.frame_images, [
      {
        type: 'image_url',
        image_url: { url: 'https://example.com/first.png' },
        frame_type: 'first_frame',
      },
    ]);
    assert.equal(body?.callback_url, 'https://127.0.0.1:9/openrouter');

    await openrouter.submit(
      input({ inputReference: { data: Buffer.from('fake-jpeg'), contentType: 'image/jpeg' } }),
    );
    assert.deepEqual(emulator.creates().at(-1)?.body?.frame_images, [
      {
        type: 'image_url',
        image_url: { url: `data:image/jpeg;base64,${Buffer.from('fake-jpeg').toString('base64')}` },
        frame_type: 'first_frame',
      },
    ]);
  });

  it('checkParams rejects what a route cannot serve, naming the allowed values, with no I/O', () => {
    const rejects = (
      params: Parameters<typeof checkOpenRouterParams>[0],
      pattern: RegExp,
      param: string,
    ) =>
      assert.throws(
        () => openrouter.checkParams(params),
        (error: unknown) =>
          error instanceof AppError &&
          error.code === 'validation_error' &&
          error.param === param &&
          pattern.test(error.message),
      );
    rejects(
      { upstreamModel: 'google/veo-3.1', paramStyle: 'openrouter', seconds: 5, size: '1280x720' },
      /^google\/veo-3\.1 via openrouter cannot serve seconds=5\. Allowed: 4, 6, 8$/,
      'seconds',
    );
    rejects(
      { upstreamModel: 'alibaba/wan-2.7', paramStyle: 'openrouter', seconds: 16, size: '1280x720' },
      /Allowed: 2, 3, 4, .*, 15$/,
      'seconds',
    );
    rejects(
      { upstreamModel: 'google/veo-3.1', paramStyle: 'openrouter', seconds: 8, size: '640x480' },
      /cannot serve size=640x480\. Allowed: 1280x720, 720x1280, 1792x1024, 1024x1792$/,
      'size',
    );
    rejects(
      { upstreamModel: 'minimax/unknown', paramStyle: 'openrouter', seconds: 8, size: '1280x720' },
      /not a model the openrouter adapter knows\. Allowed: google\/veo-3\.1, /,
      'model',
    );
    rejects(
      { upstreamModel: 'google/veo-3.1', paramStyle: 'veo', seconds: 8, size: '1280x720' },
      /no parameter style 'veo'\. Allowed: openrouter/,
      'model',
    );
    const before = emulator.requests.length;
    openrouter.checkParams({
      upstreamModel: 'kwaivgi/kling-v3.0-pro',
      seconds: 3,
      size: '720x1280',
    });
    assert.equal(emulator.requests.length, before);
    const extended = provider(emulator, {
      models: { 'minimax/hailuo-2.3': { durations: [6, 10], resolutions: ['1080p'] } },
    });
    extended.checkParams({ upstreamModel: 'minimax/hailuo-2.3', seconds: 6, size: '1792x1024' });
  });

  it('maps failed (moderation), cancelled and expired jobs onto failed with a reason', async () => {
    const ids = {
      moderation: (await openrouter.submit(input({ prompt: `A fight ${MODERATION_MARKER}` })))
        .providerJobId,
      cancelled: (await openrouter.submit(input({ prompt: `x ${CANCELLED_MARKER}` })))
        .providerJobId,
      expired: (await openrouter.submit(input({ prompt: `x ${EXPIRED_MARKER}` }))).providerJobId,
    };
    now += DURATION_MS;
    assert.deepEqual(await openrouter.status(ids.moderation), {
      state: 'failed',
      progress: 0,
      providerStatus: 'failed',
      error: { code: 'moderation_blocked', message: 'Content policy violation' },
    });
    const cancelled = await openrouter.status(ids.cancelled);
    assert.equal(cancelled.state, 'failed');
    assert.equal(cancelled.error?.code, 'cancelled');
    const expired = await openrouter.status(ids.expired);
    assert.equal(expired.state, 'failed');
    assert.deepEqual(expired.error, {
      code: 'expired',
      message: 'Job exceeded maximum time to live',
    });
  });

  it('classifies submit failures by whether the upstream surely did not accept the job', async () => {
    for (const [status, retryable] of [
      [429, true],
      [500, true],
      [503, true],
      [400, false],
      [401, false],
      [422, false],
    ] as const) {
      emulator.failNextSubmits(1, status);
      await rejectsWith(openrouter.submit(input()), {
        httpStatus: status,
        certain: true,
        retryable,
      });
    }
    const wrongKey = provider(emulator, { apiKey: 'sk-or-v1-wrong' });
    const denied = await rejectsWith(wrongKey.submit(input()), {
      httpStatus: 401,
      certain: true,
      retryable: false,
    });
    assert.ok(!denied.message.includes('sk-or-v1-wrong'));
  });

  it('reports connection refused as certain and retryable', async () => {
    const closed = await startOpenRouterEmulator({ apiKey: API_KEY, clock, assetsDir });
    const baseUrl = closed.baseUrl;
    await closed.close();
    const offline = new OpenRouterProvider({ apiKey: API_KEY, baseUrl, clock });
    await rejectsWith(offline.submit(input()), { certain: true, retryable: true });
    await rejectsWith(offline.status('gen-vid-1-x'), { certain: true, retryable: true });
    assert.deepEqual(await offline.check(), {
      reachable: false,
      authenticated: false,
      detail: 'OpenRouter could not be reached',
    });
  });

  it('a submit that times out after sending is uncertain, and the create was sent once', async () => {
    // Long enough for a loaded machine to deliver the request before the client gives up.
    const impatient = provider(emulator, { timeoutMs: 1000 });
    const creates = emulator.creates().length;
    emulator.hangNextSubmit(3000);
    await rejectsWith(impatient.submit(input()), { certain: false });
    assert.equal(emulator.creates().length, creates + 1);
  });

  it('classifies status failures as retryable (5xx) or not (404)', async () => {
    emulator.failNextStatus(1, 502);
    await rejectsWith(openrouter.status('gen-vid-1-anything'), {
      httpStatus: 502,
      retryable: true,
    });
    await rejectsWith(openrouter.status('gen-vid-1-unknown'), {
      httpStatus: 404,
      retryable: false,
    });
  });

  it('treats expired content as gone (not retryable)', async () => {
    const { providerJobId } = await openrouter.submit(
      input({ prompt: `x ${CONTENT_GONE_MARKER}` }),
    );
    now += DURATION_MS;
    assert.equal((await openrouter.status(providerJobId)).state, 'completed');
    await rejectsWith(openrouter.download(providerJobId, 'video'), {
      httpStatus: 410,
      certain: true,
      retryable: false,
    });
    await rejectsWith(openrouter.download('gen-vid-1-missing', 'video'), {
      httpStatus: 404,
      retryable: false,
    });
  });

  it('detects truncated content', async () => {
    const { providerJobId } = await openrouter.submit(input({ size: '720x1280' }));
    now += DURATION_MS;
    emulator.truncateContent = true;
    try {
      const download = await openrouter.download(providerJobId, 'video');
      assert.ok(download);
      const expected = await readFile(join(assetsDir, 'portrait.mp4'));
      assert.equal(download.bytes, expected.length);
      const outcome = await readAll(download).then(
        (bytes) => bytes.length,
        (error: unknown) => error,
      );
      assert.ok(
        outcome instanceof Error || outcome !== download.bytes,
        `a truncated body must error or come up short, got ${String(outcome)}`,
      );
    } finally {
      emulator.truncateContent = false;
    }
  });

  describe('webhooks', () => {
    let receiver: Server;
    let received: WebhookRequest[];
    let callbackUrl: string;

    before(async () => {
      received = [];
      receiver = createServer((req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (chunk: Buffer) => chunks.push(chunk));
        req.on('end', () => {
          const headers: Record<string, string> = {};
          for (const [name, value] of Object.entries(req.headers)) {
            if (typeof value === 'string') headers[name] = value;
          }
          received.push({ rawBody: Buffer.concat(chunks), headers, now: clock.now() });
          res.writeHead(204).end();
        });
      });
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      callbackUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/openrouter`;
    });
    after(() => new Promise<void>((resolve) => receiver.close(() => resolve())));

    async function deliveredWebhook(prompt = 'A webhook job'): Promise<{
      request: WebhookRequest;
      providerJobId: string;
    }> {
      const { providerJobId } = await openrouter.submit(input({ prompt, callbackUrl }));
      now += DURATION_MS;
      const deliveries = await emulator.flushWebhooks();
      const delivery = deliveries.find((d) => d.jobId === providerJobId);
      assert.equal(delivery?.status, 204);
      const request = received.find((r) => r.rawBody.toString('utf8') === delivery?.rawBody);
      assert.ok(request);
      return { request, providerJobId };
    }

    it('accepts a genuine webhook and names the job', async () => {
      const { request, providerJobId } = await deliveredWebhook();
      assert.deepEqual(await openrouter.verifyWebhook(request), { providerJobId });
      const body = JSON.parse(request.rawBody.toString('utf8'));
      assert.equal(body.type, 'video.generation.completed');
      assert.equal(request.headers['x-openrouter-idempotency-key'], `${providerJobId}-completed`);
    });

    it('accepts a failure webhook too', async () => {
      const { request, providerJobId } = await deliveredWebhook(`x ${MODERATION_MARKER}`);
      assert.equal(JSON.parse(request.rawBody.toString('utf8')).type, 'video.generation.failed');
      assert.deepEqual(await openrouter.verifyWebhook(request), { providerJobId });
    });

    it('rejects tampered bodies, wrong secrets, stale timestamps and missing headers', async () => {
      const { request } = await deliveredWebhook();
      const rejected = (candidate: WebhookRequest, via = openrouter) =>
        rejectsWith(via.verifyWebhook(candidate), {
          httpStatus: 401,
          certain: true,
          retryable: false,
        });

      const tampered = Buffer.from(
        request.rawBody.toString('utf8').replace('completed', 'cancelled'),
      );
      await rejected({ ...request, rawBody: tampered });
      await rejected(request, provider(emulator, { webhookSecret: 'another-secret' }));
      await rejected(request, provider(emulator, { webhookSecret: undefined }));
      await rejected({ ...request, now: request.now + 301_000 });
      await rejected({
        ...request,
        headers: { ...request.headers, 'x-openrouter-signature': undefined },
      });
      await rejected({
        ...request,
        headers: { ...request.headers, 'x-openrouter-signature': 't=notanumber,v1=abcd' },
      });

      const body = request.rawBody.toString('utf8');
      const stale = openRouterSignature(SECRET, body, Math.floor(now / 1000) - 301);
      await rejected({ ...request, headers: { 'x-openrouter-signature': stale } });
      const fresh = openRouterSignature(SECRET, body, Math.floor(now / 1000) - 299);
      await openrouter.verifyWebhook({ ...request, headers: { 'x-openrouter-signature': fresh } });
    });
  });

  it('check() reports reachable and authenticated with the right key only', async () => {
    assert.deepEqual(await openrouter.check(), {
      reachable: true,
      authenticated: true,
      detail: 'GET /key answered 200',
    });
    const wrong = await provider(emulator, { apiKey: 'sk-or-v1-wrong' }).check();
    assert.equal(wrong.reachable, true);
    assert.equal(wrong.authenticated, false);
    assert.ok(!wrong.detail.includes('sk-or-v1-wrong'));
  });
});
