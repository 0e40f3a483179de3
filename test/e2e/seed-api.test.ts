import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import {
  SIMULATE_MODERATION_BLOCKED,
  SIMULATE_UPSTREAM_500,
} from '../../src/providers/simulated/simulated-provider.ts';
import {
  api,
  eventually,
  ManualClock,
  startGateway,
  type TestGateway,
} from '../support/gateway.ts';

const ASSETS = new URL('../../assets/', import.meta.url).pathname;
const ORIGINAL_BODY = {
  prompt: 'Tea farms at sunrise, cinematic',
  model: 'sora-2',
  seconds: 8,
  size: '1280x720',
};

async function ledgerSum(gw: TestGateway, tenantId: string) {
  const page = await gw.services.store.listEntries(tenantId, { limit: 10_000 });
  return {
    sum: page.items.reduce((s, e) => s + e.amount, 0),
    entries: page.items,
    balance: await gw.services.store.getBalance(tenantId),
  };
}

async function waitForState(gw: TestGateway, key: string, id: string, state: string) {
  return eventually(async () => {
    const res = await api(gw.baseUrl, `/video/status/${id}`, { key });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.status === state ? res : null;
  });
}

describe('original API over a listening server (real clock, 1 s simulated jobs)', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(() => gw.close());

  it('generate -> poll -> completed -> signed URL serves the MP4, every field checked', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 100 });
    const created = await api(gw.baseUrl, '/video/generate', { key: apiKey, body: ORIGINAL_BODY });
    assert.equal(created.status, 200);
    assert.match(created.headers.get('x-request-id') ?? '', /.+/);
    assert.deepEqual(Object.keys(created.body).sort(), [
      'credits_remaining',
      'progress',
      'status',
      'success',
      'tenant',
      'video_id',
    ]);
    assert.equal(created.body.success, true);
    assert.match(created.body.video_id, /^video_[0-9a-f]{32}$/);
    assert.equal(created.body.status, 'queued');
    assert.equal(created.body.progress, 0);
    assert.equal(created.body.tenant, tenantId);
    assert.equal(created.body.credits_remaining, 99);

    const id = created.body.video_id;
    const seen = new Set<string>();
    const done = await eventually(async () => {
      const res = await api(gw.baseUrl, `/video/status/${id}`, { key: apiKey });
      assert.equal(res.status, 200);
      seen.add(res.body.status);
      if (res.body.status !== 'completed') {
        assert.deepEqual(Object.keys(res.body).sort(), [
          'id',
          'progress',
          'providerStatus',
          'status',
          'success',
        ]);
        assert.ok(res.body.progress >= 0 && res.body.progress < 100);
        return null;
      }
      return res;
    });
    assert.ok(seen.has('queued') || seen.has('processing'), `saw ${[...seen]}`);
    assert.deepEqual(Object.keys(done.body).sort(), [
      'filename',
      'id',
      'progress',
      'providerStatus',
      'size',
      'status',
      'success',
      'url',
    ]);
    assert.equal(done.body.success, true);
    assert.equal(done.body.id, id);
    assert.equal(done.body.progress, 100);
    assert.equal(done.body.providerStatus, 'completed');
    assert.equal(done.body.filename, `${id}.mp4`);
    const expected = await readFile(join(ASSETS, 'landscape.mp4'));
    assert.equal(done.body.size, expected.length);

    const file = await fetch(done.body.url);
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('content-type'), 'video/mp4');
    assert.equal(file.headers.get('accept-ranges'), 'bytes');
    assert.ok(Buffer.from(await file.arrayBuffer()).equals(expected));

    const { sum, balance } = await ledgerSum(gw, tenantId);
    assert.equal(balance, 99);
    assert.equal(sum, balance);
  });

  it('portrait sizes get the portrait asset; x-api-key and Bearer both authenticate', async () => {
    const { apiKey } = await gw.tenant();
    const created = await api(gw.baseUrl, '/video/generate', {
      bearer: apiKey,
      body: { prompt: 'A lighthouse at dusk', seconds: 4, size: '720x1280' },
    });
    assert.equal(created.status, 200);
    const done = await waitForState(gw, apiKey, created.body.video_id, 'completed');
    const bytes = Buffer.from(await (await fetch(done.body.url)).arrayBuffer());
    assert.ok(bytes.equals(await readFile(join(ASSETS, 'portrait.mp4'))));
  });

  it('300 parallel generates against 50 credits: exactly 50 accepted, ledger balanced', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 50, plan: 'enterprise' });
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        api(gw.baseUrl, '/video/generate', {
          key: apiKey,
          body: { prompt: `race ${i}`, seconds: 4, size: '1280x720' },
        }),
      ),
    );
    const accepted = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 402);
    assert.equal(accepted.length, 50);
    assert.equal(refused.length, 250);
    for (const r of refused) assert.deepEqual(r.body, { error: 'Insufficient credits' });
    assert.equal(new Set(accepted.map((r) => r.body.video_id)).size, 50);
    const remaining = accepted.map((r) => r.body.credits_remaining).sort((a, b) => a - b);
    assert.deepEqual(
      remaining,
      Array.from({ length: 50 }, (_, i) => i),
    );
    const { sum, balance, entries } = await ledgerSum(gw, tenantId);
    assert.equal(balance, 0);
    assert.equal(sum, 0);
    assert.equal(entries.filter((e) => e.kind === 'charge').length, 50);
    const jobs = await gw.services.store.listJobs({ tenantId, limit: 100, order: 'asc' });
    assert.equal(jobs.items.length, 50);
  });

  it('moderation failure: the job fails, says why, and credits come back exactly once', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 10 });
    const created = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: `something ${SIMULATE_MODERATION_BLOCKED}`, seconds: 4, size: '1280x720' },
    });
    assert.equal(created.status, 200);
    assert.equal(created.body.credits_remaining, 9);
    const failed = await waitForState(gw, apiKey, created.body.video_id, 'failed');
    assert.equal(failed.body.providerStatus, 'failed');
    assert.equal(failed.body.error.code, 'moderation_blocked');
    assert.match(failed.body.error.message, /moderation/);
    assert.equal(failed.body.credits_refunded, 1);
    assert.equal(failed.body.url, undefined);
    // Many more polls after the end must not refund again.
    await Promise.all(
      Array.from({ length: 20 }, () =>
        api(gw.baseUrl, `/video/status/${created.body.video_id}`, { key: apiKey }),
      ),
    );
    const { sum, balance, entries } = await ledgerSum(gw, tenantId);
    assert.equal(balance, 10);
    assert.equal(sum, 10);
    assert.equal(entries.filter((e) => e.kind === 'refund').length, 1);
  });

  it('upstream 500 on submit: 502 with the message, credits refunded at once', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 3 });
    const res = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: `boom ${SIMULATE_UPSTREAM_500}`, seconds: 4, size: '1280x720' },
    });
    assert.equal(res.status, 502);
    assert.match(res.body.error, /upstream error 500.*Credits refunded/i);
    assert.equal(res.body.credits_remaining, 3);
    const status = await api(gw.baseUrl, `/video/status/${res.body.video_id}`, { key: apiKey });
    assert.equal(status.body.status, 'failed');
    assert.equal(status.body.error.code, 'upstream_error');
    const { sum, balance } = await ledgerSum(gw, tenantId);
    assert.equal(balance, 3);
    assert.equal(sum, 3);
  });

  it('validation errors answer 400 in the original shape and charge nothing', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 5 });
    const cases: Array<[unknown, RegExp]> = [
      [{ model: 'sora-2' }, /^Missing required field: prompt$/],
      [{ prompt: '   ' }, /prompt must be a non-empty string/],
      [{ prompt: 'x', seconds: 5 }, /Invalid seconds for sora-2: 5\. Allowed: 4, 8, 12/],
      [{ prompt: 'x', size: '640x480' }, /Invalid size/],
      [{ prompt: 'x', model: 'nope' }, /Unsupported model: nope/],
      [{ prompt: 'x', seconds: 'eight' }, /Invalid field seconds/],
    ];
    for (const [body, message] of cases) {
      const res = await api(gw.baseUrl, '/video/generate', { key: apiKey, body });
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.deepEqual(Object.keys(res.body), ['error']);
      assert.match(res.body.error, message);
    }
    const malformed = await fetch(`${gw.baseUrl}/video/generate`, {
      method: 'POST',
      headers: { 'x-api-key': apiKey, 'content-type': 'application/json' },
      body: '{"prompt": ',
    });
    assert.equal(malformed.status, 400);
    assert.equal(typeof (await malformed.json()).error, 'string');
    assert.equal(await gw.services.store.getBalance(tenantId), 5);
  });

  it('seconds sent as a numeric string is accepted (clients of the original sometimes do)', async () => {
    const { apiKey } = await gw.tenant();
    const res = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'x', seconds: '8' },
    });
    assert.equal(res.status, 200);
  });

  it('auth: missing, unknown, revoked and expired keys get 401; suspended tenants 403', async () => {
    const missing = await api(gw.baseUrl, '/video/generate', { body: ORIGINAL_BODY });
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.body, { error: 'Missing API key' });
    const unknown = await api(gw.baseUrl, '/video/status/video_x', {
      key: `rp_live_${'a'.repeat(40)}`,
    });
    assert.equal(unknown.status, 401);
    assert.deepEqual(unknown.body, { error: 'Invalid API key' });

    const t = await gw.tenant();
    await gw.services.accounts.revokeKey(t.keyId);
    const revoked = await api(gw.baseUrl, '/video/generate', {
      key: t.apiKey,
      body: ORIGINAL_BODY,
    });
    assert.equal(revoked.status, 401);
    assert.deepEqual(revoked.body, { error: 'API key revoked' });

    const second = await gw.services.accounts.createKey(t.tenantId, { expiresAt: Date.now() - 1 });
    const expired = await api(gw.baseUrl, '/video/status/video_x', { key: second.plaintext });
    assert.equal(expired.status, 401);
    assert.deepEqual(expired.body, { error: 'API key expired' });

    const s = await gw.tenant({ credits: 5 });
    await gw.services.accounts.setStatus(s.tenantId, 'suspended');
    const suspended = await api(gw.baseUrl, '/video/generate', {
      key: s.apiKey,
      body: ORIGINAL_BODY,
    });
    assert.equal(suspended.status, 403);
    assert.deepEqual(suspended.body, { error: 'Tenant suspended' });
    assert.equal(await gw.services.store.getBalance(s.tenantId), 5);
    await gw.services.accounts.setStatus(s.tenantId, 'active');
    const back = await api(gw.baseUrl, '/video/generate', { key: s.apiKey, body: ORIGINAL_BODY });
    assert.equal(back.status, 200);
  });

  it("another tenant's video, and unknown ids, are 404", async () => {
    const a = await gw.tenant();
    const b = await gw.tenant();
    const created = await api(gw.baseUrl, '/video/generate', {
      key: a.apiKey,
      body: ORIGINAL_BODY,
    });
    const other = await api(gw.baseUrl, `/video/status/${created.body.video_id}`, {
      key: b.apiKey,
    });
    assert.equal(other.status, 404);
    assert.deepEqual(other.body, { error: `Video not found: ${created.body.video_id}` });
    const unknown = await api(gw.baseUrl, '/video/status/video_nope', { key: a.apiKey });
    assert.equal(unknown.status, 404);
  });

  it('Idempotency-Key: a retry replays the first answer and charges once; a changed body is 409', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 10, plan: 'pro' });
    const headers = { 'idempotency-key': 'order-42' };
    const first = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: ORIGINAL_BODY,
      headers,
    });
    assert.equal(first.status, 200);
    const retry = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      // Same fields in another order are the same request.
      body: { size: '1280x720', seconds: 8, model: 'sora-2', prompt: ORIGINAL_BODY.prompt },
      headers,
    });
    assert.equal(retry.status, 200);
    assert.deepEqual(retry.body, first.body);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    const changed = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { ...ORIGINAL_BODY, seconds: 4 },
      headers,
    });
    assert.equal(changed.status, 409);
    assert.match(changed.body.error, /Idempotency-Key/);

    // 50 concurrent requests under one new key: one job, one charge.
    const burst = await Promise.all(
      Array.from({ length: 50 }, () =>
        api(gw.baseUrl, '/video/generate', {
          key: apiKey,
          body: ORIGINAL_BODY,
          headers: { 'idempotency-key': 'order-43' },
        }),
      ),
    );
    const ok = burst.filter((r) => r.status === 200);
    assert.ok(ok.length >= 1);
    assert.equal(new Set(ok.map((r) => r.body.video_id)).size, 1);
    for (const r of burst.filter((r) => r.status !== 200)) {
      assert.equal(r.status, 409);
      assert.match(r.body.error, /in progress/);
    }
    const { sum, balance, entries } = await ledgerSum(gw, tenantId);
    assert.equal(entries.filter((e) => e.kind === 'charge').length, 2);
    assert.equal(balance, 8);
    assert.equal(sum, balance);

    // A request refused before doing anything frees its key for a corrected retry.
    const bad = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'x', seconds: 5 },
      headers: { 'idempotency-key': 'order-44' },
    });
    assert.equal(bad.status, 400);
    const fixed = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'x', seconds: 4 },
      headers: { 'idempotency-key': 'order-44' },
    });
    assert.equal(fixed.status, 200);
  });

  it('signed URLs: tampered signature or key is 403; Range answers 206 with the right bytes', async () => {
    const { apiKey } = await gw.tenant();
    const created = await api(gw.baseUrl, '/video/generate', { key: apiKey, body: ORIGINAL_BODY });
    const done = await waitForState(gw, apiKey, created.body.video_id, 'completed');
    const url = new URL(done.body.url);
    const expected = await readFile(join(ASSETS, 'landscape.mp4'));

    const tampered = new URL(url);
    tampered.searchParams.set('signature', `${url.searchParams.get('signature')?.slice(0, -2)}xx`);
    const bad = await fetch(tampered);
    assert.equal(bad.status, 403);
    assert.deepEqual(await bad.json(), { error: 'Invalid signature' });
    const otherKey = new URL(url);
    otherKey.pathname = otherKey.pathname.replace('video.mp4', 'thumbnail.webp');
    const wrongKey = await fetch(otherKey);
    assert.equal(wrongKey.status, 403);
    await wrongKey.arrayBuffer();
    const unsigned = new URL(url);
    unsigned.search = '';
    const noSignature = await fetch(unsigned);
    assert.equal(noSignature.status, 403);
    await noSignature.arrayBuffer();

    const ranged = await fetch(url, { headers: { range: 'bytes=100-1099' } });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers.get('content-range'), `bytes 100-1099/${expected.length}`);
    assert.equal(ranged.headers.get('content-length'), '1000');
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(expected.subarray(100, 1100)));
    const suffix = await fetch(url, { headers: { range: 'bytes=-500' } });
    assert.equal(suffix.status, 206);
    assert.ok(
      Buffer.from(await suffix.arrayBuffer()).equals(expected.subarray(expected.length - 500)),
    );
    const beyond = await fetch(url, { headers: { range: `bytes=${expected.length + 10}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers.get('content-range'), `bytes */${expected.length}`);
    await beyond.arrayBuffer();
  });

  it('stores the thumbnail and spritesheet next to the video, once', async () => {
    const { tenantId, apiKey } = await gw.tenant();
    const created = await api(gw.baseUrl, '/video/generate', { key: apiKey, body: ORIGINAL_BODY });
    await waitForState(gw, apiKey, created.body.video_id, 'completed');
    const dir = join(gw.dataDir, 'blobs', 'videos', tenantId, created.body.video_id);
    assert.deepEqual((await readdir(dir)).filter((f) => !f.startsWith('.')).sort(), [
      'spritesheet.jpg',
      'thumbnail.webp',
      'video.mp4',
    ]);
  });

  it('CORS: preflight allows browsers to send the API key; responses expose the request id', async () => {
    const res = await fetch(`${gw.baseUrl}/video/generate`, {
      method: 'OPTIONS',
      headers: {
        origin: 'https://app.example.com',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'x-api-key, content-type',
      },
    });
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), '*');
    assert.match(res.headers.get('access-control-allow-headers') ?? '', /x-api-key/);
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/);
    const { apiKey } = await gw.tenant();
    const get = await fetch(`${gw.baseUrl}/video/status/video_x`, {
      headers: {
        origin: 'https://app.example.com',
        'x-api-key': apiKey,
        'x-request-id': 'trace-123',
      },
    });
    assert.equal(get.headers.get('access-control-allow-origin'), '*');
    assert.equal(get.headers.get('x-request-id'), 'trace-123');
    assert.match(get.headers.get('access-control-expose-headers') ?? '', /x-request-id/);
  });
});

describe('limits and expiry on an injected clock', () => {
  let gw: TestGateway;
  const clock = new ManualClock(Date.UTC(2026, 11, 31, 23, 59, 0));
  before(async () => {
    const catalog = JSON.parse(await readFile(DEFAULT_CATALOG_PATH, 'utf8'));
    catalog.plans.tiny = { ratePerSecond: 100, burst: 100, monthlyQuota: 5 };
    const dataDir = await import('node:fs/promises').then((fs) =>
      fs.mkdtemp(join(process.env.TMPDIR ?? '/tmp', 'rp-limits-')),
    );
    const catalogPath = join(dataDir, 'catalog.json');
    await writeFile(catalogPath, JSON.stringify(catalog));
    gw = await startGateway({ clock, env: { REELPOSTLY_CATALOG: catalogPath } });
  });
  after(() => gw.close());

  it('burst 20 at 10/s: the 21st request is 429 with Retry-After and RateLimit headers', async () => {
    const { apiKey } = await gw.tenant();
    for (let i = 0; i < 20; i++) {
      const res = await api(gw.baseUrl, '/video/status/video_x', { key: apiKey });
      assert.equal(res.status, 404);
      assert.equal(res.headers.get('ratelimit-limit'), '20');
      assert.equal(res.headers.get('ratelimit-remaining'), String(19 - i));
    }
    const limited = await api(gw.baseUrl, '/video/status/video_x', { key: apiKey });
    assert.equal(limited.status, 429);
    assert.match(limited.body.error, /Rate limit exceeded: 10 requests per second, burst 20/);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.equal(limited.headers.get('ratelimit-remaining'), '0');
    clock.advance(99);
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 429);
    clock.advance(1);
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 404);
  });

  it('monthly quota: past the limit is 429 until the month turns', async () => {
    const { apiKey } = await gw.tenant({ plan: 'tiny' });
    for (let i = 0; i < 5; i++) {
      assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 404);
    }
    const over = await api(gw.baseUrl, '/video/status/video_x', { key: apiKey });
    assert.equal(over.status, 429);
    assert.match(over.body.error, /Monthly quota exceeded: 5 requests per month/);
    assert.equal(over.headers.get('retry-after'), '60');
    clock.advance(60_000);
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 404);
  });

  it('a signed URL stops working after its 7 days', async () => {
    const { apiKey } = await gw.tenant();
    const created = await api(gw.baseUrl, '/video/generate', { key: apiKey, body: ORIGINAL_BODY });
    clock.advance(9_000);
    const done = await eventually(async () => {
      await gw.services.pipeline.advance(created.body.video_id);
      const res = await api(gw.baseUrl, `/video/status/${created.body.video_id}`, { key: apiKey });
      return res.body.status === 'completed' ? res : null;
    });
    const fresh = await fetch(done.body.url);
    assert.equal(fresh.status, 200);
    await fresh.arrayBuffer();
    // Never shorter than 7 days; rounded up to the next minute (the URL stays stable).
    clock.advance(7 * 24 * 3600 * 1000 - 1000);
    const lastSecond = await fetch(done.body.url);
    assert.equal(lastSecond.status, 200);
    await lastSecond.arrayBuffer();
    clock.advance(61_000);
    const expired = await fetch(done.body.url);
    assert.equal(expired.status, 403);
    assert.deepEqual(await expired.json(), { error: 'URL expired' });
  });
});

describe('housekeeping by the worker', () => {
  it('purges expired Idempotency-Key records every 10 minutes, keeping live ones', async () => {
    const clock = new ManualClock();
    const gw = await startGateway({ clock, worker: true });
    const raw = new Database(join(gw.dataDir, 'reelpostly.db'), { readonly: true });
    try {
      const keys = () =>
        raw.prepare('SELECT key FROM idempotency_records ORDER BY key').pluck().all();
      const { apiKey, tenantId } = await gw.tenant({ credits: 10 });
      for (const key of ['a', 'b']) {
        const res = await fetch(`${gw.baseUrl}/video/generate`, {
          method: 'POST',
          headers: {
            'x-api-key': apiKey,
            'content-type': 'application/json',
            'idempotency-key': key,
          },
          body: JSON.stringify({ prompt: `kept ${key}` }),
        });
        assert.equal(res.status, 200);
      }
      await gw.services.store.beginIdempotent(
        { scope: tenantId, key: 'expired' },
        { requestHash: 'h', now: clock.now() - 60_000, ttlMs: 1_000 },
      );
      assert.deepEqual(keys(), ['a', 'b', 'expired']);
      clock.advance(10 * 60_000);
      await eventually(async () => !keys().includes('expired'), { timeoutMs: 5_000 });
      assert.deepEqual(keys(), ['a', 'b'], 'records within their 24 h stay');
      clock.advance(24 * 60 * 60_000);
      await eventually(async () => keys().length === 0, { timeoutMs: 5_000 });
    } finally {
      raw.close();
      await gw.close();
    }
  });
});
