/**
 * Tenant webhooks and batches, for real: a receiver on 127.0.0.1 verifying
 * Standard Webhooks signatures with the `standardwebhooks` package, retries on an
 * injected clock, a gateway replaced mid-way on the same SQLite file, SSRF refusals,
 * and batches racing for one balance.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { buildProgram } from '../../src/cli/program.ts';
import type { Delivery, Store } from '../../src/core/ports.ts';
import { WebhookUrlPolicy } from '../../src/core/webhook-safety.ts';
import { RETRY_SCHEDULE_MS, runOutbox, WebhookDispatcher } from '../../src/worker/deliveries.ts';
import { advanceJobs } from '../../src/worker/worker.ts';
import { api, ManualClock, startGateway, type TestGateway } from '../support/gateway.ts';

const ENV = { REELPOSTLY_WEBHOOK_ALLOW_HOSTS: '127.0.0.1', REELPOSTLY_WEBHOOK_TIMEOUT_MS: '500' };

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type Answer = { status: number; headers?: Record<string, string>; body?: string; hang?: boolean };

/** A webhook receiver: records every request, answers from a script (default 200). */
async function startReceiver() {
  const received: Received[] = [];
  const script: Answer[] = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        path: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString(),
      });
      const answer = script.shift() ?? { status: 200, body: 'ok' };
      if (answer.hang) return;
      res.writeHead(answer.status, answer.headers ?? {});
      res.end(answer.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: (path = '/hook') => `http://127.0.0.1:${port}${path}`,
    port,
    received,
    script,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const closers: Array<() => Promise<void>> = [];
after(async () => {
  for (const close of closers.reverse()) await close();
});

async function gateway(options: { dataDir?: string; env?: Record<string, string> } = {}) {
  const clock = new ManualClock();
  const gw = await startGateway({
    clock,
    env: { ...ENV, ...options.env },
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
  });
  closers.push(() => gw.close());
  return { gw, clock };
}

async function receiver() {
  const r = await startReceiver();
  closers.push(r.close);
  return r;
}

/** Moves time and runs worker ticks (jobs only) until `done` holds. */
async function driveJobs(gw: TestGateway, clock: ManualClock, done: () => Promise<boolean>) {
  for (let i = 0; i < 100; i++) {
    if (await done()) return;
    clock.advance(250);
    await advanceJobs(gw.services, { now: clock.now(), concurrency: 4, batchSize: 100 });
  }
  throw new Error('jobs did not settle');
}

async function tick(gw: TestGateway, clock: ManualClock) {
  await runOutbox(gw.services, { now: clock.now(), concurrency: 4, batchSize: 100 });
}

async function addEndpoint(gw: TestGateway, key: string, url: string, events?: string[]) {
  const res = await api(gw.baseUrl, '/v1/webhooks', {
    bearer: key,
    body: { url, ...(events ? { events } : {}) },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body as { id: string; secret: string };
}

async function ledgerBalanced(store: Store, tenantId: string) {
  const page = await store.listEntries(tenantId, { limit: 100 });
  const sum = page.items.reduce((total, entry) => total + entry.amount, 0);
  assert.equal(sum, await store.getBalance(tenantId), 'sum(ledger) != balance');
}

describe('tenant webhooks', () => {
  it('delivers a signed video.completed that verifies with standardwebhooks', async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { apiKey } = await gw.tenant({ credits: 50 });
    const endpoint = await addEndpoint(gw, apiKey, rx.url(), ['video.completed', 'video.failed']);
    assert.match(endpoint.secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const listed = await api(gw.baseUrl, '/v1/webhooks', { bearer: apiKey });
    assert.equal(listed.body.data.length, 1);
    assert.equal(listed.body.data[0].secret, undefined, 'the secret is shown once');

    const created = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'Tea farms at sunrise' },
    });
    const videoId = created.body.video_id as string;
    await driveJobs(gw, clock, async () => {
      return (await gw.services.store.getJob(videoId))?.state === 'completed';
    });
    await tick(gw, clock);
    assert.equal(rx.received.length, 1);
    const [message] = rx.received as [Received];
    const verified = new Webhook(endpoint.secret).verify(
      message.body,
      message.headers as Record<string, string>,
    ) as { type: string; data: { id: string; status: string } };
    assert.equal(verified.type, 'video.completed');
    assert.equal(verified.data.id, videoId);
    assert.equal(message.headers['webhook-id'], `${videoId}.video.completed`);

    const log = await api(gw.baseUrl, `/v1/webhooks/${endpoint.id}/deliveries`, { bearer: apiKey });
    assert.equal(log.status, 200);
    assert.equal(log.body.data[0].status, 'delivered');
    assert.equal(log.body.data[0].attempts[0].status_code, 200);
    assert.equal(log.body.data[0].attempts[0].response_body, 'ok');

    // Manual replay: same webhook-id, delivered again.
    const replay = await api(gw.baseUrl, `/v1/webhooks/${endpoint.id}/replay`, {
      bearer: apiKey,
      body: { event_id: `${videoId}.video.completed` },
    });
    assert.equal(replay.status, 200, JSON.stringify(replay.body));
    await tick(gw, clock);
    assert.equal(rx.received.length, 2);
    assert.equal(rx.received[1]?.headers['webhook-id'], `${videoId}.video.completed`);

    // Another tenant cannot see or replay this endpoint.
    const other = await gw.tenant();
    const foreign = await api(gw.baseUrl, `/v1/webhooks/${endpoint.id}/deliveries`, {
      bearer: other.apiKey,
    });
    assert.equal(foreign.status, 404);
  });

  it('rotation: both secrets sign during the overlap, only the new one after', async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 50 });
    const endpoint = await addEndpoint(gw, apiKey, rx.url(), ['video.failed']);
    const rotated = await api(gw.baseUrl, `/v1/webhooks/${endpoint.id}/rotate`, {
      bearer: apiKey,
      body: { overlap_seconds: 3600 },
    });
    assert.equal(rotated.status, 200);
    const secret = rotated.body.secret as string;
    assert.notEqual(secret, endpoint.secret);

    const fail = async () => {
      const res = await api(gw.baseUrl, '/video/generate', {
        key: apiKey,
        body: { prompt: 'a fox [[simulate:moderation_blocked]]' },
      });
      await driveJobs(gw, clock, async () => {
        return (await gw.services.store.getJob(res.body.video_id))?.state === 'failed';
      });
      await tick(gw, clock);
      return rx.received.at(-1) as Received;
    };
    const during = await fail();
    assert.equal(String(during.headers['webhook-signature']).split(' ').length, 2);
    for (const key of [endpoint.secret, secret]) {
      new Webhook(key).verify(during.body, during.headers as Record<string, string>);
    }
    clock.advance(3600_000);
    const later = await fail();
    assert.equal(String(later.headers['webhook-signature']).split(' ').length, 1);
    new Webhook(secret).verify(later.body, later.headers as Record<string, string>);
    assert.throws(() =>
      new Webhook(endpoint.secret).verify(later.body, later.headers as Record<string, string>),
    );
    await ledgerBalanced(gw.services.store, tenantId);
  });

  it('retries 500s, timeouts and Retry-After on the backoff schedule; 410 disables', async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { tenantId } = await gw.tenant({ credits: 5 });
    const { endpoint } = await gw.services.webhooks.createEndpoint({
      tenantId,
      url: rx.url(),
      events: ['credits.low'],
    });
    const dispatcher = new WebhookDispatcher({
      store: gw.services.store,
      clock,
      logger: pino({ level: 'silent' }),
      policy: new WebhookUrlPolicy({ allowHosts: ['127.0.0.1'] }),
      options: { timeoutMs: 300, leaseMs: 1000, random: () => 0.5 },
    });
    const deliverDue = () => dispatcher.deliverDue({ now: clock.now(), limit: 10, concurrency: 1 });
    const [delivery] = await gw.services.webhooks.deliveriesFor({
      tenantId,
      type: 'credits.low',
      eventId: 'evt_retry.credits.low',
      data: { balance: 1 },
    });
    assert.ok(delivery);
    await gw.services.store.enqueueDeliveries([delivery]);
    const stored = () => gw.services.store.getDelivery(delivery.deliveryId);

    rx.script.push(
      { status: 500, body: 'x'.repeat(1000) },
      { status: 200, hang: true },
      { status: 503, headers: { 'retry-after': '7200' } },
    );
    let expectedAt = clock.now();
    for (const [index, outcome] of ['500', 'timeout', '503'].entries()) {
      clock.set(expectedAt - 1);
      assert.equal(await deliverDue(), 0, `attempt ${index + 1} not due before its time`);
      clock.set(expectedAt);
      assert.equal(await deliverDue(), 1);
      const current = await stored();
      assert.equal(current?.status, 'pending');
      const wait = outcome === '503' ? 7200_000 : (RETRY_SCHEDULE_MS[index] as number);
      assert.equal(current?.nextAttemptAt, clock.now() + wait, `backoff after ${outcome}`);
      expectedAt = clock.now() + wait;
    }
    clock.set(expectedAt);
    await deliverDue();
    const done = await stored();
    assert.equal(done?.status, 'delivered');
    assert.deepEqual(
      done?.attempts.map((a) => a.statusCode),
      [500, null, 503, 200],
    );
    assert.ok(Buffer.byteLength(done?.attempts[0]?.responseBody ?? '') <= 256);
    assert.match(done?.attempts[1]?.error ?? '', /timed out/);
    const ids = new Set(rx.received.map((r) => r.headers['webhook-id']));
    assert.deepEqual([...ids], ['evt_retry.credits.low']);

    // A receiver answering 410 Gone disables its endpoint; nothing more is sent to it.
    rx.script.push({ status: 410 });
    await gw.services.webhooks.replay(tenantId, endpoint.endpointId, {
      deliveryId: delivery.deliveryId,
    });
    await deliverDue();
    assert.equal((await gw.services.store.getEndpoint(endpoint.endpointId))?.status, 'disabled');
  });

  it('gives up after the last retry of the schedule (about a day)', async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { tenantId } = await gw.tenant({ credits: 5 });
    await gw.services.webhooks.createEndpoint({ tenantId, url: rx.url(), events: ['credits.low'] });
    const deliveries = await gw.services.webhooks.deliveriesFor({
      tenantId,
      type: 'credits.low',
      eventId: 'evt_giveup.credits.low',
      data: {},
    });
    await gw.services.store.enqueueDeliveries(deliveries);
    const total = RETRY_SCHEDULE_MS.reduce((sum, ms) => sum + ms, 0);
    assert.ok(total > 20 * 3600_000 && total < 30 * 3600_000, 'about a day of retries');
    for (let i = 0; i <= RETRY_SCHEDULE_MS.length; i++) {
      rx.script.push({ status: 500 });
      await tick(gw, clock);
      // Past the longest wait: 12 h plus 20 % jitter.
      clock.advance(15 * 3600_000);
    }
    const delivery = deliveries[0] as Delivery;
    const final = await gw.services.store.getDelivery(delivery.deliveryId);
    assert.equal(final?.status, 'failed');
    assert.equal(final?.attempts.length, RETRY_SCHEDULE_MS.length + 1);
    assert.equal(final?.nextAttemptAt, null);
  });

  it('a gateway replaced between completion and delivery delivers exactly one event', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-webhook-crash-'));
    closers.push(() => rm(dataDir, { recursive: true, force: true }));
    const rx = await receiver();
    const first = await gateway({ dataDir });
    const { apiKey } = await first.gw.tenant({ credits: 10 });
    await addEndpoint(first.gw, apiKey, rx.url(), ['video.completed']);
    const created = await api(first.gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'Lighthouse at dusk' },
    });
    const videoId = created.body.video_id as string;
    await driveJobs(first.gw, first.clock, async () => {
      return (await first.gw.services.store.getJob(videoId))?.state === 'completed';
    });
    // The event committed with the completion, before any delivery was attempted.
    const pending = await first.gw.services.store.listDueDeliveries({
      now: first.clock.now(),
      limit: 10,
    });
    assert.deepEqual(
      pending.map((d) => d.eventId),
      [`${videoId}.video.completed`],
    );
    await first.gw.close();
    assert.equal(rx.received.length, 0);

    const second = await gateway({ dataDir });
    second.clock.set(first.clock.now());
    await tick(second.gw, second.clock);
    await tick(second.gw, second.clock);
    second.clock.advance(3600_000);
    await tick(second.gw, second.clock);
    assert.deepEqual(
      rx.received.map((r) => r.headers['webhook-id']),
      [`${videoId}.video.completed`],
    );
  });

  it('refuses private, loopback, link-local and plain-http targets, and never follows redirects', async () => {
    const { gw, clock } = await gateway({
      env: { REELPOSTLY_WEBHOOK_ALLOW_HOSTS: 'allowed.test' },
    });
    const { apiKey, tenantId } = await gw.tenant({ credits: 5 });
    for (const url of [
      'https://127.0.0.1/hook',
      'https://localhost/hook',
      'https://[::1]/hook',
      'https://10.1.2.3/hook',
      'https://192.168.0.10/hook',
      'https://172.16.5.4/hook',
      'https://169.254.169.254/latest/meta-data',
      'https://100.64.0.1/hook',
      'https://[fd00::1]/hook',
      'https://[::ffff:127.0.0.1]/hook',
      'https://224.0.0.1/hook',
      'http://example.com/hook',
      'ftp://example.com/hook',
    ]) {
      const res = await api(gw.baseUrl, '/v1/webhooks', { bearer: apiKey, body: { url } });
      assert.equal(res.status, 400, `${url} must be refused`);
    }

    // Delivery re-checks at connect time: a stored endpoint that resolves to loopback
    // (here written straight into the store) is never contacted.
    const rx = await receiver();
    const sneaky = {
      endpointId: 'wh_sneaky',
      tenantId,
      url: `https://localhost:${rx.port}/hook`,
      events: ['credits.low' as const],
      secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      previousSecret: null,
      previousSecretExpiresAt: null,
      status: 'enabled' as const,
      disabledReason: null,
      jobId: null,
      createdAt: clock.now(),
      updatedAt: clock.now(),
    };
    await gw.services.store.createEndpoint(sneaky);
    await gw.services.store.enqueueDeliveries(
      await gw.services.webhooks.deliveriesFor({
        tenantId,
        type: 'credits.low',
        eventId: 'evt_ssrf.credits.low',
        data: {},
      }),
    );
    await tick(gw, clock);
    const refused = await gw.services.store.getDelivery('evt_ssrf.credits.low@wh_sneaky');
    assert.equal(refused?.attempts[0]?.statusCode, null);
    assert.match(refused?.attempts[0]?.error ?? '', /non-public/);
    assert.equal(rx.received.length, 0);
  });

  it('a 3xx is a failed attempt: the redirect target is never requested', async () => {
    const { gw, clock } = await gateway();
    const target = await receiver();
    const rx = await receiver();
    const { tenantId } = await gw.tenant({ credits: 5 });
    await gw.services.webhooks.createEndpoint({ tenantId, url: rx.url(), events: ['credits.low'] });
    rx.script.push({ status: 302, headers: { location: target.url('/stolen') } });
    const deliveries = await gw.services.webhooks.deliveriesFor({
      tenantId,
      type: 'credits.low',
      eventId: 'evt_redirect.credits.low',
      data: {},
    });
    await gw.services.store.enqueueDeliveries(deliveries);
    await tick(gw, clock);
    const delivery = deliveries[0] as Delivery;
    const after302 = await gw.services.store.getDelivery(delivery.deliveryId);
    assert.equal(after302?.status, 'pending');
    assert.equal(after302?.attempts[0]?.statusCode, 302);
    assert.equal(target.received.length, 0);
  });

  it('credits.low fires once per crossing of the threshold', async () => {
    const { gw, clock } = await gateway({ env: { REELPOSTLY_LOW_CREDIT_THRESHOLD: '10' } });
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 11 });
    await addEndpoint(gw, apiKey, rx.url(), ['credits.low']);
    const generate = () =>
      api(gw.baseUrl, '/video/generate', { key: apiKey, body: { prompt: 'Waves' } });
    await generate(); // 11 -> 10: not below
    await tick(gw, clock);
    assert.equal(rx.received.length, 0);
    await generate(); // 10 -> 9: crosses
    await generate(); // 9 -> 8: already below
    await tick(gw, clock);
    assert.equal(rx.received.length, 1);
    assert.equal(JSON.parse(rx.received[0]?.body ?? '{}').data.balance, 9);
    await gw.services.accounts.addCredits(tenantId, 5); // 13: re-armed
    await generate(); // 12
    await generate(); // 11
    await generate(); // 10
    await generate(); // 9: crosses again
    await tick(gw, clock);
    assert.equal(rx.received.length, 2);
  });
});

describe('webhooks CLI', () => {
  it('adds, lists and removes endpoints of a tenant', async () => {
    const { gw } = await gateway();
    const rx = await receiver();
    const { tenantId } = await gw.tenant();
    const out: string[] = [];
    const run = (...args: string[]) =>
      buildProgram({
        io: { out: (text) => out.push(text) },
        withServices: (fn) => fn(gw.services),
        serve: async () => {},
      })
        .exitOverride()
        .parseAsync(['node', 'reelpostly', ...args]);
    await run('webhooks', 'add', tenantId, rx.url(), '--events', 'video.completed', '--json');
    const added = JSON.parse(out.pop() ?? '{}');
    assert.match(added.secret, /^whsec_/);
    assert.deepEqual(added.events, ['video.completed']);
    await run('webhooks', 'list', tenantId, '--json');
    const listed = JSON.parse(out.pop() ?? '[]');
    assert.equal(listed.length, 1);
    assert.equal(listed[0].secret, undefined);
    await run('webhooks', 'remove', tenantId, added.endpointId);
    assert.deepEqual(await gw.services.store.listEndpoints(tenantId), []);
  });
});

describe('batches', () => {
  it('reserves a batch in one step, reports items, refunds failures, sends batch.completed', async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 10 });
    await addEndpoint(gw, apiKey, rx.url(), ['batch.completed']);
    const res = await api(gw.baseUrl, '/v1/videos/batches', {
      bearer: apiKey,
      body: {
        items: [
          { prompt: 'One' },
          { prompt: 'Two [[simulate:moderation_blocked]]' },
          { prompt: 'Three', seconds: '8' },
        ],
      },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.credits_reserved, 3);
    assert.equal(res.body.data.length, 3);
    assert.equal(await gw.services.store.getBalance(tenantId), 7);
    const batchId = res.body.id as string;

    await driveJobs(gw, clock, async () => {
      const seed = await api(gw.baseUrl, `/video/batch/${batchId}`, { key: apiKey });
      return seed.body.items.every((item: { status: string }) =>
        ['completed', 'failed'].includes(item.status),
      );
    });
    const seed = await api(gw.baseUrl, `/video/batch/${batchId}`, { key: apiKey });
    assert.deepEqual(
      seed.body.items.map((item: { status: string }) => item.status),
      ['completed', 'failed', 'completed'],
    );
    assert.equal(seed.body.items[1].credits_refunded, 1);
    assert.equal(await gw.services.store.getBalance(tenantId), 8);
    await ledgerBalanced(gw.services.store, tenantId);

    await tick(gw, clock);
    await tick(gw, clock);
    assert.equal(rx.received.length, 1);
    const event = JSON.parse(rx.received[0]?.body ?? '{}');
    assert.equal(event.type, 'batch.completed');
    assert.equal(event.data.completed, 2);
    assert.equal(event.data.failed, 1);
    const v1 = await api(gw.baseUrl, `/v1/videos/batches/${batchId}`, { bearer: apiKey });
    assert.equal(v1.body.status, 'completed');

    const other = await gw.tenant();
    assert.equal(
      (await api(gw.baseUrl, `/video/batch/${batchId}`, { key: other.apiKey })).status,
      404,
    );
  });

  it('validates every item before charging anything', async () => {
    const { gw } = await gateway({ env: { REELPOSTLY_BATCH_MAX_ITEMS: '3' } });
    const { apiKey, tenantId } = await gw.tenant({ credits: 10 });
    const bad = await api(gw.baseUrl, '/video/batch', {
      key: apiKey,
      body: { items: [{ prompt: 'ok' }, { prompt: 'bad', seconds: 7 }] },
    });
    assert.equal(bad.status, 400);
    assert.match(bad.body.error, /items\[1\]/);
    const tooMany = await api(gw.baseUrl, '/video/batch', {
      key: apiKey,
      body: { items: Array.from({ length: 4 }, () => ({ prompt: 'x' })) },
    });
    assert.equal(tooMany.status, 400);
    assert.equal(await gw.services.store.getBalance(tenantId), 10);
    const page = await gw.services.store.listJobs({ tenantId, limit: 10, order: 'asc' });
    assert.equal(page.items.length, 0);
  });

  it('batches racing for one balance: exactly one is charged, the ledger balances', async () => {
    const { gw } = await gateway();
    const { apiKey, tenantId } = await gw.tenant({ credits: 15 });
    const items = Array.from({ length: 10 }, (_, i) => ({ prompt: `clip ${i}` }));
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        api(gw.baseUrl, '/video/batch', { key: apiKey, body: { items } }),
      ),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 402, 402, 402, 402, 402, 402, 402]);
    assert.equal(await gw.services.store.getBalance(tenantId), 5);
    await ledgerBalanced(gw.services.store, tenantId);
    const page = await gw.services.store.listJobs({ tenantId, limit: 100, order: 'asc' });
    assert.equal(page.items.length, 10);
  });
});

describe('per-request webhook_url', () => {
  it("each surface's webhook_url gets exactly one signed video.completed; it is never listed", async () => {
    const { gw, clock } = await gateway();
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 50 });
    // Registered for failures only: the completions below reach the webhook_urls alone.
    const endpoint = await addEndpoint(gw, apiKey, rx.url('/registered'), ['video.failed']);

    const seed = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'Tea farms at sunrise', webhook_url: rx.url('/seed') },
    });
    assert.equal(seed.status, 200, JSON.stringify(seed.body));
    assert.deepEqual(Object.keys(seed.body).sort(), [
      'credits_remaining',
      'progress',
      'status',
      'success',
      'tenant',
      'video_id',
    ]);
    const json = await api(gw.baseUrl, '/v1/videos', {
      bearer: apiKey,
      body: { prompt: 'A calico cat', webhook_url: rx.url('/v1-json') },
    });
    assert.equal(json.status, 200, JSON.stringify(json.body));
    const form = new FormData();
    form.set('prompt', 'A lighthouse in a storm');
    form.set('webhook_url', rx.url('/v1-multipart'));
    const multipart = await fetch(`${gw.baseUrl}/v1/videos`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}` },
      body: form,
    });
    const multipartBody = (await multipart.json()) as { id: string };
    assert.equal(multipart.status, 200, JSON.stringify(multipartBody));

    const jobs = {
      '/seed': seed.body.video_id as string,
      '/v1-json': json.body.id as string,
      '/v1-multipart': multipartBody.id,
    };
    await driveJobs(gw, clock, async () => {
      for (const jobId of Object.values(jobs)) {
        if ((await gw.services.store.getJob(jobId))?.state !== 'completed') return false;
      }
      return true;
    });
    await tick(gw, clock);
    await tick(gw, clock);
    assert.deepEqual(rx.received.map((r) => r.path).sort(), ['/seed', '/v1-json', '/v1-multipart']);
    for (const message of rx.received) {
      const jobId = jobs[message.path as keyof typeof jobs];
      // Signed with the secret the tenant already holds.
      const verified = new Webhook(endpoint.secret).verify(
        message.body,
        message.headers as Record<string, string>,
      ) as { type: string; data: { id: string; status: string } };
      assert.equal(verified.type, 'video.completed');
      assert.deepEqual([verified.data.id, verified.data.status], [jobId, 'completed']);
      assert.equal(message.headers['webhook-id'], `${jobId}.video.completed`);
    }

    const listed = await api(gw.baseUrl, '/v1/webhooks', { bearer: apiKey });
    assert.deepEqual(
      listed.body.data.map((e: { id: string }) => e.id),
      [endpoint.id],
    );
    const log = await api(gw.baseUrl, `/v1/webhooks/whjob_${jobs['/seed']}/deliveries`, {
      bearer: apiKey,
    });
    assert.equal(log.status, 200);
    assert.equal(log.body.data.length, 1);
    assert.equal(log.body.data[0].status, 'delivered');
    const foreign = await api(gw.baseUrl, `/v1/webhooks/whjob_${jobs['/seed']}/deliveries`, {
      bearer: (await gw.tenant()).apiKey,
    });
    assert.equal(foreign.status, 404);
    await ledgerBalanced(gw.services.store, tenantId);
  });

  it('refuses unsafe URLs, and webhook_url without a registered endpoint, before charging', async () => {
    const { gw } = await gateway();
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 50 });

    const bare = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'x', webhook_url: rx.url('/seed') },
    });
    assert.equal(bare.status, 400);
    assert.match(bare.body.error, /register a webhook endpoint first/);

    await addEndpoint(gw, apiKey, rx.url('/registered'));
    for (const url of [
      `http://localhost:${rx.port}/hook`,
      'https://127.0.0.2/hook',
      'https://10.0.0.1/hook',
      'https://169.254.169.254/latest/meta-data',
      'https://[::1]/hook',
      'not a url',
    ]) {
      const seed = await api(gw.baseUrl, '/video/generate', {
        key: apiKey,
        body: { prompt: 'x', webhook_url: url },
      });
      assert.equal(seed.status, 400, `${url}: ${JSON.stringify(seed.body)}`);
      const v1 = await api(gw.baseUrl, '/v1/videos', {
        bearer: apiKey,
        body: { prompt: 'x', webhook_url: url },
      });
      assert.equal(v1.status, 400, url);
      assert.equal(v1.body.error.param, 'webhook_url');
    }
    assert.equal(await gw.services.store.getBalance(tenantId), 50);
    const page = await gw.services.store.listJobs({ tenantId, limit: 10, order: 'asc' });
    assert.equal(page.items.length, 0);
    const listed = await api(gw.baseUrl, '/v1/webhooks', { bearer: apiKey });
    assert.equal(listed.body.data.length, 1);
  });

  it('a refused charge leaves no one-off endpoint behind', async () => {
    const { gw } = await gateway();
    const rx = await receiver();
    const { apiKey, tenantId } = await gw.tenant({ credits: 0 });
    await addEndpoint(gw, apiKey, rx.url('/registered'));
    const { store, webhooks } = gw.services;
    const created: string[] = [];
    const createJobEndpoint = webhooks.createJobEndpoint.bind(webhooks);
    webhooks.createJobEndpoint = async (input) => {
      const endpoint = await createJobEndpoint(input);
      created.push(endpoint.endpointId);
      return endpoint;
    };
    const poor = await api(gw.baseUrl, '/v1/videos', {
      bearer: apiKey,
      body: { prompt: 'x', webhook_url: rx.url('/job') },
    });
    assert.equal(poor.status, 402);
    assert.equal(created.length, 1);
    assert.match(created[0] as string, /^whjob_video_/);
    assert.equal(await store.getEndpoint(created[0] as string), null);
    assert.equal(await gw.services.store.getBalance(tenantId), 0);
    const page = await gw.services.store.listJobs({ tenantId, limit: 10, order: 'asc' });
    assert.equal(page.items.length, 0);
  });
});
