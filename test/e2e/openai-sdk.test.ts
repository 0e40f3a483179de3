/**
 * The official `openai` SDK (v6, the Node 20 line) as the client of /v1, against a
 * listening gateway: what a customer who only changed `baseURL` and `apiKey` runs.
 */
import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI, { toFile } from 'openai';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import type { SubmitInput } from '../../src/core/ports.ts';
import {
  defaultAssetsDir,
  SimulatedProvider,
} from '../../src/providers/simulated/simulated-provider.ts';
import { systemClock } from '../../src/services.ts';
import { api, eventually, startGateway, type TestGateway } from '../support/gateway.ts';

const ASSETS = defaultAssetsDir();
const VIDEO_KEYS = [
  'completed_at',
  'created_at',
  'error',
  'expires_at',
  'id',
  'model',
  'object',
  'progress',
  'prompt',
  'remixed_from_video_id',
  'seconds',
  'served_by',
  'size',
  'status',
];
const ASSET_FILES = {
  video: { suffix: '.mp4', type: 'video/mp4' },
  thumbnail: { suffix: '-thumbnail.webp', type: 'image/webp' },
  spritesheet: { suffix: '-spritesheet.jpg', type: 'image/jpeg' },
} as const;

interface Account {
  object: string;
  tenant: { id: string };
  plan: { id: string };
  credits: { balance: number };
  usage: { requests: number; quota: number; remaining: number };
  rate_limit: { limit: number };
}

/** The simulated provider, recording what the gateway submits to it. */
class RecordingProvider extends SimulatedProvider {
  readonly submits: SubmitInput[] = [];
  override submit(input: SubmitInput) {
    this.submits.push(input);
    return super.submit(input);
  }
}

/** A provider that can neither remix nor take a reference image. */
class PlainProvider extends SimulatedProvider {
  override readonly capabilities = { remix: false, inputReference: false, idempotentSubmit: true };
}

function simulated<T extends SimulatedProvider>(
  Provider: new (options: ConstructorParameters<typeof SimulatedProvider>[0]) => T,
): T {
  return new Provider({ clock: systemClock, durationMs: 1000, assetsDir: ASSETS });
}

function sdk(
  gw: TestGateway,
  apiKey: string,
  options: Partial<ConstructorParameters<typeof OpenAI>[0]> = {},
) {
  return new OpenAI({ apiKey, baseURL: `${gw.baseUrl}/v1`, ...options });
}

/** A fetch that counts the HTTP requests the SDK really makes (it also fetches `data:` URLs). */
function countingFetch() {
  const counter = {
    requests: 0,
    fetch: (url: string | URL | Request, init?: RequestInit) => {
      if (String(url).startsWith('http')) counter.requests += 1;
      return fetch(url, init);
    },
  };
  return counter;
}

async function untilCompleted(client: OpenAI, id: string) {
  return eventually(async () => {
    const video = await client.videos.retrieve(id);
    assert.notEqual(video.status, 'failed', JSON.stringify(video.error));
    return video.status === 'completed' ? video : null;
  });
}

async function bytesOf(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}

describe('openai SDK v6 against /v1/videos', () => {
  let gw: TestGateway;
  const provider = simulated(RecordingProvider);
  before(async () => {
    gw = await startGateway({ providers: [provider] });
  });
  after(() => gw.close());

  it('create (JSON) -> retrieve until completed -> downloadContent of every variant', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 10 });
    const client = sdk(gw, apiKey);
    // SDK 6.2-6.27 sent JSON when there was no file; `client.post` sends JSON today.
    const created = await client.post<OpenAI.Videos.Video>('/videos', {
      body: { model: 'sora-2', prompt: 'Tea farms at sunrise', seconds: '8', size: '1280x720' },
    });
    assert.deepEqual(Object.keys(created).sort(), VIDEO_KEYS);
    assert.match(created.id, /^video_[0-9a-f]{32}$/);
    assert.equal(created.object, 'video');
    assert.equal(created.model, 'sora-2');
    assert.equal(created.status, 'queued');
    assert.equal(created.progress, 0);
    assert.equal(created.prompt, 'Tea farms at sunrise');
    assert.equal(created.seconds, '8');
    assert.equal(created.size, '1280x720');
    assert.equal(created.completed_at, null);
    assert.equal(created.expires_at, null);
    assert.equal(created.remixed_from_video_id, null);
    assert.equal(created.error, null);
    assert.ok(Math.abs(created.created_at - Date.now() / 1000) < 60);
    assert.equal(await gw.services.store.getBalance(tenantId), 9);

    const { data: pending, response } = await client.videos.retrieve(created.id).withResponse();
    if (pending.status !== 'completed') {
      assert.equal(response.headers.get('openai-poll-after-ms'), '100');
    }
    const done = await untilCompleted(client, created.id);
    assert.deepEqual(Object.keys(done).sort(), VIDEO_KEYS);
    assert.equal(done.progress, 100);
    assert.ok(done.completed_at !== null && done.completed_at >= done.created_at);
    const final = await client.videos.retrieve(created.id).withResponse();
    assert.equal(final.response.headers.get('openai-poll-after-ms'), null);

    for (const variant of ['video', 'thumbnail', 'spritesheet'] as const) {
      const content = await client.videos.downloadContent(created.id, { variant });
      assert.equal(content.headers.get('content-type'), ASSET_FILES[variant].type);
      const expected = await readFile(join(ASSETS, `landscape${ASSET_FILES[variant].suffix}`));
      assert.ok((await bytesOf(content)).equals(expected), `${variant} bytes differ`);
    }
    // No variant means the MP4, as in OpenAI's API; Range works for players.
    const mp4 = await readFile(join(ASSETS, 'landscape.mp4'));
    assert.ok((await bytesOf(await client.videos.downloadContent(created.id))).equals(mp4));
    const ranged = await client.videos.downloadContent(created.id, undefined, {
      headers: { range: 'bytes=10-19' },
    });
    assert.equal(ranged.status, 206);
    assert.ok((await bytesOf(ranged)).equals(mp4.subarray(10, 20)));
  });

  it('create (multipart) with an uploaded reference image, defaults applied', async () => {
    const { apiKey } = await gw.tenant({ credits: 10 });
    const client = sdk(gw, apiKey);
    const image = await readFile(join(ASSETS, 'portrait-thumbnail.webp'));
    const created = await client.videos.create({
      prompt: 'Animate this frame',
      input_reference: await toFile(image, 'frame.webp', { type: 'image/webp' }),
    });
    assert.equal(created.model, 'sora-2');
    assert.equal(created.seconds, '4');
    assert.equal(created.size, '720x1280');
    const submitted = provider.submits.find((s) => s.jobId === created.id);
    assert.equal(submitted?.inputReference?.contentType, 'image/webp');
    assert.ok(submitted?.inputReference?.data?.equals(image));

    // Nested JSON fields travel bracket-encoded in multipart: input_reference[image_url].
    const byUrl = await client.videos.create({
      prompt: 'From a URL',
      seconds: '12',
      input_reference: { image_url: 'https://example.com/frame.png' },
    });
    assert.equal(byUrl.seconds, '12');
    assert.deepEqual(provider.submits.find((s) => s.jobId === byUrl.id)?.inputReference, {
      url: 'https://example.com/frame.png',
    });
    const done = await untilCompleted(client, created.id);
    const mp4 = await readFile(join(ASSETS, 'portrait.mp4'));
    assert.ok((await bytesOf(await client.videos.downloadContent(done.id))).equals(mp4));
  });

  it('create rejects bad input with 400 in OpenAI shape, charging nothing', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const cases: Array<[OpenAI.Videos.VideoCreateParams, string | null, RegExp]> = [
      [
        { prompt: 'x', input_reference: { file_id: 'file_123' } },
        'input_reference.file_id',
        /no Files endpoint/,
      ],
      [{ prompt: 'x', seconds: '5' as '4' }, 'seconds', /Invalid seconds for sora-2: 5/],
      [{ prompt: 'x', size: '640x480' as '720x1280' }, 'size', /Invalid size/],
      [{ prompt: 'x', model: 'nope' }, 'model', /Unsupported model: nope/],
      [
        { prompt: 'x', input_reference: await toFile(Buffer.from('not an image'), 'a.png') },
        'input_reference',
        /JPEG, PNG or WebP/,
      ],
    ];
    for (const [body, param, message] of cases) {
      const error = await client.videos.create(body).catch((e: unknown) => e);
      assert.ok(error instanceof OpenAI.BadRequestError, String(error));
      assert.equal(error.type, 'invalid_request_error');
      assert.equal(error.param, param);
      assert.match(error.message, message);
    }
    const huge = Buffer.alloc(11 * 1024 * 1024);
    Buffer.from('89504e470d0a1a0a', 'hex').copy(huge);
    const tooBig = await client.videos
      .create({ prompt: 'x', input_reference: await toFile(huge, 'huge.png') })
      .catch((e: unknown) => e);
    assert.ok(tooBig instanceof OpenAI.APIError && tooBig.status === 413, String(tooBig));
    assert.match(tooBig.message, /larger than 10 MB/);
    // Numeric seconds: OpenAI refused them; we accept them (documented leniency).
    const lenient = await client.post<OpenAI.Videos.Video>('/videos', {
      body: { prompt: 'x', seconds: 8 },
    });
    assert.equal(lenient.seconds, '8');
    assert.equal(await gw.services.store.getBalance(tenantId), 4);
  });

  it('an Idempotency-Key makes a retried create charge once', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const body = { prompt: 'Once only', seconds: '4' as const };
    // The OpenAI client sends no Idempotency-Key of its own; callers add the header.
    const headers = { 'Idempotency-Key': 'order-1' };
    const first = await client.videos.create(body, { headers });
    const again = await client.videos.create(body, { headers }).withResponse();
    assert.equal(again.data.id, first.id);
    assert.equal(again.response.headers.get('idempotent-replayed'), 'true');
    assert.equal(await gw.services.store.getBalance(tenantId), 4);

    // The key binds the uploaded file too, not only the form fields.
    const image = (name: string) => readFile(join(ASSETS, name)).then((b) => toFile(b, 'ref'));
    const fileHeaders = { 'Idempotency-Key': 'order-2' };
    await client.videos.create(
      { ...body, input_reference: await image('landscape-thumbnail.webp') },
      { headers: fileHeaders },
    );
    const otherFile = await client.videos
      .create(
        { ...body, input_reference: await image('portrait-thumbnail.webp') },
        { headers: fileHeaders, maxRetries: 0 },
      )
      .catch((e: unknown) => e);
    assert.ok(otherFile instanceof OpenAI.ConflictError, String(otherFile));
    assert.equal(otherFile.code, 'idempotency_conflict');
    assert.equal(otherFile.headers?.get('x-should-retry'), 'false');
    assert.equal(await gw.services.store.getBalance(tenantId), 3);
  });

  it('list auto-paginates across more than 100 videos, tenant-scoped, both orders', async () => {
    const { apiKey } = await gw.tenant({ credits: 200, plan: 'enterprise' });
    const other = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const ids: string[] = [];
    for (let batch = 0; batch < 7; batch++) {
      const created = await Promise.all(
        Array.from({ length: 15 }, (_, i) =>
          client.videos.create({ prompt: `clip ${batch * 15 + i}` }),
        ),
      );
      ids.push(...created.map((v) => v.id));
    }
    await sdk(gw, other.apiKey).videos.create({ prompt: 'not yours' });

    const seen: OpenAI.Videos.Video[] = [];
    for await (const video of client.videos.list()) seen.push(video);
    assert.equal(seen.length, 105);
    assert.deepEqual(new Set(seen.map((v) => v.id)), new Set(ids));
    for (let i = 1; i < seen.length; i++) {
      assert.ok((seen[i - 1]?.created_at ?? 0) >= (seen[i]?.created_at ?? 0), 'not newest first');
    }

    let page = await client.videos.list({ limit: 100, order: 'asc' });
    const pageSizes = [page.data.length];
    const ascending = [...page.data];
    assert.equal(page.has_more, true);
    while (page.hasNextPage()) {
      page = await page.getNextPage();
      pageSizes.push(page.data.length);
      ascending.push(...page.data);
    }
    assert.deepEqual(pageSizes, [100, 5]);
    assert.deepEqual(
      ascending.map((v) => v.id),
      seen.map((v) => v.id).reverse(),
    );

    const raw = await api(gw.baseUrl, '/v1/videos?limit=2', { bearer: apiKey });
    assert.deepEqual(Object.keys(raw.body).sort(), [
      'data',
      'first_id',
      'has_more',
      'last_id',
      'object',
    ]);
    assert.equal(raw.body.object, 'list');
    assert.equal(raw.body.first_id, raw.body.data[0].id);
    assert.equal(raw.body.last_id, raw.body.data[1].id);
    const tooMany = await api(gw.baseUrl, '/v1/videos?limit=101', { bearer: apiKey });
    assert.equal(tooMany.status, 400);
    assert.equal(tooMany.body.error.type, 'invalid_request_error');
  });

  it('delete removes a finished video and its files; an unfinished one is refused', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const video = await client.videos.create({ prompt: 'Short-lived', size: '1280x720' });
    const running = await client.videos.delete(video.id).catch((e: unknown) => e);
    assert.ok(running instanceof OpenAI.BadRequestError, String(running));
    assert.equal(running.code, 'video_not_finished');

    await untilCompleted(client, video.id);
    const files = join(gw.dataDir, 'blobs', 'videos', tenantId, video.id);
    await access(join(files, 'video.mp4'));
    const deleted = await client.videos.delete(video.id);
    assert.deepEqual(deleted, { id: video.id, object: 'video.deleted', deleted: true });
    await assert.rejects(access(join(files, 'video.mp4')));
    await assert.rejects(access(join(files, 'thumbnail.webp')));
    await assert.rejects(client.videos.retrieve(video.id), OpenAI.NotFoundError);
    await assert.rejects(client.videos.downloadContent(video.id), OpenAI.NotFoundError);
    await assert.rejects(client.videos.delete(video.id), OpenAI.NotFoundError);
    assert.deepEqual((await client.videos.list()).data, []);
    const status = await api(gw.baseUrl, `/video/status/${video.id}`, { key: apiKey });
    assert.equal(status.status, 404);
    // Deleting is not a refund: the charge stays in the ledger.
    assert.equal(await gw.services.store.getBalance(tenantId), 4);
  });

  it('remix a completed video: charged like a new one, linked to its source', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const other = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const source = await client.videos.create({ prompt: 'A harbour', size: '1280x720' });
    const early = await client.videos.remix(source.id, { prompt: 'too soon' }).catch((e) => e);
    assert.ok(early instanceof OpenAI.BadRequestError, String(early));
    assert.equal(early.code, 'video_not_completed');
    await untilCompleted(client, source.id);

    const remix = await client.videos.remix(source.id, { prompt: 'The harbour at night' });
    assert.deepEqual(Object.keys(remix).sort(), VIDEO_KEYS);
    assert.notEqual(remix.id, source.id);
    assert.equal(remix.remixed_from_video_id, source.id);
    assert.equal(remix.prompt, 'The harbour at night');
    assert.equal(remix.size, '1280x720');
    assert.equal(await gw.services.store.getBalance(tenantId), 3);
    const upstreamSource = (await gw.services.store.getJob(source.id))?.providerJobId;
    assert.equal(
      provider.submits.find((s) => s.jobId === remix.id)?.remixOfProviderJobId,
      upstreamSource,
    );
    const done = await untilCompleted(client, remix.id);
    assert.equal(done.remixed_from_video_id, source.id);
    const mp4 = await readFile(join(ASSETS, 'landscape.mp4'));
    assert.ok((await bytesOf(await client.videos.downloadContent(remix.id))).equals(mp4));

    await assert.rejects(
      sdk(gw, other.apiKey).videos.remix(source.id, { prompt: 'mine now' }),
      OpenAI.NotFoundError,
    );
    assert.equal(await gw.services.store.getBalance(other.tenantId), 5);
  });

  it('content of an unfinished video is a clear 404; an unknown variant is 400', async () => {
    const { apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const video = await client.videos.create({ prompt: 'Not yet' });
    const early = await client.videos.downloadContent(video.id).catch((e: unknown) => e);
    assert.ok(early instanceof OpenAI.NotFoundError, String(early));
    assert.equal(early.code, 'video_not_ready');
    assert.match(early.message, /available once it has completed/);
    const bad = await client.videos
      .downloadContent(video.id, { variant: 'gif' as 'video' })
      .catch((e: unknown) => e);
    assert.ok(bad instanceof OpenAI.BadRequestError, String(bad));
    assert.equal(bad.param, 'variant');
  });

  it('errors: 401, 402 (not retried), 404 and 429 map onto the SDK error classes', async () => {
    const bad = sdk(gw, `rp_live_${'a'.repeat(40)}`);
    const unauthorized = await bad.videos.list().catch((e: unknown) => e);
    assert.ok(unauthorized instanceof OpenAI.AuthenticationError, String(unauthorized));
    assert.equal(unauthorized.status, 401);
    assert.equal(unauthorized.type, 'authentication_error');
    assert.equal(unauthorized.code, 'invalid_api_key');

    const broke = await gw.tenant({ credits: 0 });
    const counter = countingFetch();
    const client = sdk(gw, broke.apiKey, { fetch: counter.fetch, maxRetries: 2 });
    const noCredits = await client.videos.create({ prompt: 'x' }).catch((e: unknown) => e);
    assert.ok(noCredits instanceof OpenAI.APIError, String(noCredits));
    assert.equal(noCredits.status, 402);
    assert.equal(noCredits.type, 'insufficient_quota');
    assert.equal(noCredits.code, 'insufficient_credits');
    assert.match(noCredits.message, /Insufficient credits/);
    assert.equal(counter.requests, 1, 'the SDK must not retry a 402');

    const notFound = await client.videos.retrieve('video_nope').catch((e: unknown) => e);
    assert.ok(notFound instanceof OpenAI.NotFoundError, String(notFound));
    assert.equal(notFound.error && (notFound.error as { type: string }).type, 'not_found_error');

    const limited = sdk(gw, (await gw.tenant()).apiKey, { maxRetries: 0 });
    const rateLimited = await eventually(
      async () => {
        const error = await limited.videos.retrieve('video_nope').catch((e: unknown) => e);
        return error instanceof OpenAI.RateLimitError ? error : null;
      },
      { intervalMs: 0 },
    );
    assert.equal(rateLimited.status, 429);
    assert.equal(rateLimited.code, 'rate_limit_exceeded');
    assert.match(rateLimited.headers?.get('retry-after') ?? '', /^\d+$/);
    assert.equal(rateLimited.headers?.get('ratelimit-remaining'), '0');

    const route = await api(gw.baseUrl, '/v1/nothing', { bearer: broke.apiKey });
    assert.equal(route.status, 404);
    assert.equal(route.body.error.type, 'not_found_error');
    const seed = await api(gw.baseUrl, '/video/status/video_nope', { bearer: broke.apiKey });
    assert.deepEqual(seed.body, { error: 'Video not found: video_nope' });
  });

  it('one core: created on either surface, visible on both', async () => {
    const { apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const seed = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'From the original API', seconds: 8, size: '1280x720' },
    });
    assert.equal(seed.status, 200);
    const viaV1 = await client.videos.retrieve(seed.body.video_id);
    assert.equal(viaV1.prompt, 'From the original API');
    assert.equal(viaV1.seconds, '8');

    const openai = await client.videos.create({ prompt: 'From the SDK', size: '1280x720' });
    const viaSeed = await api(gw.baseUrl, `/video/status/${openai.id}`, { key: apiKey });
    assert.equal(viaSeed.status, 200);
    assert.equal(viaSeed.body.id, openai.id);

    const listed = (await client.videos.list()).data.map((v) => v.id);
    assert.deepEqual(new Set(listed), new Set([seed.body.video_id, openai.id]));
    await untilCompleted(client, seed.body.video_id);
    const done = await eventually(async () => {
      const res = await api(gw.baseUrl, `/video/status/${openai.id}`, { key: apiKey });
      return res.body.status === 'completed' ? res : null;
    });
    const fromUrl = Buffer.from(await (await fetch(done.body.url)).arrayBuffer());
    assert.ok(fromUrl.equals(await bytesOf(await client.videos.downloadContent(openai.id))));
  });

  it('models and account', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 7 });
    const client = sdk(gw, apiKey);
    const models = [];
    for await (const model of client.models.list()) models.push(model);
    assert.deepEqual(
      models.map((m) => m.id),
      [...gw.services.catalog.models.keys()],
    );
    const sora = await client.models.retrieve('sora-2');
    assert.equal(sora.object, 'model');
    assert.equal(sora.owned_by, 'reelpostly');
    assert.deepEqual((sora as unknown as { seconds: string[] }).seconds, ['4', '8', '12']);
    assert.deepEqual((sora as unknown as { price: object }).price, { credits: 1, per: 'video' });
    await assert.rejects(client.models.retrieve('nope'), OpenAI.NotFoundError);

    const account = await client.get<Account>('/account');
    assert.equal(account.object, 'account');
    assert.equal(account.tenant.id, tenantId);
    assert.equal(account.plan.id, 'starter');
    assert.deepEqual(account.credits, { balance: 7 });
    assert.equal(account.usage.requests, 4);
    assert.equal(account.usage.quota, 1000);
    assert.equal(account.usage.remaining, 996);
    assert.equal(account.rate_limit.limit, 20);
  });
});

describe('openai SDK: plan limits and provider capabilities', () => {
  let gw: TestGateway;
  before(async () => {
    const catalog = JSON.parse(await readFile(DEFAULT_CATALOG_PATH, 'utf8'));
    catalog.plans.tiny = { ratePerSecond: 100, burst: 100, monthlyQuota: 4 };
    const dir = join(process.env.TMPDIR ?? '/tmp', `rp-v1-${process.pid}-${Date.now()}.json`);
    await writeFile(dir, JSON.stringify(catalog));
    gw = await startGateway({
      env: { REELPOSTLY_CATALOG: dir },
      providers: [simulated(PlainProvider)],
    });
  });
  after(() => gw.close());

  it('monthly quota: 429 with x-should-retry false, so the SDK asks once', async () => {
    const { apiKey } = await gw.tenant({ plan: 'tiny' });
    const counter = countingFetch();
    const client = sdk(gw, apiKey, { fetch: counter.fetch });
    for (let i = 0; i < 4; i++) {
      await assert.rejects(client.videos.retrieve('video_nope'), OpenAI.NotFoundError);
    }
    counter.requests = 0;
    const over = await client.videos.retrieve('video_nope').catch((e: unknown) => e);
    assert.ok(over instanceof OpenAI.RateLimitError, String(over));
    assert.equal(over.code, 'monthly_quota_exceeded');
    assert.equal(over.type, 'insufficient_quota');
    assert.equal(counter.requests, 1);
  });

  it('remix and input_reference on a provider without them: clear 400, nothing charged', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const client = sdk(gw, apiKey);
    const image = await readFile(join(ASSETS, 'landscape-spritesheet.jpg'));
    const withImage = await client.videos
      .create({ prompt: 'x', input_reference: await toFile(image, 'a.jpg') })
      .catch((e: unknown) => e);
    assert.ok(withImage instanceof OpenAI.BadRequestError, String(withImage));
    assert.equal(withImage.param, 'input_reference');

    const source = await client.videos.create({ prompt: 'Plain' });
    await untilCompleted(client, source.id);
    const remix = await client.videos.remix(source.id, { prompt: 'again' }).catch((e) => e);
    assert.ok(remix instanceof OpenAI.BadRequestError, String(remix));
    assert.equal(remix.code, 'remix_not_supported');
    assert.match(remix.message, /does not support remix/);
    assert.equal(await gw.services.store.getBalance(tenantId), 4);
  });
});
