import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { AppError, ProviderError } from '../../src/core/errors.ts';
import type { SubmitInput } from '../../src/core/ports.ts';
import {
  FalProvider,
  type FalProviderOptions,
  falRequestIdOf,
} from '../../src/providers/fal/fal-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import {
  FAL_MODERATION_MARKER,
  FAL_TIMEOUT_MARKER,
  FalEmulator,
} from '../emulators/fal-emulator.ts';

const KEY = 'key-id:key-secret';
const T0 = 1_800_000_000_000;
const assetsDir = defaultAssetsDir();
const clock = {
  t: T0,
  now() {
    return this.t;
  },
};

let emulator: FalEmulator;
let provider: FalProvider;
let receiver: Server;
let receiverUrl: string;

function makeProvider(options: Partial<FalProviderOptions> = {}): FalProvider {
  return new FalProvider({
    apiKey: KEY,
    baseUrl: emulator.url,
    clock,
    requestTimeoutMs: 300,
    jwksUrl: emulator.jwksUrl,
    ...options,
  });
}

function input(overrides: Partial<SubmitInput> = {}): SubmitInput {
  return {
    jobId: 'video_test',
    upstreamModel: 'fal-ai/veo3.1',
    paramStyle: 'veo',
    prompt: 'a lighthouse at dusk',
    seconds: 8,
    size: '1280x720',
    ...overrides,
  };
}

function lastBody(): Record<string, unknown> {
  return (emulator.requests.at(-1)?.body ?? {}) as Record<string, unknown>;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function rejection(promise: Promise<unknown>): Promise<ProviderError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ProviderError, `expected ProviderError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected a rejection');
}

before(async () => {
  emulator = await new FalEmulator({ apiKey: KEY, clock, assetsDir }).start();
  provider = makeProvider();
  receiver = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhooks/fal`;
});

after(async () => {
  await emulator.close();
  receiver.close();
});

describe('FalProvider job lifecycle', () => {
  it('submits, reports queued -> in_progress -> completed, and streams the video', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    const requestId = falRequestIdOf(providerJobId);
    assert.equal(providerJobId, `fal-ai/veo3.1|${requestId}`);

    const [create] = emulator.requestsTo('POST', /^\/fal-ai\/veo3\.1$/).slice(-1);
    assert.equal(create?.headers.authorization, `Key ${KEY}`);
    assert.deepEqual(create?.body, {
      prompt: 'a lighthouse at dusk',
      duration: '8s',
      aspect_ratio: '16:9',
      resolution: '720p',
      generate_audio: false,
    });

    assert.deepEqual(await provider.status(providerJobId), {
      state: 'queued',
      progress: 0,
      providerStatus: 'IN_QUEUE',
    });
    clock.t = T0 + 5_000;
    const running = await provider.status(providerJobId);
    assert.equal(running.state, 'in_progress');
    assert.equal(running.providerStatus, 'IN_PROGRESS');
    clock.t = T0 + 10_000;
    assert.deepEqual(await provider.status(providerJobId), {
      state: 'completed',
      progress: 100,
      providerStatus: 'COMPLETED',
    });

    const download = await provider.download(providerJobId, 'video');
    assert.ok(download);
    const bytes = await readAll(download.body);
    const asset = await readFile(join(assetsDir, 'landscape.mp4'));
    assert.equal(download.bytes, asset.length);
    assert.equal(download.contentType, 'video/mp4');
    assert.ok(bytes.equals(asset));
    assert.equal(await provider.download(providerJobId, 'thumbnail'), null);
    assert.equal(await provider.download(providerJobId, 'spritesheet'), null);

    // status/result live under the app root, not the endpoint's sub-path; the file has no auth
    assert.equal(
      emulator.requestsTo('GET', new RegExp(`/requests/${requestId}/status$`)).length,
      3,
    );
    const [file] = emulator.requestsTo('GET', new RegExp(`^/cdn/${requestId}/`));
    assert.equal(file?.headers.authorization, undefined);
  });

  it('uses the app root for endpoints with a sub-path and sends the webhook URL', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(
      input({
        upstreamModel: 'fal-ai/kling-video/v3/pro/text-to-video',
        paramStyle: 'kling',
        seconds: 10,
        size: '720x1280',
        callbackUrl: 'https://gw.example/webhooks/fal?job=video_1',
      }),
    );
    const [create] = emulator.requestsTo('POST', /kling-video\/v3\/pro\/text-to-video$/).slice(-1);
    assert.equal(create?.query.get('fal_webhook'), 'https://gw.example/webhooks/fal?job=video_1');
    assert.deepEqual(create?.body, {
      prompt: 'a lighthouse at dusk',
      duration: '10',
      aspect_ratio: '9:16',
      generate_audio: false,
    });
    await provider.status(providerJobId);
    const [status] = emulator.requestsTo('GET', /\/status$/).slice(-1);
    assert.equal(
      status?.path,
      `/fal-ai/kling-video/requests/${falRequestIdOf(providerJobId)}/status`,
    );
    clock.t = T0 + 10_000;
    const download = await provider.download(providerJobId, 'video');
    assert.ok(download);
    const portrait = await readFile(join(assetsDir, 'portrait.mp4'));
    assert.ok((await readAll(download.body)).equals(portrait));
  });
});

describe('FalProvider parameter mapping', () => {
  const cases: Array<{
    name: string;
    submit: Partial<SubmitInput>;
    body: Record<string, unknown>;
  }> = [
    {
      name: 'veo fast, portrait 1080p',
      submit: {
        upstreamModel: 'fal-ai/veo3.1/fast',
        paramStyle: 'veo',
        seconds: 4,
        size: '1024x1792',
      },
      body: { duration: '4s', aspect_ratio: '9:16', resolution: '1080p', generate_audio: false },
    },
    {
      name: 'kling, landscape',
      submit: {
        upstreamModel: 'fal-ai/kling-video/v3/pro/text-to-video',
        paramStyle: 'kling',
        seconds: 3,
        size: '1792x1024',
      },
      body: { duration: '3', aspect_ratio: '16:9', generate_audio: false },
    },
    {
      name: 'seedance, landscape 1080p',
      submit: {
        upstreamModel: 'bytedance/seedance-2.0/text-to-video',
        paramStyle: 'seedance',
        seconds: 15,
        size: '1792x1024',
      },
      body: { duration: '15', aspect_ratio: '16:9', resolution: '1080p', generate_audio: false },
    },
    {
      name: 'wan, portrait 720p, integer duration',
      submit: {
        upstreamModel: 'fal-ai/wan/v2.7/text-to-video',
        paramStyle: 'wan',
        seconds: 2,
        size: '720x1280',
      },
      body: { duration: 2, aspect_ratio: '9:16', resolution: '720p' },
    },
  ];
  for (const { name, submit, body } of cases) {
    it(`maps ${name}`, async () => {
      await provider.submit(input(submit));
      const last = emulator.requests.at(-1);
      assert.equal(last?.method, 'POST');
      assert.equal(last?.path, `/${submit.upstreamModel}`);
      assert.deepEqual(last?.body, { prompt: 'a lighthouse at dusk', ...body });
    });
  }

  it('sends an input reference as image_url (URL as is, uploaded bytes as a data: URL)', async () => {
    await provider.submit(input({ inputReference: { url: 'https://img.example/a.png' } }));
    assert.equal(lastBody().image_url, 'https://img.example/a.png');
    const data = Buffer.from([0x89, 0x50, 0x4e, 0x47]);
    await provider.submit(input({ inputReference: { data, contentType: 'image/png' } }));
    assert.equal(lastBody().image_url, `data:image/png;base64,${data.toString('base64')}`);
  });

  it('checkParams rejects what a route cannot serve, naming the allowed values', () => {
    const reject = (
      params: Parameters<FalProvider['checkParams']>[0],
      param: string,
      allowed: RegExp,
    ) =>
      assert.throws(
        () => provider.checkParams(params),
        (error: unknown) =>
          error instanceof AppError &&
          error.code === 'validation_error' &&
          error.param === param &&
          allowed.test(error.message),
      );
    reject(
      { upstreamModel: 'fal-ai/veo3.1', paramStyle: 'veo', seconds: 5, size: '1280x720' },
      'seconds',
      /fal-ai\/veo3\.1 via fal cannot serve seconds=5\. Allowed: 4, 6, 8$/,
    );
    reject(
      { upstreamModel: 'fal-ai/veo3.1', paramStyle: 'veo', seconds: 8, size: '1024x1024' },
      'size',
      /cannot serve size=1024x1024\. Allowed: 1280x720, 720x1280, 1792x1024, 1024x1792$/,
    );
    reject(
      { upstreamModel: 'k', paramStyle: 'kling', seconds: 2, size: '1280x720' },
      'seconds',
      /Allowed: 3, 4, .*, 15$/,
    );
    reject(
      { upstreamModel: 's', paramStyle: 'seedance', seconds: 3, size: '1280x720' },
      'seconds',
      /Allowed: 4, 5, .*, 15$/,
    );
    reject(
      { upstreamModel: 'w', paramStyle: 'wan', seconds: 16, size: '1280x720' },
      'seconds',
      /Allowed: 2, 3, .*, 15$/,
    );
    reject(
      { upstreamModel: 'x', paramStyle: 'sora', seconds: 8, size: '1280x720' },
      'model',
      /Allowed: veo, kling, seedance, wan$/,
    );
    assert.equal(
      provider.checkParams({
        upstreamModel: 'fal-ai/veo3.1',
        paramStyle: 'veo',
        seconds: 6,
        size: '1792x1024',
      }),
      undefined,
    );
  });

  it('rejects invalid parameters at submit without calling fal', async () => {
    const before = emulator.requests.length;
    await assert.rejects(provider.submit(input({ seconds: 5 })), AppError);
    assert.equal(emulator.requests.length, before);
  });
});

describe('FalProvider state mapping', () => {
  it('maps a content-policy failure of a COMPLETED request to moderation_blocked', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(
      input({ prompt: `x ${FAL_MODERATION_MARKER}` }),
    );
    clock.t = T0 + 10_000;
    const status = await provider.status(providerJobId);
    assert.equal(status.state, 'failed');
    assert.equal(status.providerStatus, 'COMPLETED');
    assert.equal(status.error?.code, 'moderation_blocked');
    const error = await rejection(provider.download(providerJobId, 'video'));
    assert.equal(error.retryable, false);
  });

  it('maps a request_timeout error type to timeout', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input({ prompt: `x ${FAL_TIMEOUT_MARKER}` }));
    clock.t = T0 + 10_000;
    const status = await provider.status(providerJobId);
    assert.equal(status.state, 'failed');
    assert.equal(status.error?.code, 'timeout');
  });

  it('cancels a queued request, which then reads as failed/cancelled', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    await provider.cancel(providerJobId);
    const [cancel] = emulator.requestsTo('PUT', /\/cancel$/).slice(-1);
    assert.equal(cancel?.path, `/fal-ai/veo3.1/requests/${falRequestIdOf(providerJobId)}/cancel`);
    const status = await provider.status(providerJobId);
    assert.equal(status.state, 'failed');
    assert.equal(status.error?.code, 'cancelled');
    await provider.cancel(providerJobId); // ALREADY_COMPLETED is not an error
  });

  it('answers an unknown job id with a non-retryable 404', async () => {
    const error = await rejection(provider.status('garbage'));
    assert.equal(error.httpStatus, 404);
    assert.equal(error.retryable, false);
  });
});

describe('FalProvider errors', () => {
  const creates = () => emulator.requestsTo('POST', /^\/fal-ai\/veo3\.1$/).length;

  for (const [status, retryable] of [
    [429, true],
    [500, true],
    [503, true],
    [400, false],
    [422, false],
  ] as const) {
    it(`classifies a submit answered ${status} as certain, retryable=${retryable}, sent once`, async () => {
      const before = creates();
      emulator.failNextSubmits(1, status);
      const error = await rejection(provider.submit(input()));
      assert.equal(error.httpStatus, status);
      assert.equal(error.certain, true);
      assert.equal(error.retryable, retryable);
      assert.equal(creates(), before + 1);
    });
  }

  it('classifies a wrong key as certain, not retryable, and keeps the key out of the message', async () => {
    const wrong = makeProvider({ apiKey: 'nope:secret-value' });
    const error = await rejection(wrong.submit(input()));
    assert.equal(error.httpStatus, 401);
    assert.equal(error.certain, true);
    assert.equal(error.retryable, false);
    assert.doesNotMatch(error.message, /secret-value/);
  });

  it('classifies connection refused as certain and retryable', async () => {
    const closed = createServer();
    closed.listen(0, '127.0.0.1');
    await once(closed, 'listening');
    const { port } = closed.address() as AddressInfo;
    closed.close();
    await once(closed, 'close');
    const error = await rejection(
      makeProvider({ baseUrl: `http://127.0.0.1:${port}` }).submit(input()),
    );
    assert.equal(error.certain, true);
    assert.equal(error.retryable, true);
  });

  it('classifies a submit that timed out after sending as uncertain, with exactly one create', async () => {
    const before = creates();
    const jobsBefore = emulator.jobs.size;
    emulator.hangNextSubmit();
    // Long enough for a loaded machine to deliver the request before the client gives up.
    const error = await rejection(makeProvider({ requestTimeoutMs: 1000 }).submit(input()));
    assert.equal(error.certain, false);
    assert.equal(creates(), before + 1);
    assert.equal(emulator.jobs.size, jobsBefore + 1);
  });

  it('does not retry a failing status call inside the adapter (the SDK retry is off)', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    const path = new RegExp(`/requests/${falRequestIdOf(providerJobId)}/status$`);
    emulator.failNextStatus(1, 503);
    const started = Date.now();
    const error = await rejection(provider.status(providerJobId));
    assert.equal(error.retryable, true);
    assert.equal(emulator.requestsTo('GET', path).length, 1);
    assert.ok(Date.now() - started < 500);
    emulator.failNextStatus(1, 500);
    await rejection(provider.status(providerJobId));
    assert.equal(emulator.requestsTo('GET', path).length, 2);
    assert.equal((await provider.status(providerJobId)).state, 'queued');
  });

  it('times out a slow status call as a retryable error', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    emulator.latencyMs = 250;
    try {
      const error = await rejection(makeProvider({ requestTimeoutMs: 100 }).status(providerJobId));
      assert.equal(error.retryable, true);
    } finally {
      emulator.latencyMs = 0;
    }
  });

  it('reports an expired output file as gone (not retryable)', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    clock.t = T0 + 10_000;
    emulator.expireFiles = true;
    try {
      const error = await rejection(provider.download(providerJobId, 'video'));
      assert.equal(error.httpStatus, 410);
      assert.equal(error.retryable, false);
    } finally {
      emulator.expireFiles = false;
    }
  });

  it('detects a truncated file: the stream errors or falls short of bytes', async () => {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input());
    clock.t = T0 + 10_000;
    emulator.truncateFiles = true;
    try {
      const download = await provider.download(providerJobId, 'video');
      assert.ok(download?.bytes);
      let received = 0;
      let failed = false;
      try {
        received = (await readAll(download.body)).length;
      } catch {
        failed = true;
      }
      assert.ok(failed || received < download.bytes);
    } finally {
      emulator.truncateFiles = false;
    }
  });
});

describe('FalProvider webhooks', () => {
  async function endedJobWithWebhook(): Promise<string> {
    clock.t = T0;
    const { providerJobId } = await provider.submit(input({ callbackUrl: receiverUrl }));
    clock.t = T0 + 10_000;
    return falRequestIdOf(providerJobId);
  }

  it('accepts a webhook fal signed and names its request', async () => {
    const requestId = await endedJobWithWebhook();
    const delivered = await emulator.deliverWebhook(requestId);
    assert.equal(delivered.status, 200);
    const body = JSON.parse(delivered.rawBody.toString());
    assert.equal(body.status, 'OK');
    assert.equal(typeof body.payload.video.url, 'string');
    const verified = await provider.verifyWebhook({
      rawBody: delivered.rawBody,
      headers: delivered.headers,
      now: clock.now(),
    });
    assert.equal(verified.providerJobId, requestId);
  });

  it('rejects a tampered body, a foreign key, a stale timestamp and missing headers', async () => {
    const requestId = await endedJobWithWebhook();
    const { rawBody, headers } = await emulator.deliverWebhook(requestId);
    const now = clock.now();
    const expect401 = async (request: Parameters<FalProvider['verifyWebhook']>[0]) => {
      const error = await rejection(provider.verifyWebhook(request));
      assert.equal(error.httpStatus, 401);
      assert.equal(error.certain, true);
      assert.equal(error.retryable, false);
    };
    await expect401({
      rawBody: Buffer.from(rawBody.toString().replace('OK', 'ERROR')),
      headers,
      now,
    });
    const foreign = generateKeyPairSync('ed25519').privateKey;
    await expect401({
      rawBody,
      headers: emulator.signWebhook(rawBody, {
        requestId,
        timestampSeconds: now / 1000,
        key: foreign,
      }),
      now,
    });
    await expect401({
      rawBody,
      headers: emulator.signWebhook(rawBody, { requestId, timestampSeconds: now / 1000 - 301 }),
      now,
    });
    for (const name of Object.keys(headers).filter((h) => h.startsWith('x-fal-webhook-'))) {
      await expect401({ rawBody, headers: { ...headers, [name]: undefined }, now });
    }
    await expect401({
      rawBody,
      headers: emulator.signWebhook(rawBody, {
        requestId: 'another-request',
        timestampSeconds: now / 1000,
      }),
      now,
    });
  });

  it('caches the JWKS and refetches it once when fal rotated its key', async () => {
    const fresh = makeProvider();
    const jwksCalls = () => emulator.requestsTo('GET', /jwks\.json$/).length;
    const requestId = await endedJobWithWebhook();
    const first = await emulator.deliverWebhook(requestId);
    const before = jwksCalls();
    await fresh.verifyWebhook({ rawBody: first.rawBody, headers: first.headers, now: clock.now() });
    await fresh.verifyWebhook({ rawBody: first.rawBody, headers: first.headers, now: clock.now() });
    assert.equal(jwksCalls(), before + 1);

    emulator.rotateKey();
    clock.t += 61_000;
    const rotated = await emulator.deliverWebhook(requestId);
    const verified = await fresh.verifyWebhook({
      rawBody: rotated.rawBody,
      headers: rotated.headers,
      now: clock.now(),
    });
    assert.equal(verified.providerJobId, requestId);
    assert.equal(jwksCalls(), before + 2);
  });
});

describe('FalProvider check', () => {
  it('reports reachable and authenticated with the right key', async () => {
    const result = await provider.check();
    assert.equal(result.reachable, true);
    assert.equal(result.authenticated, true);
  });

  it('reports authenticated false with a wrong key', async () => {
    const result = await makeProvider({ apiKey: 'wrong:key' }).check();
    assert.equal(result.reachable, true);
    assert.equal(result.authenticated, false);
    assert.doesNotMatch(result.detail, /wrong:key/);
  });

  it('reports unreachable when nothing listens', async () => {
    const result = await makeProvider({ baseUrl: 'http://127.0.0.1:9' }).check();
    assert.equal(result.reachable, false);
  });
});
