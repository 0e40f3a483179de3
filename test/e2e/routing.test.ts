import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import { AppError } from '../../src/core/errors.ts';
import type { Job } from '../../src/core/ports.ts';
import { FalProvider, falRequestIdOf } from '../../src/providers/fal/fal-provider.ts';
import { OpenRouterProvider } from '../../src/providers/openrouter/openrouter-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import { openRouterSignature } from '../emulators/openrouter-emulator.ts';
import { api, eventually, startGateway, type TestGateway } from '../support/gateway.ts';
import {
  closedPortUrl,
  download,
  KEYS,
  type RealProvider,
  realClock,
  SECRETS,
  startForwarder,
  startUpstreams,
  type Upstreams,
  writeCatalog,
} from '../support/upstreams.ts';

const ASSETS = defaultAssetsDir();
const asset = (size: string) => {
  const [w, h] = size.split('x').map(Number) as [number, number];
  return readFileSync(join(ASSETS, h > w ? 'portrait.mp4' : 'landscape.mp4'));
};
const SIZES = ['1280x720', '720x1280', '1792x1024', '1024x1792'];
const NEVER_MS = '600000';

interface CatalogFile {
  models: Record<
    string,
    {
      seconds: number[];
      sizes: string[];
      routes: Array<{ provider: string; upstreamModel: string; params?: string }>;
    }
  >;
}
const CATALOG = JSON.parse(readFileSync(DEFAULT_CATALOG_PATH, 'utf8')) as CatalogFile;
const PROVIDERS: RealProvider[] = ['openai', 'openrouter', 'fal', 'replicate'];

/** The creates each emulator received for one prompt (prompts are unique per test request). */
function createsFor(up: Upstreams, provider: RealProvider, prompt: string) {
  switch (provider) {
    case 'openai':
      return up.openai
        .creates()
        .filter((r) => r.body.prompt === prompt)
        .map((r) => ({ path: r.path, body: r.body as unknown }));
    case 'openrouter':
      return up.openrouter
        .creates()
        .filter((r) => r.body?.prompt === prompt)
        .map((r) => ({ path: r.path, body: r.body as unknown }));
    case 'fal':
      return up.fal.requests
        .filter((r) => r.method === 'POST' && (r.body as { prompt?: string })?.prompt === prompt)
        .map((r) => ({ path: r.path, body: r.body }));
    case 'replicate':
      return up.replicate.requests
        .filter(
          (r) =>
            r.method === 'POST' &&
            r.path.endsWith('/predictions') &&
            (r.body as { input?: { prompt?: string } })?.input?.prompt === prompt,
        )
        .map((r) => ({ path: r.path, body: r.body }));
  }
}

/** What each upstream must receive for our seconds/size, written from the providers' docs. */
function expectedCreate(
  provider: RealProvider,
  route: { upstreamModel: string; params?: string },
  seconds: number,
  size: string,
  prompt: string,
): { path: string; body: unknown } {
  const [w, h] = size.split('x').map(Number) as [number, number];
  const aspect_ratio = h > w ? '9:16' : '16:9';
  const resolution = Math.min(w, h) > 720 ? '1080p' : '720p';
  const model = route.upstreamModel;
  switch (provider) {
    case 'openai':
      return { path: '/v1/videos', body: { model, prompt, seconds: String(seconds), size } };
    case 'openrouter':
      return {
        path: '/api/v1/videos',
        body: { model, prompt, duration: seconds, aspect_ratio, resolution },
      };
    case 'fal': {
      const fields: Record<string, Record<string, unknown>> = {
        veo: { duration: `${seconds}s`, aspect_ratio, resolution, generate_audio: false },
        kling: { duration: String(seconds), aspect_ratio, generate_audio: false },
        seedance: { duration: String(seconds), aspect_ratio, resolution, generate_audio: false },
        wan: { duration: seconds, aspect_ratio, resolution },
      };
      return { path: `/${model}`, body: { prompt, ...fields[route.params ?? ''] } };
    }
    case 'replicate': {
      const shape =
        route.params === 'kling'
          ? { mode: resolution === '720p' ? 'standard' : 'pro' }
          : { resolution };
      return {
        path: `/v1/models/${model}/predictions`,
        body: { input: { prompt, duration: seconds, aspect_ratio, ...shape } },
      };
    }
  }
}

async function ledgerOf(gw: TestGateway, tenantId: string, jobId?: string) {
  const page = await gw.services.store.listEntries(tenantId, { limit: 10_000 });
  const entries = jobId ? page.items.filter((e) => e.jobId === jobId) : page.items;
  return {
    kinds: entries.map((e) => e.kind).sort(),
    sum: page.items.reduce((s, e) => s + e.amount, 0),
    balance: await gw.services.store.getBalance(tenantId),
  };
}

async function job(gw: TestGateway, jobId: string): Promise<Job> {
  const found = await gw.services.store.getJob(jobId);
  assert.ok(found, `job ${jobId} exists`);
  return found;
}

async function completedFile(gw: TestGateway, apiKey: string, id: string): Promise<Buffer> {
  const done = await eventually(async () => {
    const res = await api(gw.baseUrl, `/video/status/${id}`, { key: apiKey });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.notEqual(res.body.status, 'failed', JSON.stringify(res.body));
    return res.body.status === 'completed' ? res.body : null;
  });
  const file = await download(done.url);
  assert.equal(file.status, 200);
  assert.equal(file.contentType, 'video/mp4');
  return file.body;
}

const unique = (label: string) => `${label} ${randomBytes(4).toString('hex')}`;

let up: Upstreams;
let dir: string;
before(async () => {
  up = await startUpstreams({ durationMs: 400 });
  dir = await mkdtemp(join(tmpdir(), 'reelpostly-routing-'));
});
after(async () => {
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the original API, once per real provider, on the default catalog', () => {
  const cases: Array<{
    provider: RealProvider;
    model: string;
    seconds: number;
    size: string;
    upstreamModel: string;
    surface: 'seed' | 'v1';
  }> = [
    {
      provider: 'openai',
      model: 'sora-2',
      seconds: 8,
      size: '720x1280',
      upstreamModel: 'sora-2',
      surface: 'seed',
    },
    {
      provider: 'openrouter',
      model: 'veo-3.1',
      seconds: 8,
      size: '1280x720',
      upstreamModel: 'google/veo-3.1',
      surface: 'v1',
    },
    {
      provider: 'fal',
      model: 'kling-v3-pro',
      seconds: 5,
      size: '1792x1024',
      upstreamModel: 'fal-ai/kling-video/v3/pro/text-to-video',
      surface: 'seed',
    },
    {
      provider: 'replicate',
      model: 'seedance-2.0',
      seconds: 10,
      size: '720x1280',
      upstreamModel: 'bytedance/seedance-2.0',
      surface: 'seed',
    },
  ];
  for (const c of cases) {
    it(`${c.model} via ${c.provider} (${c.surface}): generate -> completed -> the upstream's bytes`, async () => {
      const gw = await startGateway({ env: up.env([c.provider]) });
      try {
        const { tenantId, apiKey } = await gw.tenant({ credits: 1000, plan: 'pro' });
        const prompt = unique(`lifecycle ${c.provider}`);
        const body = { prompt, model: c.model, seconds: c.seconds, size: c.size };
        const created =
          c.surface === 'seed'
            ? await api(gw.baseUrl, '/video/generate', { key: apiKey, body })
            : await api(gw.baseUrl, '/v1/videos', {
                bearer: apiKey,
                body: { ...body, seconds: String(c.seconds) },
              });
        assert.equal(created.status, 200, JSON.stringify(created.body));
        const id = c.surface === 'seed' ? created.body.video_id : created.body.id;
        assert.match(id, /^video_/);

        const bytes = await completedFile(gw, apiKey, id);
        assert.ok(bytes.equals(asset(c.size)), 'the stored video is the emulator asset');
        const stored = await job(gw, id);
        assert.equal(stored.provider, c.provider);
        assert.equal(stored.upstreamModel, c.upstreamModel);
        assert.equal(stored.state, 'completed');
        assert.equal(createsFor(up, c.provider, prompt).length, 1);
        const ledger = await ledgerOf(gw, tenantId, id);
        assert.deepEqual(ledger.kinds, ['charge']);
        assert.equal(ledger.sum, ledger.balance);
        assert.equal(ledger.balance, 1000 - stored.cost);
      } finally {
        await gw.close();
      }
    });
  }
});

describe('parameter mapping of every default catalog entry on every real route', () => {
  for (const provider of PROVIDERS) {
    it(`${provider}: accepted combinations reach the upstream mapped; the rest are 400 before any charge`, async () => {
      // Jobs are never polled: this test is about what the submit sends.
      const gw = await startGateway({
        env: { ...up.env([provider]), REELPOSTLY_POLL_INTERVAL_MS: NEVER_MS },
      });
      try {
        const { tenantId, apiKey } = await gw.tenant({ credits: 1_000_000, plan: 'enterprise' });
        const adapter = gw.services.providers.get(provider);
        assert.ok(adapter?.checkParams);
        let accepted = 0;
        let refused = 0;
        for (const [model, entry] of Object.entries(CATALOG.models)) {
          const route = entry.routes.find((r) => r.provider === provider);
          if (!route) continue;
          for (const seconds of entry.seconds) {
            for (const size of entry.sizes) {
              const prompt = unique(`params ${provider} ${model} ${seconds} ${size}`);
              let refusal: AppError | null = null;
              try {
                adapter.checkParams({
                  upstreamModel: route.upstreamModel,
                  ...(route.params ? { paramStyle: route.params } : {}),
                  seconds,
                  size,
                });
              } catch (error) {
                assert.ok(error instanceof AppError);
                refusal = error;
              }
              const before = await ledgerOf(gw, tenantId);
              const res = await api(gw.baseUrl, '/video/generate', {
                key: apiKey,
                body: { prompt, model, seconds, size },
              });
              const what = `${model} ${seconds}s ${size} via ${provider}`;
              const after = await ledgerOf(gw, tenantId);
              if (refusal) {
                refused += 1;
                assert.equal(res.status, 400, `${what}: ${JSON.stringify(res.body)}`);
                assert.equal(res.body.error, refusal.message);
                assert.match(res.body.error, /Allowed: \S/, what);
                assert.equal(after.balance, before.balance, `${what}: nothing charged`);
                assert.equal(after.kinds.length, before.kinds.length);
                assert.deepEqual(createsFor(up, provider, prompt), [], `${what}: nothing sent`);
                continue;
              }
              accepted += 1;
              assert.equal(res.status, 200, `${what}: ${JSON.stringify(res.body)}`);
              const stored = await job(gw, res.body.video_id);
              assert.equal(stored.provider, provider);
              assert.equal(stored.upstreamModel, route.upstreamModel);
              assert.equal(after.balance, before.balance - stored.cost);
              assert.deepEqual(
                createsFor(up, provider, prompt),
                [expectedCreate(provider, route, seconds, size, prompt)],
                what,
              );
            }
          }
        }
        assert.ok(accepted > 0, `${provider} served something`);
        if (provider !== 'replicate') assert.ok(refused > 0, `${provider} refused something`);
        const { sum, balance } = await ledgerOf(gw, tenantId);
        assert.equal(sum, balance);
      } finally {
        await gw.close();
      }
    });
  }

  it('sends representative bodies exactly (fal "8s" / "8" / 8, OpenRouter 8 + 9:16 + 720p)', async () => {
    const gw = await startGateway({
      env: { ...up.env(['fal']), REELPOSTLY_POLL_INTERVAL_MS: NEVER_MS },
    });
    const orGw = await startGateway({
      env: { ...up.env(['openrouter']), REELPOSTLY_POLL_INTERVAL_MS: NEVER_MS },
    });
    try {
      const fal = await gw.tenant({ credits: 10_000, plan: 'pro' });
      const or = await orGw.tenant({ credits: 10_000, plan: 'pro' });
      const send = async (g: TestGateway, key: string, model: string, size: string) => {
        const prompt = unique(`exact ${model}`);
        const res = await api(g.baseUrl, '/video/generate', {
          key,
          body: { prompt, model, seconds: 8, size },
        });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        return prompt;
      };
      let prompt = await send(gw, fal.apiKey, 'veo-3.1', '1280x720');
      assert.deepEqual(createsFor(up, 'fal', prompt), [
        {
          path: '/fal-ai/veo3.1',
          body: {
            prompt,
            duration: '8s',
            aspect_ratio: '16:9',
            resolution: '720p',
            generate_audio: false,
          },
        },
      ]);
      prompt = await send(gw, fal.apiKey, 'kling-v3-pro', '720x1280');
      assert.deepEqual(createsFor(up, 'fal', prompt)[0]?.body, {
        prompt,
        duration: '8',
        aspect_ratio: '9:16',
        generate_audio: false,
      });
      prompt = await send(gw, fal.apiKey, 'wan-2.7', '1024x1792');
      assert.deepEqual(createsFor(up, 'fal', prompt)[0]?.body, {
        prompt,
        duration: 8,
        aspect_ratio: '9:16',
        resolution: '1080p',
      });
      prompt = await send(orGw, or.apiKey, 'kling-v3-pro', '720x1280');
      assert.deepEqual(createsFor(up, 'openrouter', prompt)[0]?.body, {
        model: 'kwaivgi/kling-v3.0-pro',
        prompt,
        duration: 8,
        aspect_ratio: '9:16',
        resolution: '720p',
      });
    } finally {
      await gw.close();
      await orGw.close();
    }
  });

  it('sora-2 for 12 s with only OpenRouter configured: 400 naming 4, 6, 8; nothing charged', async () => {
    const gw = await startGateway({ env: up.env(['openrouter']) });
    try {
      const { tenantId, apiKey } = await gw.tenant({ credits: 50 });
      const prompt = unique('sora 12s');
      const res = await api(gw.baseUrl, '/video/generate', {
        key: apiKey,
        body: { prompt, model: 'sora-2', seconds: 12, size: '1280x720' },
      });
      assert.equal(res.status, 400);
      assert.match(res.body.error, /seconds=12\. Allowed: 4, 6, 8$/);
      const v1 = await api(gw.baseUrl, '/v1/videos', {
        bearer: apiKey,
        body: { prompt, model: 'sora-2', seconds: '12', size: '1280x720' },
      });
      assert.equal(v1.status, 400);
      assert.equal(v1.body.error.param, 'seconds');
      assert.match(v1.body.error.message, /Allowed: 4, 6, 8$/);
      const ledger = await ledgerOf(gw, tenantId);
      assert.equal(ledger.balance, 50);
      assert.deepEqual(
        ledger.kinds.filter((k) => k !== 'grant'),
        [],
      );
      assert.deepEqual(createsFor(up, 'openrouter', prompt), []);
    } finally {
      await gw.close();
    }
  });
});

describe('failover between routes', () => {
  const MODEL = {
    'veo-failover': {
      seconds: [4, 6, 8],
      sizes: SIZES,
      price: { credits: 3, per: 'video' },
      routes: [
        { provider: 'openrouter', upstreamModel: 'google/veo-3.1' },
        { provider: 'fal', upstreamModel: 'fal-ai/veo3.1', params: 'veo' },
      ],
    },
  };
  let catalogPath: string;
  let gw: TestGateway;
  before(async () => {
    catalogPath = await writeCatalog(join(dir, 'failover.json'), MODEL);
    gw = await startGateway({
      env: { ...up.env(['openrouter', 'fal']), REELPOSTLY_CATALOG: catalogPath },
    });
  });
  after(() => gw.close());

  const generate = async (g: TestGateway, apiKey: string, prompt: string) =>
    api(g.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt, model: 'veo-failover', seconds: 8, size: '1280x720' },
    });

  for (const status of [429, 500]) {
    it(`OpenRouter answering ${status} fails over to fal: served there, charged once`, async () => {
      const { tenantId, apiKey } = await gw.tenant({ credits: 10 });
      const prompt = unique(`failover ${status}`);
      up.openrouter.failNextSubmits(1, status);
      const res = await generate(gw, apiKey, prompt);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.credits_remaining, 7);
      const id = res.body.video_id;
      const stored = await job(gw, id);
      assert.equal(stored.provider, 'fal');
      assert.equal(stored.upstreamModel, 'fal-ai/veo3.1');
      assert.equal(up.openrouter.creates().filter((r) => r.body?.prompt === prompt).length, 1);
      assert.equal(createsFor(up, 'fal', prompt).length, 1);
      assert.ok((await completedFile(gw, apiKey, id)).equals(asset('1280x720')));
      const ledger = await ledgerOf(gw, tenantId, id);
      assert.deepEqual(ledger.kinds, ['charge']);
      assert.equal(ledger.balance, 7);
      assert.equal(ledger.sum, ledger.balance);
    });
  }

  it('OpenRouter refusing the connection fails over to fal', async () => {
    const offline = await startGateway({
      env: {
        ...up.env(['openrouter', 'fal']),
        OPENROUTER_BASE_URL: await closedPortUrl('/api/v1'),
        REELPOSTLY_CATALOG: catalogPath,
      },
    });
    try {
      const { tenantId, apiKey } = await offline.tenant({ credits: 10 });
      const prompt = unique('failover refused');
      const res = await generate(offline, apiKey, prompt);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const stored = await job(offline, res.body.video_id);
      assert.equal(stored.provider, 'fal');
      assert.equal(createsFor(up, 'openrouter', prompt).length, 0);
      assert.equal(createsFor(up, 'fal', prompt).length, 1);
      const ledger = await ledgerOf(offline, tenantId, stored.jobId);
      assert.deepEqual(ledger.kinds, ['charge']);
      assert.equal(ledger.balance, 7);
    } finally {
      await offline.close();
    }
  });

  it('OpenRouter answering 400 does not fail over: 502, failed, refunded once', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 10 });
    const prompt = unique('no failover 400');
    up.openrouter.failNextSubmits(1, 400);
    const res = await generate(gw, apiKey, prompt);
    assert.equal(res.status, 502, JSON.stringify(res.body));
    assert.match(res.body.error, /Credits refunded/);
    assert.equal(res.body.credits_remaining, 10);
    const stored = await job(gw, res.body.video_id);
    assert.equal(stored.state, 'failed');
    assert.equal(stored.error?.code, 'upstream_error');
    assert.equal(createsFor(up, 'openrouter', prompt).length, 1);
    assert.equal(createsFor(up, 'fal', prompt).length, 0);
    const ledger = await ledgerOf(gw, tenantId, stored.jobId);
    assert.deepEqual(ledger.kinds, ['charge', 'refund']);
    assert.equal(ledger.balance, 10);
    assert.equal(ledger.sum, ledger.balance);
  });

  it('a create that hangs past the client timeout is never resubmitted: 502, upstream_unknown, one refund', async () => {
    const hanging = await startGateway({
      env: { REELPOSTLY_SIMULATED: 'false', REELPOSTLY_CATALOG: catalogPath },
      providers: [
        new OpenRouterProvider({
          apiKey: KEYS.openrouter,
          baseUrl: up.openrouter.baseUrl,
          clock: realClock,
          timeoutMs: 300,
        }),
        new FalProvider({
          apiKey: KEYS.fal,
          baseUrl: up.fal.url,
          clock: realClock,
          jwksUrl: up.fal.jwksUrl,
        }),
      ],
    });
    try {
      const { tenantId, apiKey } = await hanging.tenant({ credits: 10 });
      const prompt = unique('ambiguous');
      up.openrouter.hangNextSubmit(1_500);
      const res = await generate(hanging, apiKey, prompt);
      assert.equal(res.status, 502, JSON.stringify(res.body));
      assert.equal(res.body.credits_remaining, 10);
      const id = res.body.video_id;
      const stored = await job(hanging, id);
      assert.equal(stored.state, 'failed');
      assert.equal(stored.error?.code, 'upstream_unknown');
      assert.equal(createsFor(up, 'openrouter', prompt).length, 1);
      assert.equal(createsFor(up, 'fal', prompt).length, 0);
      // A later worker pass over the job changes nothing.
      await hanging.services.pipeline.advance(id);
      assert.equal((await job(hanging, id)).state, 'failed');
      assert.equal(createsFor(up, 'openrouter', prompt).length, 1);
      assert.equal(createsFor(up, 'fal', prompt).length, 0);
      const ledger = await ledgerOf(hanging, tenantId, id);
      assert.deepEqual(ledger.kinds, ['charge', 'refund']);
      assert.equal(ledger.balance, 10);
      assert.equal(ledger.sum, ledger.balance);
    } finally {
      await hanging.close();
    }
  });
});

describe('upstream webhooks advance jobs without polling', () => {
  const shape = { seconds: [4, 6, 8], sizes: SIZES, price: { credits: 1, per: 'video' } };
  const MODELS = {
    'veo-replicate': {
      ...shape,
      routes: [{ provider: 'replicate', upstreamModel: 'google/veo-3.1', params: 'veo' }],
    },
    'veo-openrouter': {
      ...shape,
      routes: [{ provider: 'openrouter', upstreamModel: 'google/veo-3.1' }],
    },
    'veo-fal': {
      ...shape,
      routes: [{ provider: 'fal', upstreamModel: 'fal-ai/veo3.1', params: 'veo' }],
    },
  };
  type Signed = { rawBody: string; headers: Record<string, string> };
  type Hooked = 'replicate' | 'openrouter' | 'fal';
  const nowS = () => Math.floor(Date.now() / 1000);

  /** A correctly signed webhook for the upstream job, as the provider would send it. */
  const sign: Record<Hooked, (providerJobId: string, timestampS: number) => Promise<Signed>> = {
    async replicate(id, timestampS) {
      const res = await fetch(`${up.replicate.baseUrl}/predictions/${id}`, {
        headers: { authorization: `Bearer ${KEYS.replicate}` },
      });
      const rawBody = await res.text();
      const msgId = `msg_${randomBytes(8).toString('hex')}`;
      const signature = new Webhook(SECRETS.replicate).sign(
        msgId,
        new Date(timestampS * 1000),
        rawBody,
      );
      return {
        rawBody,
        headers: {
          'content-type': 'application/json',
          'webhook-id': msgId,
          'webhook-timestamp': String(timestampS),
          'webhook-signature': signature,
        },
      };
    },
    async openrouter(id, timestampS) {
      const rawBody = JSON.stringify({
        type: 'video.generation.completed',
        created_at: new Date().toISOString(),
        data: { id, status: 'completed' },
      });
      return {
        rawBody,
        headers: {
          'content-type': 'application/json',
          'x-openrouter-signature': openRouterSignature(SECRETS.openrouter, rawBody, timestampS),
        },
      };
    },
    async fal(id, timestampS) {
      const requestId = falRequestIdOf(id);
      const body = up.fal.webhookBody(requestId);
      return {
        rawBody: body.toString('utf8'),
        headers: up.fal.signWebhook(body, { requestId, timestampSeconds: timestampS }),
      };
    },
  };

  /** Makes the emulator deliver its own webhook for the job; resolves with the HTTP status. */
  const deliver: Record<Hooked, (providerJobId: string) => Promise<number | null>> = {
    async replicate(id) {
      const sent = await up.replicate.deliverWebhooks();
      return sent.find((d) => d.id === id)?.status ?? null;
    },
    async openrouter(id) {
      const sent = await up.openrouter.flushWebhooks();
      return sent.find((d) => d.jobId === id)?.status ?? null;
    },
    async fal(id) {
      return (await up.fal.deliverWebhook(falRequestIdOf(id))).status;
    },
  };

  let forwarder: Awaited<ReturnType<typeof startForwarder>>;
  let gw: TestGateway;
  let tenant: { tenantId: string; apiKey: string };
  before(async () => {
    forwarder = await startForwarder();
    gw = await startGateway({
      env: {
        ...up.env(['replicate', 'openrouter', 'fal']),
        REELPOSTLY_CATALOG: await writeCatalog(join(dir, 'webhooks.json'), MODELS),
        REELPOSTLY_UPSTREAM_WEBHOOKS: 'true',
        REELPOSTLY_PUBLIC_URL: forwarder.url,
        REELPOSTLY_POLL_INTERVAL_MS: NEVER_MS,
        REELPOSTLY_WORKER_INTERVAL_MS: NEVER_MS,
      },
    });
    forwarder.attach(gw.baseUrl);
    tenant = await gw.tenant({ credits: 100 });
  });
  after(async () => {
    await gw.close();
    await forwarder.close();
  });

  async function rawPost(provider: string, jobId: string, signed: Signed) {
    const res = await fetch(`${gw.baseUrl}/webhooks/upstream/${provider}?job=${jobId}`, {
      method: 'POST',
      headers: signed.headers,
      body: signed.rawBody,
    });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  }

  for (const provider of ['replicate', 'openrouter', 'fal'] as const) {
    it(`${provider}: bad signatures are 401, another job is 404, the genuine webhook completes the job`, async () => {
      const prompt = unique(`webhook ${provider}`);
      const created = await api(gw.baseUrl, '/video/generate', {
        key: tenant.apiKey,
        body: { prompt, model: `veo-${provider}`, seconds: 8, size: '720x1280' },
      });
      assert.equal(created.status, 200, JSON.stringify(created.body));
      const id = created.body.video_id as string;
      const submitted = await job(gw, id);
      assert.equal(submitted.provider, provider);
      const providerJobId = submitted.providerJobId as string;
      const expectedCallback = `${forwarder.url}/webhooks/upstream/${provider}?job=${id}`;
      const create = createsFor(up, provider, prompt)[0];
      assert.ok(create, 'the upstream saw the create');
      const sentCallback =
        provider === 'fal'
          ? up.fal.requests
              .find((r) => r.method === 'POST' && (r.body as { prompt?: string }).prompt === prompt)
              ?.query.get('fal_webhook')
          : provider === 'replicate'
            ? (create.body as { webhook?: string }).webhook
            : (create.body as { callback_url?: string }).callback_url;
      assert.equal(sentCallback, expectedCallback);

      // The upstream job ends; with polling ten minutes away, our job stays where it was.
      const adapter = gw.services.providers.get(provider);
      await eventually(async () => (await adapter?.status(providerJobId))?.state === 'completed');
      const untouched = await job(gw, id);
      assert.equal(untouched.state, 'queued');

      const genuine = await sign[provider](providerJobId, nowS());
      const tampered = { ...genuine, rawBody: genuine.rawBody.replace('"', '"x') };
      assert.equal((await rawPost(provider, id, tampered)).status, 401);
      const stale = await sign[provider](providerJobId, nowS() - 600);
      assert.equal((await rawPost(provider, id, stale)).status, 401);
      const unsigned = {
        rawBody: genuine.rawBody,
        headers: { 'content-type': 'application/json' },
      };
      assert.equal((await rawPost(provider, id, unsigned)).status, 401);
      const after = await job(gw, id);
      assert.equal(after.state, 'queued');
      assert.equal(after.version, untouched.version);

      // A genuine webhook addressed to a job it does not belong to.
      assert.equal((await rawPost(provider, 'video_0000000000000000', genuine)).status, 404);
      const other = await api(gw.baseUrl, '/video/generate', {
        key: tenant.apiKey,
        body: { prompt: unique('other'), model: `veo-${provider}`, seconds: 4, size: '1280x720' },
      });
      assert.equal(other.status, 200);
      assert.equal((await rawPost(provider, other.body.video_id, genuine)).status, 404);
      assert.equal((await job(gw, other.body.video_id)).state, 'queued');

      const started = Date.now();
      const status = await eventually(() => deliver[provider](providerJobId).catch(() => null));
      assert.equal(status, 200);
      const done = await eventually(
        async () => {
          const current = await job(gw, id);
          return current.state === 'completed' ? current : null;
        },
        { timeoutMs: 2_000 },
      );
      assert.ok(Date.now() - started < 2_000);
      assert.ok(done.asset);
      const res = await api(gw.baseUrl, `/video/status/${id}`, { key: tenant.apiKey });
      assert.equal(res.body.status, 'completed');
      assert.ok((await download(res.body.url)).body.equals(asset('720x1280')));
      // Only the webhook advanced it: the adapter's one status call came from that.
      assert.equal((await job(gw, id)).version, done.version);
    });
  }
});
