import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { AppError, ProviderError } from '../../src/core/errors.ts';
import type { ProviderDownload, WebhookRequest } from '../../src/core/ports.ts';
import { OpenAICompatibleProvider } from '../../src/providers/openai/openai-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import {
  MODERATION_MARKER,
  type OpenAIVideosEmulator,
  startOpenAIVideosEmulator,
} from '../emulators/openai-videos-emulator.ts';

const API_KEY = 'sk-test-emulated-key-123';
const WEBHOOK_SECRET = `whsec_${Buffer.from('emulator webhook secret 32 bytes!').toString('base64')}`;
const assetsDir = defaultAssetsDir();

class TestClock {
  t = Date.UTC(2026, 5, 1);
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

interface ReceivedWebhook {
  rawBody: Buffer;
  headers: Record<string, string | undefined>;
}

async function startWebhookReceiver(): Promise<{
  url: string;
  received: ReceivedWebhook[];
  server: Server;
}> {
  const received: ReceivedWebhook[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const headers: Record<string, string | undefined> = {};
      for (const [name, value] of Object.entries(req.headers)) {
        headers[name] = Array.isArray(value) ? value.join(', ') : value;
      }
      received.push({ rawBody: Buffer.concat(chunks), headers });
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  return { url: `http://127.0.0.1:${address.port}/webhooks/openai`, received, server };
}

async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('no port');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${address.port}/v1`;
}

async function collect(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function rejectsWith(
  promise: Promise<unknown>,
  expected: Partial<Pick<ProviderError, 'httpStatus' | 'certain' | 'retryable'>>,
): Promise<ProviderError> {
  const error = await promise.then(
    () => assert.fail('expected a ProviderError'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof ProviderError, `expected ProviderError, got ${String(error)}`);
  for (const [key, value] of Object.entries(expected)) {
    assert.equal(error[key as keyof typeof expected], value, `${key} of: ${error.message}`);
  }
  assert.ok(!error.message.includes(API_KEY), 'the API key leaked into an error message');
  return error;
}

const base = { jobId: 'video_ours', prompt: 'a calm lake at dawn' };

describe('OpenAICompatibleProvider against the /v1/videos emulator', () => {
  const clock = new TestClock();
  let emulator: OpenAIVideosEmulator;
  let provider: OpenAICompatibleProvider;
  let receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;

  before(async () => {
    receiver = await startWebhookReceiver();
    emulator = await startOpenAIVideosEmulator({
      apiKey: API_KEY,
      clock,
      assetsDir,
      queuedMs: 1_000,
      runMs: 4_000,
      webhook: { url: receiver.url, secret: WEBHOOK_SECRET },
    });
    provider = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: emulator.baseUrl,
      clock,
      webhookSecret: WEBHOOK_SECRET,
    });
  });

  after(async () => {
    await emulator.close();
    await new Promise<void>((resolve) => receiver.server.close(() => resolve()));
  });

  async function finishedJob(size = '1280x720', prompt = base.prompt): Promise<string> {
    const { providerJobId } = await provider.submit({
      ...base,
      prompt,
      upstreamModel: 'sora-2',
      seconds: 4,
      size,
    });
    clock.advance(5_000);
    return providerJobId;
  }

  it('runs a job: submit, queued, in_progress, completed, download the MP4 and thumbnail', async () => {
    const before = emulator.creates().length;
    const { providerJobId } = await provider.submit({
      ...base,
      upstreamModel: 'sora-2',
      seconds: 8,
      size: '1280x720',
    });
    assert.match(providerJobId, /^video_[0-9a-f]{32}$/);
    assert.equal(provider.id, 'openai');
    assert.deepEqual(provider.capabilities, {
      remix: true,
      inputReference: true,
      idempotentSubmit: false,
    });

    const creates = emulator.creates().slice(before);
    assert.equal(creates.length, 1);
    const [create] = creates;
    assert.equal(create?.encoding, 'multipart');
    assert.deepEqual(create?.body, {
      model: 'sora-2',
      prompt: base.prompt,
      seconds: '8',
      size: '1280x720',
    });
    assert.equal(create?.headers.authorization, `Bearer ${API_KEY}`);
    assert.equal(create?.headers['x-stainless-retry-count'], '0');

    assert.deepEqual(await provider.status(providerJobId), {
      state: 'queued',
      progress: 0,
      providerStatus: 'queued',
    });
    clock.advance(3_000);
    assert.deepEqual(await provider.status(providerJobId), {
      state: 'in_progress',
      progress: 50,
      providerStatus: 'in_progress',
    });
    clock.advance(2_000);
    assert.deepEqual(await provider.status(providerJobId), {
      state: 'completed',
      progress: 100,
      providerStatus: 'completed',
    });

    const video = (await provider.download(providerJobId, 'video')) as ProviderDownload;
    const expected = await readFile(join(assetsDir, 'landscape.mp4'));
    assert.equal(video.contentType, 'video/mp4');
    assert.equal(video.bytes, expected.length);
    assert.ok((await collect(video.body)).equals(expected));

    const thumbnail = (await provider.download(providerJobId, 'thumbnail')) as ProviderDownload;
    assert.equal(thumbnail.contentType, 'image/webp');
    assert.ok(
      (await collect(thumbnail.body)).equals(
        await readFile(join(assetsDir, 'landscape-thumbnail.webp')),
      ),
    );
    const sprites = (await provider.download(providerJobId, 'spritesheet')) as ProviderDownload;
    assert.equal(sprites.contentType, 'image/jpeg');
    await collect(sprites.body);

    const content = emulator.requests.filter((r) => r.path.endsWith('/content'));
    assert.deepEqual(
      content.slice(-3).map((r) => r.query.get('variant')),
      ['video', 'thumbnail', 'spritesheet'],
    );
  });

  it('maps input references (URL and uploaded bytes), portrait sizes and remixes', async () => {
    const before = emulator.creates().length;
    await provider.submit({
      ...base,
      upstreamModel: 'sora-2-pro',
      seconds: 12,
      size: '1024x1792',
      inputReference: { url: 'https://example.com/first-frame.png' },
    });
    const png = await readFile(join(assetsDir, 'portrait-thumbnail.webp'));
    const { providerJobId } = await provider.submit({
      ...base,
      upstreamModel: 'sora-2',
      seconds: 4,
      size: '720x1280',
      inputReference: { data: png, contentType: 'image/webp' },
    });
    const [byUrl, byBytes] = emulator.creates().slice(before);
    assert.deepEqual(byUrl?.body, {
      model: 'sora-2-pro',
      prompt: base.prompt,
      seconds: '12',
      size: '1024x1792',
      input_reference: { image_url: 'https://example.com/first-frame.png' },
    });
    assert.deepEqual(byBytes?.body, {
      model: 'sora-2',
      prompt: base.prompt,
      seconds: '4',
      size: '720x1280',
    });
    assert.deepEqual(byBytes?.files, [
      {
        field: 'input_reference',
        filename: 'reference.webp',
        type: 'image/webp',
        bytes: png.length,
      },
    ]);

    clock.advance(5_000);
    const video = (await provider.download(providerJobId, 'video')) as ProviderDownload;
    assert.ok((await collect(video.body)).equals(await readFile(join(assetsDir, 'portrait.mp4'))));

    const remix = await provider.submit({
      ...base,
      prompt: 'the same lake at night',
      upstreamModel: 'sora-2',
      seconds: 4,
      size: '720x1280',
      remixOfProviderJobId: providerJobId,
    });
    const remixCall = emulator.requests.at(-1);
    assert.equal(remixCall?.path, `/v1/videos/${providerJobId}/remix`);
    assert.equal(remixCall?.encoding, 'json');
    assert.deepEqual(remixCall?.body, { prompt: 'the same lake at night' });
    assert.notEqual(remix.providerJobId, providerJobId);
    assert.equal(emulator.jobs.get(remix.providerJobId)?.remixedFrom, providerJobId);
  });

  it('checkParams rejects what the upstream model cannot serve, naming the allowed values', async () => {
    const check = (params: Parameters<OpenAICompatibleProvider['checkParams']>[0]) => () =>
      provider.checkParams(params);
    assert.throws(check({ upstreamModel: 'sora-2', seconds: 5, size: '1280x720' }), (e) => {
      assert.ok(e instanceof AppError);
      assert.equal(e.code, 'validation_error');
      assert.equal(e.param, 'seconds');
      assert.equal(e.message, 'sora-2 via openai cannot serve seconds=5. Allowed: 4, 8, 12');
      return true;
    });
    assert.throws(check({ upstreamModel: 'sora-2', seconds: 8, size: '1792x1024' }), (e) => {
      assert.ok(e instanceof AppError);
      assert.equal(e.param, 'size');
      assert.equal(
        e.message,
        'sora-2 via openai cannot serve size=1792x1024. Allowed: 720x1280, 1280x720',
      );
      return true;
    });
    assert.throws(
      check({ upstreamModel: 'sora-2-pro-2025-10-06', seconds: 8, size: '1920x1080' }),
      /Allowed: 720x1280, 1280x720, 1024x1792, 1792x1024/,
    );
    assert.throws(
      check({ upstreamModel: 'sora-2', paramStyle: 'veo', seconds: 8, size: '1280x720' }),
      /unknown parameter style 'veo'/,
    );
    check({ upstreamModel: 'sora-2-pro', paramStyle: 'openai', seconds: 12, size: '1792x1024' })();
    check({ upstreamModel: 'sora-2', seconds: 4, size: '720x1280' })();

    const before = emulator.creates().length;
    await rejectsWith(
      provider.submit({ ...base, upstreamModel: 'sora-2', seconds: 5, size: '1280x720' }),
      { httpStatus: 400, certain: true, retryable: false },
    );
    assert.equal(emulator.creates().length, before, 'nothing was sent upstream');
  });

  it('maps a moderation failure to moderation_blocked', async () => {
    const providerJobId = await finishedJob('1280x720', `a fight ${MODERATION_MARKER}`);
    assert.deepEqual(await provider.status(providerJobId), {
      state: 'failed',
      progress: 0,
      providerStatus: 'failed',
      error: {
        code: 'moderation_blocked',
        message: 'Your request was blocked by our moderation system.',
      },
    });
  });

  it('classifies failed status calls', async () => {
    const providerJobId = await finishedJob();
    emulator.faults.statusFailures = [503];
    await rejectsWith(provider.status(providerJobId), {
      httpStatus: 503,
      certain: true,
      retryable: true,
    });
    await rejectsWith(provider.status('video_unknown'), { httpStatus: 404, retryable: false });
    assert.equal((await provider.status(providerJobId)).state, 'completed');
  });

  it('classifies submit errors: 429/500 retryable, 400/401 not, all certain', async () => {
    const input = { ...base, upstreamModel: 'sora-2', seconds: 4, size: '1280x720' };
    for (const [status, retryable] of [
      [429, true],
      [500, true],
      [400, false],
    ] as const) {
      const before = emulator.creates().length;
      emulator.faults.createFailures = [status];
      const error = await rejectsWith(provider.submit(input), {
        httpStatus: status,
        certain: true,
        retryable,
      });
      assert.match(error.message, new RegExp(`openai submit answered ${status}`));
      assert.equal(emulator.creates().length, before + 1, `no SDK retry after ${status}`);
    }
    const wrongKey = new OpenAICompatibleProvider({
      apiKey: 'sk-wrong',
      baseUrl: emulator.baseUrl,
      clock,
    });
    await rejectsWith(wrongKey.submit(input), { httpStatus: 401, certain: true, retryable: false });
  });

  it('connection refused is certain and retryable', async () => {
    const down = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: await closedPortUrl(),
      clock,
    });
    const error = await rejectsWith(
      down.submit({ ...base, upstreamModel: 'sora-2', seconds: 4, size: '1280x720' }),
      { certain: true, retryable: true, httpStatus: undefined },
    );
    assert.match(error.message, /ECONNREFUSED/);
  });

  it('a submit that times out or loses its connection after sending is uncertain, sent once', async () => {
    const impatient = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: emulator.baseUrl,
      clock,
      // Long enough for a loaded machine to deliver the request before the client gives up.
      timeoutMs: 1000,
    });
    const input = { ...base, upstreamModel: 'sora-2', seconds: 4, size: '1280x720' };
    for (const fault of ['hangNextCreate', 'resetNextCreate'] as const) {
      const creates = emulator.creates().length;
      const jobs = emulator.jobs.size;
      emulator.faults[fault] = true;
      await rejectsWith(impatient.submit(input), { certain: false, retryable: true });
      assert.equal(emulator.creates().length, creates + 1, `${fault}: exactly one create`);
      assert.equal(emulator.jobs.size, jobs + 1, `${fault}: the upstream did register the job`);
    }
  });

  it('expired content is not retryable; missing previews are null', async () => {
    const providerJobId = await finishedJob();
    for (const status of [404, 410] as const) {
      emulator.faults.contentGone = status;
      await rejectsWith(provider.download(providerJobId, 'video'), {
        httpStatus: status,
        certain: true,
        retryable: false,
      });
    }
    emulator.faults.contentGone = null;
    emulator.faults.previews = false;
    try {
      assert.equal(await provider.download(providerJobId, 'thumbnail'), null);
      assert.equal(await provider.download(providerJobId, 'spritesheet'), null);
    } finally {
      emulator.faults.previews = true;
    }
  });

  it('truncated content is detected', async () => {
    const providerJobId = await finishedJob();
    emulator.faults.truncateContent = true;
    try {
      const video = (await provider.download(providerJobId, 'video')) as ProviderDownload;
      const expected = (await readFile(join(assetsDir, 'landscape.mp4'))).length;
      assert.equal(video.bytes, expected);
      let received = 0;
      const outcome = await (async () => {
        for await (const chunk of video.body) received += (chunk as Buffer).length;
      })().then(
        () => 'ended',
        () => 'errored',
      );
      assert.ok(
        outcome === 'errored' || received !== video.bytes,
        'a short body must error or fall short of bytes',
      );
      assert.ok(received < expected);
    } finally {
      emulator.faults.truncateContent = false;
    }
  });

  it('verifies signed webhooks and rejects tampered, wrongly keyed, stale or unsigned ones', async () => {
    const providerJobId = await finishedJob();
    receiver.received.length = 0;
    const statuses = await emulator.deliverWebhooks();
    assert.ok(statuses.every((s) => s === 200));
    const delivery = receiver.received.find(
      (r) => JSON.parse(r.rawBody.toString('utf8')).data.id === providerJobId,
    );
    assert.ok(delivery, 'the emulator POSTed an event for the job');
    const request: WebhookRequest = {
      rawBody: delivery.rawBody,
      headers: delivery.headers,
      now: clock.now() + 10_000,
    };
    assert.equal(JSON.parse(request.rawBody.toString('utf8')).type, 'video.completed');
    assert.deepEqual(await provider.verifyWebhook(request), { providerJobId });

    const unauthorized = { httpStatus: 401, certain: true, retryable: false };
    const tampered = Buffer.from(
      request.rawBody.toString('utf8').replace(providerJobId, 'video_someone_else'),
    );
    await rejectsWith(provider.verifyWebhook({ ...request, rawBody: tampered }), unauthorized);
    const otherSecret = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: emulator.baseUrl,
      clock,
      webhookSecret: `whsec_${Buffer.from('another secret entirely').toString('base64')}`,
    });
    await rejectsWith(otherSecret.verifyWebhook(request), unauthorized);
    await rejectsWith(
      provider.verifyWebhook({ ...request, now: clock.now() + 301_000 }),
      unauthorized,
    );
    await rejectsWith(
      provider.verifyWebhook({ ...request, now: clock.now() - 301_000 }),
      unauthorized,
    );
    for (const header of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) {
      const headers = { ...request.headers, [header]: undefined };
      await rejectsWith(provider.verifyWebhook({ ...request, headers }), unauthorized);
    }
    const noSecret = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: emulator.baseUrl,
      clock,
    });
    await rejectsWith(noSecret.verifyWebhook(request), unauthorized);
  });

  it('check() tells reachable and authenticated apart', async () => {
    assert.deepEqual(await provider.check(), {
      reachable: true,
      authenticated: true,
      detail: '2 models listed',
    });
    const wrongKey = new OpenAICompatibleProvider({
      apiKey: 'sk-wrong',
      baseUrl: emulator.baseUrl,
      clock,
    });
    const denied = await wrongKey.check();
    assert.equal(denied.reachable, true);
    assert.equal(denied.authenticated, false);
    assert.match(denied.detail, /401/);
    const down = new OpenAICompatibleProvider({
      apiKey: API_KEY,
      baseUrl: await closedPortUrl(),
      clock,
    });
    const unreachable = await down.check();
    assert.equal(unreachable.reachable, false);
    assert.equal(unreachable.authenticated, false);
  });

  it('the emulator also takes JSON creates and refuses seconds sent as a number', async () => {
    const post = (body: unknown) =>
      fetch(`${emulator.baseUrl}/videos`, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const ok = await post({ model: 'sora-2', prompt: 'json', seconds: '8', size: '720x1280' });
    assert.equal(ok.status, 200);
    assert.equal(((await ok.json()) as { status: string }).status, 'queued');
    const numeric = await post({ model: 'sora-2', prompt: 'json', seconds: 8 });
    assert.equal(numeric.status, 400);
    assert.equal(((await numeric.json()) as { error: { param: string } }).error.param, 'seconds');
  });
});

describe('OpenAICompatibleProvider against Azure- and new-api-shaped upstreams', () => {
  const clock = new TestClock();
  let azure: OpenAIVideosEmulator;
  let relay: OpenAIVideosEmulator;

  before(async () => {
    azure = await startOpenAIVideosEmulator({
      apiKey: API_KEY,
      clock,
      assetsDir,
      authHeader: 'api-key',
      basePath: '/openai/v1',
    });
    relay = await startOpenAIVideosEmulator({
      apiKey: API_KEY,
      clock,
      assetsDir,
      runningWord: 'processing',
    });
  });

  after(async () => {
    await azure.close();
    await relay.close();
  });

  it('Azure: the key goes in the api-key header and never as a Bearer token', async () => {
    const provider = new OpenAICompatibleProvider({
      id: 'azure',
      apiKey: API_KEY,
      baseUrl: azure.baseUrl,
      apiKeyHeader: 'api-key',
      clock,
    });
    assert.equal(provider.id, 'azure');
    const { providerJobId } = await provider.submit({
      ...base,
      upstreamModel: 'sora-2',
      seconds: 4,
      size: '720x1280',
    });
    const [create] = azure.creates();
    assert.equal(create?.path, '/openai/v1/videos');
    assert.equal(create?.headers['api-key'], API_KEY);
    assert.equal(create?.headers.authorization, undefined);
    assert.equal((await provider.status(providerJobId)).state, 'queued');
    assert.equal((await provider.check()).authenticated, true);

    const bearer = new OpenAICompatibleProvider({
      id: 'azure',
      apiKey: API_KEY,
      baseUrl: azure.baseUrl,
      clock,
    });
    const error = await rejectsWith(bearer.status(providerJobId), {
      httpStatus: 401,
      retryable: false,
    });
    assert.match(error.message, /^azure status answered 401/);
  });

  it('new-api: `processing` maps to in_progress and keeps the upstream word', async () => {
    const provider = new OpenAICompatibleProvider({
      id: 'relay',
      apiKey: API_KEY,
      baseUrl: relay.baseUrl,
      clock,
    });
    const { providerJobId } = await provider.submit({
      ...base,
      upstreamModel: 'sora-2',
      seconds: 4,
      size: '1280x720',
    });
    clock.advance(1_500);
    const status = await provider.status(providerJobId);
    assert.equal(status.state, 'in_progress');
    assert.equal(status.providerStatus, 'processing');
    assert.ok(status.progress > 0 && status.progress < 100);
  });
});
