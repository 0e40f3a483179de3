/**
 * The webhook and batch part of the `Store` contract (webhook endpoints, the delivery outbox,
 * batches), run by `runStoreContract` against every adapter.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ErrorCode, isAppError } from '../../src/core/errors.ts';
import type {
  Batch,
  Delivery,
  NewLedgerEntry,
  Store,
  Tenant,
  WebhookEndpoint,
} from '../../src/core/ports.ts';
import { makeJob } from '../support/fixtures.ts';
import type { StoreHarness } from './store-contract.ts';

const T0 = Date.UTC(2026, 0, 1);

function tenant(tenantId: string): Tenant {
  return {
    tenantId,
    email: `${tenantId}@example.com`,
    planId: 'starter',
    status: 'active',
    createdAt: T0,
  };
}

function endpoint(endpointId: string, tenantId: string, at = T0): WebhookEndpoint {
  return {
    endpointId,
    tenantId,
    url: 'https://example.com/hook',
    events: ['video.completed', 'video.failed'],
    secret: 'whsec_c2VjcmV0',
    previousSecret: null,
    previousSecretExpiresAt: null,
    status: 'enabled',
    disabledReason: null,
    jobId: null,
    createdAt: at,
    updatedAt: at,
  };
}

function delivery(
  eventId: string,
  endpointId: string,
  overrides: Partial<Delivery> = {},
): Delivery {
  return {
    deliveryId: `${eventId}@${endpointId}`,
    eventId,
    eventType: 'video.completed',
    tenantId: 't_a',
    endpointId,
    payload: JSON.stringify({ type: 'video.completed', data: { id: eventId } }),
    status: 'pending',
    attempts: [],
    nextAttemptAt: T0,
    createdAt: T0,
    updatedAt: T0,
    version: 1,
    ...overrides,
  };
}

function batchOf(batchId: string, tenantId: string, jobIds: string[], cost: number): Batch {
  return {
    batchId,
    tenantId,
    jobIds,
    cost,
    status: 'running',
    createdAt: T0,
    updatedAt: T0,
    completedAt: null,
    nextCheckAt: T0,
    version: 1,
  };
}

function batchCharge(batchId: string, tenantId: string, cost: number): NewLedgerEntry {
  return {
    entryId: `charge:${batchId}`,
    tenantId,
    kind: 'charge',
    amount: -cost,
    reason: 'batch',
    jobId: null,
    createdAt: T0,
  };
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error) => isAppError(error, code));
}

async function grant(store: Store, tenantId: string, amount: number): Promise<void> {
  await store.post({
    entryId: `grant:${tenantId}`,
    tenantId,
    kind: 'grant',
    amount,
    reason: 'test',
    jobId: null,
    createdAt: T0,
  });
}

async function ledgerSum(store: Store, tenantId: string): Promise<number> {
  let total = 0;
  let after: string | undefined;
  do {
    const page = await store.listEntries(tenantId, { ...(after ? { after } : {}), limit: 100 });
    total += page.items.reduce((sum, entry) => sum + entry.amount, 0);
    after = page.next ?? undefined;
  } while (after);
  return total;
}

export function runWebhookStoreContract(name: string, factory: () => Promise<StoreHarness>): void {
  function test(title: string, body: (harness: StoreHarness) => Promise<void>): void {
    it(title, async () => {
      const harness = await factory();
      try {
        await body(harness);
      } finally {
        await harness.cleanup();
      }
    });
  }

  describe(`Store contract (webhooks, outbox, batches): ${name}`, () => {
    test('endpoints: create, list per tenant, update, delete', async ({ store }) => {
      await store.createTenant(tenant('t_a'));
      await store.createTenant(tenant('t_b'));
      await store.createEndpoint(endpoint('wh_1', 't_a'));
      await store.createEndpoint(endpoint('wh_2', 't_a', T0 + 1));
      await store.createEndpoint(endpoint('wh_3', 't_b'));
      await rejectsWith(store.createEndpoint(endpoint('wh_4', 't_missing')), 'not_found');
      assert.deepEqual(await store.getEndpoint('wh_1'), endpoint('wh_1', 't_a'));
      assert.deepEqual(
        (await store.listEndpoints('t_a')).map((e) => e.endpointId),
        ['wh_1', 'wh_2'],
      );
      const rotated = await store.updateEndpoint('wh_1', {
        secret: 'whsec_bmV3',
        previousSecret: 'whsec_c2VjcmV0',
        previousSecretExpiresAt: T0 + 1000,
        updatedAt: T0 + 5,
      });
      assert.equal(rotated.secret, 'whsec_bmV3');
      assert.deepEqual(await store.getEndpoint('wh_1'), rotated);
      await rejectsWith(store.updateEndpoint('wh_nope', { status: 'disabled' }), 'not_found');
      await store.deleteEndpoint('wh_1');
      await store.deleteEndpoint('wh_1');
      assert.equal(await store.getEndpoint('wh_1'), null);
      assert.deepEqual(
        (await store.listEndpoints('t_a')).map((e) => e.endpointId),
        ['wh_2'],
      );
    });

    test("a job's one-off endpoint is readable by id, updatable, never listed", async ({
      store,
    }) => {
      await store.createTenant(tenant('t_a'));
      await store.createEndpoint(endpoint('wh_1', 't_a'));
      const oneOff: WebhookEndpoint = {
        ...endpoint('whjob_video_1', 't_a', T0 + 1),
        secret: '',
        jobId: 'video_1',
      };
      await store.createEndpoint(oneOff);
      await rejectsWith(
        store.createEndpoint({ ...oneOff, endpointId: 'whjob_video_2', tenantId: 't_missing' }),
        'not_found',
      );
      assert.deepEqual(await store.getEndpoint('whjob_video_1'), oneOff);
      assert.deepEqual(
        (await store.listEndpoints('t_a')).map((e) => e.endpointId),
        ['wh_1'],
      );
      const disabled = await store.updateEndpoint('whjob_video_1', {
        status: 'disabled',
        disabledReason: 'gone',
        updatedAt: T0 + 2,
      });
      assert.equal(disabled.jobId, 'video_1');
      assert.deepEqual(await store.getEndpoint('whjob_video_1'), disabled);
      assert.deepEqual(
        (await store.listEndpoints('t_a')).map((e) => e.endpointId),
        ['wh_1'],
      );
      await store.deleteEndpoint('whjob_video_1');
      assert.equal(await store.getEndpoint('whjob_video_1'), null);
    });

    test('outbox: enqueue is idempotent, due listing, versioned updates, log newest first', async ({
      store,
    }) => {
      await store.createTenant(tenant('t_a'));
      await store.enqueueDeliveries([
        delivery('e1', 'wh_1', { createdAt: T0, nextAttemptAt: T0 + 10 }),
        delivery('e2', 'wh_1', { createdAt: T0 + 1, nextAttemptAt: T0 }),
        delivery('e3', 'wh_2', { createdAt: T0 + 2, nextAttemptAt: T0 + 5000 }),
      ]);
      // A second enqueue of an existing id changes nothing.
      await store.enqueueDeliveries([delivery('e1', 'wh_1', { payload: 'other' })]);
      assert.notEqual((await store.getDelivery('e1@wh_1'))?.payload, 'other');

      const due = await store.listDueDeliveries({ now: T0 + 10, limit: 10 });
      assert.deepEqual(
        due.map((d) => d.deliveryId),
        ['e2@wh_1', 'e1@wh_1'],
      );
      const updated = await store.updateDelivery(
        'e2@wh_1',
        {
          status: 'delivered',
          nextAttemptAt: null,
          attempts: [{ at: T0, latencyMs: 12, statusCode: 200, responseBody: 'ok', error: null }],
        },
        { expectVersion: 1 },
      );
      assert.equal(updated.version, 2);
      assert.deepEqual(await store.getDelivery('e2@wh_1'), updated);
      await rejectsWith(
        store.updateDelivery('e2@wh_1', { status: 'failed' }, { expectVersion: 1 }),
        'version_conflict',
      );
      await rejectsWith(
        store.updateDelivery('nope', { status: 'failed' }, { expectVersion: 1 }),
        'not_found',
      );
      assert.deepEqual(
        (await store.listDueDeliveries({ now: T0 + 10_000, limit: 10 })).map((d) => d.deliveryId),
        ['e1@wh_1', 'e3@wh_2'],
      );

      const first = await store.listDeliveries({ endpointId: 'wh_1', limit: 1 });
      assert.deepEqual(
        first.items.map((d) => d.deliveryId),
        ['e2@wh_1'],
      );
      assert.equal(first.next, 'e2@wh_1');
      const second = await store.listDeliveries({ endpointId: 'wh_1', after: 'e2@wh_1', limit: 1 });
      assert.deepEqual(
        second.items.map((d) => d.deliveryId),
        ['e1@wh_1'],
      );
      assert.equal(second.next, null);
    });

    test('updateJob commits outbox deliveries with the job, or neither', async ({ store }) => {
      await store.createTenant(tenant('t_a'));
      await grant(store, 't_a', 5);
      const job = makeJob('video_1', 't_a');
      await store.createJob(job, {
        entryId: 'charge:video_1',
        tenantId: 't_a',
        kind: 'charge',
        amount: -1,
        reason: 'video',
        jobId: 'video_1',
        createdAt: T0,
      });
      const event = delivery('video_1.video.completed', 'wh_1');
      await rejectsWith(
        store.updateJob(
          'video_1',
          { state: 'completed' },
          { expectVersion: 7, deliveries: [event] },
        ),
        'version_conflict',
      );
      assert.equal(await store.getDelivery(event.deliveryId), null);
      await store.updateJob(
        'video_1',
        { state: 'completed' },
        { expectVersion: 1, deliveries: [event] },
      );
      assert.deepEqual(await store.getDelivery(event.deliveryId), event);
    });

    test('createBatch: batch, jobs and one charge together; nothing when short', async ({
      store,
    }) => {
      await store.createTenant(tenant('t_a'));
      await grant(store, 't_a', 10);
      const jobs = ['video_a', 'video_b', 'video_c'].map((id) => makeJob(id, 't_a', { cost: 3 }));
      const batch = batchOf(
        'batch_1',
        't_a',
        jobs.map((j) => j.jobId),
        9,
      );
      const { balance } = await store.createBatch(batch, {
        jobs,
        charge: batchCharge('batch_1', 't_a', 9),
      });
      assert.equal(balance, 1);
      assert.deepEqual(await store.getBatch('batch_1'), batch);
      for (const job of jobs) assert.deepEqual(await store.getJob(job.jobId), job);

      const more = ['video_d', 'video_e'].map((id) => makeJob(id, 't_a'));
      await rejectsWith(
        store.createBatch(batchOf('batch_2', 't_a', ['video_d', 'video_e'], 2), {
          jobs: more,
          charge: batchCharge('batch_2', 't_a', 2),
        }),
        'insufficient_credits',
      );
      assert.equal(await store.getBatch('batch_2'), null);
      assert.equal(await store.getJob('video_d'), null);
      assert.equal(await store.getBalance('t_a'), 1);
      assert.equal(await ledgerSum(store, 't_a'), 1);

      assert.deepEqual(
        (await store.listDueBatches({ now: T0, limit: 10 })).map((b) => b.batchId),
        ['batch_1'],
      );
      const done = delivery('batch_1.batch.completed', 'wh_1', { eventType: 'batch.completed' });
      const completed = await store.updateBatch(
        'batch_1',
        { status: 'completed', completedAt: T0 + 1, nextCheckAt: null },
        { expectVersion: 1, deliveries: [done] },
      );
      assert.equal(completed.version, 2);
      assert.deepEqual(await store.getDelivery(done.deliveryId), done);
      assert.deepEqual(await store.listDueBatches({ now: T0 + 10, limit: 10 }), []);
      await rejectsWith(
        store.updateBatch('batch_1', { nextCheckAt: T0 }, { expectVersion: 1 }),
        'version_conflict',
      );
    });

    test('two batches racing for one balance: exactly one is charged', async (harness) => {
      const { store } = harness;
      const other = harness.second ? await harness.second() : store;
      await store.createTenant(tenant('t_a'));
      await grant(store, 't_a', 30);
      const attempt = (s: Store, name: string) => {
        const jobs = Array.from({ length: 20 }, (_, i) => makeJob(`video_${name}_${i}`, 't_a'));
        return s.createBatch(
          batchOf(
            `batch_${name}`,
            't_a',
            jobs.map((j) => j.jobId),
            20,
          ),
          {
            jobs,
            charge: batchCharge(`batch_${name}`, 't_a', 20),
          },
        );
      };
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, (_, i) => attempt(i % 2 ? other : store, `r${i}`)),
      );
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const r of results) {
        if (r.status === 'rejected') assert.ok(isAppError(r.reason, 'insufficient_credits'));
      }
      assert.equal(await store.getBalance('t_a'), 10);
      assert.equal(await ledgerSum(store, 't_a'), 10);
      const page = await store.listJobs({ tenantId: 't_a', limit: 100, order: 'asc' });
      assert.equal(page.items.length, 20);
    });
  });
}
