/**
 * The `Store` contract: one suite, written against the port only, that every adapter
 * (SQLite file, DynamoDB table) must pass unchanged.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type ErrorCode, isAppError } from '../../src/core/errors.ts';
import type {
  ApiKey,
  AuditEntry,
  Job,
  LedgerEntry,
  NewLedgerEntry,
  Page,
  Store,
  Tenant,
} from '../../src/core/ports.ts';
import { chargeFor, makeJob } from '../support/fixtures.ts';
import { runWebhookStoreContract } from './webhook-store-contract.ts';

export interface StoreHarness {
  /** A migrated, empty store. */
  store: Store;
  /**
   * Opens ANOTHER connection/instance onto the same data, to prove atomicity across
   * processes. Stores it returns are closed by `cleanup`.
   */
  second?: () => Promise<Store>;
  /** Closes every store of this harness and deletes its data. */
  cleanup: () => Promise<void>;
}

const T0 = Date.UTC(2026, 0, 1);

function makeTenant(tenantId: string, overrides: Partial<Tenant> = {}): Tenant {
  return {
    tenantId,
    email: `${tenantId}@example.com`,
    planId: 'starter',
    status: 'active',
    createdAt: T0,
    ...overrides,
  };
}

function makeKey(keyId: string, tenantId: string, overrides: Partial<ApiKey> = {}): ApiKey {
  return {
    keyId,
    tenantId,
    name: `key ${keyId}`,
    prefix: `rp_live_${keyId.slice(0, 4)}`,
    hash: `hash-${keyId}`.padEnd(64, '0'),
    createdAt: T0,
    lastUsedAt: null,
    expiresAt: null,
    revokedAt: null,
    ...overrides,
  };
}

function makeEntry(
  entryId: string,
  tenantId: string,
  amount: number,
  overrides: Partial<NewLedgerEntry> = {},
): NewLedgerEntry {
  return {
    entryId,
    tenantId,
    kind: amount >= 0 ? 'grant' : 'charge',
    amount,
    reason: 'test',
    jobId: null,
    createdAt: T0,
    ...overrides,
  };
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (error) => isAppError(error, code));
}

/** Follows `next` until the end, checking that no page exceeds `limit`. */
async function collect<T>(
  limit: number,
  fetch: (after: string | undefined) => Promise<Page<T>>,
): Promise<{ items: T[]; pageSizes: number[] }> {
  const items: T[] = [];
  const pageSizes: number[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await fetch(after);
    assert.ok(page.items.length <= limit, 'page larger than limit');
    items.push(...page.items);
    pageSizes.push(page.items.length);
    if (page.next === null) return { items, pageSizes };
    after = page.next;
  }
}

async function allEntries(store: Store, tenantId: string): Promise<LedgerEntry[]> {
  return (await collect(100, (after) => store.listEntries(tenantId, { after, limit: 100 }))).items;
}

async function assertBalanced(store: Store, tenantId: string): Promise<void> {
  const entries = await allEntries(store, tenantId);
  const sum = entries.reduce((total, entry) => total + entry.amount, 0);
  assert.equal(sum, await store.getBalance(tenantId), 'sum(ledger) != balance');
}

export function runStoreContract(name: string, factory: () => Promise<StoreHarness>): void {
  /** Every test gets its own empty store, so listings can be asserted exactly. */
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

  runWebhookStoreContract(name, factory);

  describe(`Store contract: ${name}`, () => {
    describe('lifecycle', () => {
      test('migrate is repeatable, keeps data, and ping answers', async ({ store }) => {
        await store.createTenant(makeTenant('t_1'));
        await store.migrate();
        await store.migrate();
        await store.ping();
        assert.deepEqual(await store.getTenant('t_1'), makeTenant('t_1'));
      });
    });

    describe('tenants', () => {
      test('creates, reads and refuses a duplicate id', async ({ store }) => {
        const tenant = makeTenant('t_a', { planId: 'pro', status: 'suspended' });
        await store.createTenant(tenant);
        assert.deepEqual(await store.getTenant('t_a'), tenant);
        assert.equal(await store.getTenant('t_missing'), null);
        await rejectsWith(
          store.createTenant(makeTenant('t_a', { email: 'x@y.z' })),
          'validation_error',
        );
        assert.deepEqual(await store.getTenant('t_a'), tenant, 'duplicate overwrote the tenant');
      });

      test('updates only the patched fields', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        const updated = await store.updateTenant('t_a', { status: 'suspended' });
        const expected = makeTenant('t_a', { status: 'suspended' });
        assert.deepEqual(updated, expected);
        assert.deepEqual(await store.getTenant('t_a'), expected);
        const again = await store.updateTenant('t_a', { planId: 'pro', email: 'new@example.com' });
        assert.deepEqual(again, { ...expected, planId: 'pro', email: 'new@example.com' });
        await rejectsWith(store.updateTenant('t_missing', { status: 'active' }), 'not_found');
      });

      test('lists tenants by id in pages, next null on the last', async ({ store }) => {
        const ids = ['t_e', 't_b', 't_f', 't_a', 't_d', 't_c'];
        for (const id of ids) await store.createTenant(makeTenant(id));
        const sorted = [...ids].sort();

        const byThree = await collect(3, (after) => store.listTenants({ after, limit: 3 }));
        assert.deepEqual(
          byThree.pageSizes,
          [3, 3],
          'an exact multiple must not yield an empty page',
        );
        assert.deepEqual(
          byThree.items.map((tenant) => tenant.tenantId),
          sorted,
        );

        const byFour = await collect(4, (after) => store.listTenants({ after, limit: 4 }));
        assert.deepEqual(byFour.pageSizes, [4, 2]);
        assert.deepEqual(
          byFour.items.map((tenant) => tenant.tenantId),
          sorted,
        );

        const first = await store.listTenants({ limit: 2 });
        assert.equal(first.next, 't_b');
        const tail = await store.listTenants({ after: 't_d', limit: 10 });
        assert.deepEqual(
          tail.items.map((tenant) => tenant.tenantId),
          ['t_e', 't_f'],
        );
        assert.equal(tail.next, null);
      });
    });

    describe('api keys', () => {
      test('creates, finds by hash and id, lists oldest first', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.createTenant(makeTenant('t_b'));
        const newer = makeKey('k_2', 't_a', { createdAt: T0 + 10, expiresAt: T0 + 99_000 });
        const older = makeKey('k_1', 't_a', { createdAt: T0 });
        const other = makeKey('k_3', 't_b');
        await store.createKey(newer);
        await store.createKey(older);
        await store.createKey(other);

        assert.deepEqual(await store.findKeyByHash(newer.hash), newer);
        assert.equal(await store.findKeyByHash('0'.repeat(64)), null);
        assert.deepEqual(await store.getKey('k_1'), older);
        assert.equal(await store.getKey('k_missing'), null);
        assert.deepEqual(await store.listKeys('t_a'), [older, newer]);
        assert.deepEqual(await store.listKeys('t_b'), [other]);
        assert.deepEqual(await store.listKeys('t_none'), []);
      });

      test('refuses a second key with the same hash', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        const key = makeKey('k_1', 't_a');
        await store.createKey(key);
        await assert.rejects(store.createKey(makeKey('k_2', 't_a', { hash: key.hash })));
        assert.deepEqual(await store.findKeyByHash(key.hash), key);
        assert.equal(await store.getKey('k_2'), null);
      });

      test('revocation keeps the first revokedAt; touch records use', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.createKey(makeKey('k_1', 't_a'));

        await store.touchKey('k_1', T0 + 5);
        assert.equal((await store.getKey('k_1'))?.lastUsedAt, T0 + 5);
        await store.touchKey('k_1', T0 + 50);
        assert.equal((await store.getKey('k_1'))?.lastUsedAt, T0 + 50);

        const revoked = await store.revokeKey('k_1', T0 + 100);
        assert.equal(revoked.revokedAt, T0 + 100);
        assert.equal(revoked.lastUsedAt, T0 + 50);
        const again = await store.revokeKey('k_1', T0 + 200);
        assert.equal(again.revokedAt, T0 + 100, 'a later revocation replaced the first');
        assert.equal((await store.findKeyByHash(revoked.hash))?.revokedAt, T0 + 100);
        await rejectsWith(store.revokeKey('k_missing', T0), 'not_found');
      });
    });

    describe('credit ledger', () => {
      test('posts move the balance and record balanceAfter', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        assert.equal(await store.getBalance('t_a'), 0);
        assert.equal(await store.getBalance('t_never'), 0);

        const grant = await store.post(makeEntry('g1', 't_a', 10));
        assert.equal(grant.applied, true);
        assert.equal(grant.balance, 10);
        assert.deepEqual(grant.entry, { ...makeEntry('g1', 't_a', 10), balanceAfter: 10 });

        const charge = await store.post(makeEntry('c1', 't_a', -4, { jobId: 'video_1' }));
        assert.equal(charge.applied, true);
        assert.equal(charge.balance, 6);
        assert.equal(charge.entry.balanceAfter, 6);
        assert.equal(charge.entry.jobId, 'video_1');
        assert.equal(await store.getBalance('t_a'), 6);
        await assertBalanced(store, 't_a');
      });

      test('re-posting an entry id applies nothing', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        const first = await store.post(makeEntry('g1', 't_a', 10));
        await store.post(makeEntry('c1', 't_a', -3));

        const again = await store.post(makeEntry('g1', 't_a', 10));
        assert.equal(again.applied, false);
        assert.deepEqual(again.entry, first.entry);
        assert.equal(again.balance, 7);

        const different = await store.post(makeEntry('g1', 't_a', 500, { reason: 'other' }));
        assert.equal(different.applied, false, 'an id is applied once whatever the body');
        assert.deepEqual(different.entry, first.entry);
        assert.equal(await store.getBalance('t_a'), 7);
        assert.equal((await allEntries(store, 't_a')).length, 2);
        await assertBalanced(store, 't_a');
      });

      test('refuses to go negative and writes nothing', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await rejectsWith(store.post(makeEntry('c0', 't_a', -1)), 'insufficient_credits');
        assert.equal(await store.getBalance('t_a'), 0);
        assert.deepEqual(await allEntries(store, 't_a'), []);

        await store.post(makeEntry('g1', 't_a', 5));
        await rejectsWith(store.post(makeEntry('c1', 't_a', -6)), 'insufficient_credits');
        assert.equal(await store.getBalance('t_a'), 5);

        const exact = await store.post(makeEntry('c2', 't_a', -5));
        assert.equal(exact.balance, 0, 'spending down to exactly zero is allowed');
        await rejectsWith(store.post(makeEntry('c3', 't_a', -1)), 'insufficient_credits');

        // A refused id was never written, so it can still be posted later.
        await store.post(makeEntry('g2', 't_a', 10));
        assert.equal((await store.post(makeEntry('c1', 't_a', -6))).applied, true);
        assert.equal(await store.getBalance('t_a'), 4);
        assert.deepEqual(
          (await allEntries(store, 't_a')).map((entry) => entry.entryId),
          ['g1', 'c2', 'g2', 'c1'],
        );
        await assertBalanced(store, 't_a');
      });

      test('refuses non-integer amounts', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await rejectsWith(store.post(makeEntry('g1', 't_a', 1.5)), 'validation_error');
        assert.equal(await store.getBalance('t_a'), 0);
      });

      test('lists entries oldest first in pages, per tenant', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.createTenant(makeTenant('t_b'));
        const amounts = [20, -3, -4, 7, -1, -2, 5];
        for (const [index, amount] of amounts.entries()) {
          await store.post(makeEntry(`a${index}`, 't_a', amount));
          if (index % 2 === 0) await store.post(makeEntry(`b${index}`, 't_b', 1));
        }

        const { items, pageSizes } = await collect(3, (after) =>
          store.listEntries('t_a', { after, limit: 3 }),
        );
        assert.deepEqual(pageSizes, [3, 3, 1]);
        assert.deepEqual(
          items.map((entry) => entry.entryId),
          amounts.map((_, index) => `a${index}`),
        );
        let running = 0;
        for (const entry of items) {
          running += entry.amount;
          assert.equal(entry.balanceAfter, running);
          assert.equal(entry.tenantId, 't_a');
        }
        assert.equal(running, await store.getBalance('t_a'));
        assert.equal((await allEntries(store, 't_b')).length, 4);
        await assertBalanced(store, 't_b');
      });
    });

    describe('jobs', () => {
      test('createJob inserts the job and charges in one step', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 10));
        const job = makeJob('video_1', 't_a', { cost: 4 });

        const created = await store.createJob(job, chargeFor(job));
        assert.deepEqual(created, { job, balance: 6 });
        assert.deepEqual(await store.getJob('video_1'), job);
        const entries = await allEntries(store, 't_a');
        assert.deepEqual(entries.at(-1), { ...chargeFor(job), balanceAfter: 6 });
        await assertBalanced(store, 't_a');
      });

      test('createJob without credits writes neither job nor entry', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 3));
        const job = makeJob('video_1', 't_a', { cost: 4 });

        await rejectsWith(store.createJob(job, chargeFor(job)), 'insufficient_credits');
        assert.equal(await store.getJob('video_1'), null);
        assert.equal(await store.getBalance('t_a'), 3);
        assert.deepEqual(
          (await allEntries(store, 't_a')).map((entry) => entry.entryId),
          ['g1'],
        );
        assert.deepEqual(
          (await store.listJobs({ tenantId: 't_a', limit: 10, order: 'asc' })).items,
          [],
        );
      });

      test('createJob refuses a charge id that was already posted', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 10));
        const first = makeJob('video_1', 't_a');
        await store.createJob(first, chargeFor(first));
        const second = makeJob('video_2', 't_a');

        // Reusing the charge would otherwise create a job nobody paid for.
        await rejectsWith(store.createJob(second, chargeFor(first)), 'validation_error');
        assert.equal(await store.getJob('video_2'), null);
        assert.equal(await store.getBalance('t_a'), 9);
      });

      test('lists jobs by creation time, per tenant, in pages', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.createTenant(makeTenant('t_b'));
        await store.post(makeEntry('ga', 't_a', 100));
        await store.post(makeEntry('gb', 't_b', 100));
        // Three jobs share each createdAt, so the jobId tie-break is exercised; ids are
        // inserted out of order so insertion order cannot pass for sort order.
        const jobs: Job[] = [];
        for (let index = 0; index < 25; index += 1) {
          const id = `video_a${String((index * 7) % 25).padStart(2, '0')}`;
          jobs.push(makeJob(id, 't_a', { createdAt: T0 + Math.floor(index / 3) * 1000 }));
        }
        for (let index = 0; index < 5; index += 1) {
          jobs.push(makeJob(`video_b${index}`, 't_b', { createdAt: T0 + index * 1500 }));
        }
        for (const job of [...jobs].reverse()) await store.createJob(job, chargeFor(job));

        const byTime = (a: Job, b: Job) =>
          a.createdAt - b.createdAt || (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0);
        const expectedA = jobs
          .filter((job) => job.tenantId === 't_a')
          .sort(byTime)
          .map((job) => job.jobId);

        const asc = await collect(10, (after) =>
          store.listJobs({ tenantId: 't_a', after, limit: 10, order: 'asc' }),
        );
        assert.deepEqual(asc.pageSizes, [10, 10, 5]);
        assert.deepEqual(
          asc.items.map((job) => job.jobId),
          expectedA,
        );
        assert.deepEqual(
          asc.items.find((job) => job.jobId === 'video_a07'),
          jobs.find((job) => job.jobId === 'video_a07'),
        );

        const desc = await collect(10, (after) =>
          store.listJobs({ tenantId: 't_a', after, limit: 10, order: 'desc' }),
        );
        assert.deepEqual(desc.pageSizes, [10, 10, 5]);
        assert.deepEqual(
          desc.items.map((job) => job.jobId),
          [...expectedA].reverse(),
        );

        const everyone = await collect(10, (after) =>
          store.listJobs({ after, limit: 10, order: 'asc' }),
        );
        assert.deepEqual(
          everyone.items.map((job) => job.jobId),
          [...jobs].sort(byTime).map((job) => job.jobId),
        );

        const onlyB = await store.listJobs({ tenantId: 't_b', limit: 5, order: 'asc' });
        assert.equal(onlyB.next, null);
        assert.deepEqual(
          onlyB.items.map((job) => job.jobId),
          ['video_b0', 'video_b1', 'video_b2', 'video_b3', 'video_b4'],
        );
        const none = await store.listJobs({ tenantId: 't_none', limit: 5, order: 'desc' });
        assert.deepEqual(none, { items: [], next: null });
      });

      test('updateJob applies a patch only at the expected version', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 10));
        const job = makeJob('video_1', 't_a');
        await store.createJob(job, chargeFor(job));

        const updated = await store.updateJob(
          'video_1',
          {
            provider: 'fallback',
            upstreamModel: 'vendor/model-2',
            state: 'completed',
            progress: 100,
            providerJobId: 'up_1',
            asset: {
              keys: { video: 'v/1.mp4', thumbnail: 'v/1.webp' },
              bytes: 1234,
              filename: 'a.mp4',
            },
            completedAt: T0 + 9,
            nextCheckAt: null,
            updatedAt: T0 + 9,
          },
          { expectVersion: 1 },
        );
        const expected: Job = {
          ...job,
          provider: 'fallback',
          upstreamModel: 'vendor/model-2',
          state: 'completed',
          progress: 100,
          providerJobId: 'up_1',
          asset: {
            keys: { video: 'v/1.mp4', thumbnail: 'v/1.webp' },
            bytes: 1234,
            filename: 'a.mp4',
          },
          completedAt: T0 + 9,
          nextCheckAt: null,
          updatedAt: T0 + 9,
          version: 2,
        };
        assert.deepEqual(updated, expected);
        assert.deepEqual(await store.getJob('video_1'), expected);

        await rejectsWith(
          store.updateJob('video_1', { progress: 5 }, { expectVersion: 1 }),
          'version_conflict',
        );
        assert.deepEqual(await store.getJob('video_1'), expected, 'a stale update changed the job');
        await rejectsWith(
          store.updateJob('video_missing', { progress: 5 }, { expectVersion: 1 }),
          'not_found',
        );
      });

      test('a refund posted with updateJob applies exactly once', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 10));
        const job = makeJob('video_1', 't_a', { cost: 4 });
        await store.createJob(job, chargeFor(job));
        const refund = makeEntry('refund:video_1', 't_a', 4, { kind: 'refund', jobId: 'video_1' });
        const error = { code: 'upstream_error', message: 'provider failed' };

        // A stale version must not leak its refund either.
        await rejectsWith(
          store.updateJob('video_1', { state: 'failed' }, { expectVersion: 7, ledger: refund }),
          'version_conflict',
        );
        assert.equal(await store.getBalance('t_a'), 6);

        const failed = await store.updateJob(
          'video_1',
          { state: 'failed', error, nextCheckAt: null },
          { expectVersion: 1, ledger: refund },
        );
        assert.equal(failed.version, 2);
        assert.deepEqual(failed.error, error);
        assert.equal(await store.getBalance('t_a'), 10);

        // A second worker redoing the same step must not fail nor refund twice.
        const again = await store.updateJob(
          'video_1',
          { providerStatus: 'failed' },
          { expectVersion: 2, ledger: refund },
        );
        assert.equal(again.version, 3);
        assert.equal(again.providerStatus, 'failed');
        assert.deepEqual((await store.getJob('video_1'))?.error, error);
        assert.equal(await store.getBalance('t_a'), 10);
        const refunds = (await allEntries(store, 't_a')).filter((entry) => entry.kind === 'refund');
        assert.equal(refunds.length, 1);
        await assertBalanced(store, 't_a');
      });

      test('claimJob leases exclusively until expiry, never an ended job', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 10));
        const job = makeJob('video_1', 't_a');
        await store.createJob(job, chargeFor(job));

        const claimed = await store.claimJob('video_1', { owner: 'w1', leaseMs: 1000, now: T0 });
        assert.deepEqual(claimed, { ...job, leaseOwner: 'w1', leaseUntil: T0 + 1000, version: 2 });
        assert.equal(
          await store.claimJob('video_1', { owner: 'w2', leaseMs: 1000, now: T0 + 999 }),
          null,
        );
        assert.equal((await store.getJob('video_1'))?.leaseOwner, 'w1');

        const renewed = await store.claimJob('video_1', {
          owner: 'w1',
          leaseMs: 1000,
          now: T0 + 500,
        });
        assert.equal(renewed?.leaseUntil, T0 + 1500);
        assert.equal(renewed?.version, 3);
        assert.equal(
          await store.claimJob('video_1', { owner: 'w2', leaseMs: 1000, now: T0 + 1499 }),
          null,
        );

        const takenOver = await store.claimJob('video_1', {
          owner: 'w2',
          leaseMs: 1000,
          now: T0 + 1500,
        });
        assert.equal(takenOver?.leaseOwner, 'w2');
        assert.equal(takenOver?.leaseUntil, T0 + 2500);
        assert.equal(takenOver?.version, 4);

        await store.updateJob(
          'video_1',
          { state: 'completed', nextCheckAt: null },
          { expectVersion: 4 },
        );
        assert.equal(
          await store.claimJob('video_1', { owner: 'w2', leaseMs: 1000, now: T0 + 1600 }),
          null,
        );
        assert.equal(
          await store.claimJob('video_1', { owner: 'w3', leaseMs: 1000, now: T0 + 9000 }),
          null,
        );

        const failed = makeJob('video_2', 't_a', { state: 'failed' });
        await store.createJob(failed, chargeFor(failed));
        assert.equal(
          await store.claimJob('video_2', { owner: 'w1', leaseMs: 1000, now: T0 }),
          null,
        );
        assert.equal(
          await store.claimJob('video_missing', { owner: 'w1', leaseMs: 1000, now: T0 }),
          null,
        );
        assert.equal((await store.getJob('video_2'))?.version, 1);
      });

      test('listDueJobs returns unfinished due jobs, soonest first', async ({ store }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.createTenant(makeTenant('t_b'));
        await store.post(makeEntry('ga', 't_a', 100));
        await store.post(makeEntry('gb', 't_b', 100));
        const jobs = [
          makeJob('video_late', 't_a', { nextCheckAt: T0 + 300 }),
          makeJob('video_first', 't_b', { nextCheckAt: T0 + 100, state: 'in_progress' }),
          makeJob('video_now', 't_a', { nextCheckAt: T0 + 500 }),
          makeJob('video_future', 't_a', { nextCheckAt: T0 + 501 }),
          makeJob('video_parked', 't_a', { nextCheckAt: null }),
          makeJob('video_done', 't_a', { nextCheckAt: T0, state: 'completed' }),
          makeJob('video_dead', 't_b', { nextCheckAt: T0, state: 'failed' }),
        ];
        for (const job of jobs) await store.createJob(job, chargeFor(job));

        const due = await store.listDueJobs({ now: T0 + 500, limit: 10 });
        assert.deepEqual(
          due.map((job) => job.jobId),
          ['video_first', 'video_late', 'video_now'],
        );
        assert.deepEqual(due[0], jobs[1]);
        const firstTwo = await store.listDueJobs({ now: T0 + 500, limit: 2 });
        assert.deepEqual(
          firstTwo.map((job) => job.jobId),
          ['video_first', 'video_late'],
        );
        assert.deepEqual(await store.listDueJobs({ now: T0 + 99, limit: 10 }), []);
      });

      test('countUnfinishedJobs counts queued and in-progress jobs by state', async ({ store }) => {
        assert.deepEqual(await store.countUnfinishedJobs(), { queued: 0, in_progress: 0 });
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('ga', 't_a', 100));
        const jobs = [
          ...Array.from({ length: 7 }, (_, index) =>
            makeJob(`video_q${index}`, 't_a', { nextCheckAt: T0 + index * 1_000_000 }),
          ),
          makeJob('video_p1', 't_a', { state: 'in_progress' }),
          makeJob('video_p2', 't_a', { state: 'in_progress', nextCheckAt: T0 - 5 }),
          makeJob('video_done', 't_a', { nextCheckAt: null, state: 'completed' }),
          makeJob('video_dead', 't_a', { nextCheckAt: null, state: 'failed' }),
        ];
        for (const job of jobs) await store.createJob(job, chargeFor(job));
        assert.deepEqual(await store.countUnfinishedJobs(), { queued: 7, in_progress: 2 });
        await store.updateJob(
          'video_p1',
          { state: 'completed', nextCheckAt: null },
          { expectVersion: 1 },
        );
        await store.updateJob('video_q0', { state: 'in_progress' }, { expectVersion: 1 });
        assert.deepEqual(await store.countUnfinishedJobs(), { queued: 6, in_progress: 2 });
      });

      test('deleteJob removes the job at the expected version and keeps its ledger', async ({
        store,
      }) => {
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('ga', 't_a', 10));
        const jobs = [
          makeJob('video_1', 't_a', { state: 'completed', nextCheckAt: null }),
          makeJob('video_2', 't_a', { createdAt: T0 + 1 }),
        ];
        for (const job of jobs) await store.createJob(job, chargeFor(job));

        await rejectsWith(store.deleteJob('video_1', { expectVersion: 2 }), 'version_conflict');
        assert.ok(await store.getJob('video_1'));
        await store.deleteJob('video_1', { expectVersion: 1 });
        assert.equal(await store.getJob('video_1'), null);
        assert.deepEqual(
          (await store.listJobs({ tenantId: 't_a', limit: 10, order: 'asc' })).items.map(
            (job) => job.jobId,
          ),
          ['video_2'],
        );
        await rejectsWith(store.deleteJob('video_1', { expectVersion: 1 }), 'not_found');
        await rejectsWith(store.deleteJob('video_missing', { expectVersion: 1 }), 'not_found');
        assert.equal(await store.getBalance('t_a'), 8);
        assert.deepEqual(
          (await allEntries(store, 't_a')).map((entry) => entry.entryId),
          ['ga', 'charge:video_1', 'charge:video_2'],
        );
        await assertBalanced(store, 't_a');
      });
    });

    describe('limits', () => {
      const ample = { period: '2026-01', limit: 1_000_000 };
      const lavish = { ratePerSecond: 1_000_000, burst: 1_000_000 };

      test('GCRA allows a burst, then denies with retryAfterMs until time passes', async ({
        store,
      }) => {
        const params = { ratePerSecond: 10, burst: 5 };
        const rate = async (bucket: string, now: number) =>
          (await store.consumeLimits(bucket, { rate: params, quota: ample }, now)).rate;
        const remaining: number[] = [];
        for (let index = 0; index < 5; index += 1) {
          const decision = await rate('k_1', T0);
          assert.equal(decision.allowed, true);
          assert.equal(decision.limit, 5);
          assert.equal(decision.retryAfterMs, 0);
          remaining.push(decision.remaining);
        }
        assert.deepEqual(remaining, [4, 3, 2, 1, 0]);

        const denied = await store.consumeLimits('k_1', { rate: params, quota: ample }, T0);
        assert.equal(denied.rate.allowed, false);
        assert.equal(denied.rate.remaining, 0);
        assert.equal(denied.rate.retryAfterMs, 100);
        assert.ok(denied.rate.resetMs > 0);
        assert.equal(denied.quota, null, 'a request the rate refuses is not counted');
        assert.equal(await store.getQuotaUsage('k_1', ample.period), 5);
        // A denial consumes nothing: at T0+99 it is still 1 ms short, not pushed further.
        const stillDenied = await rate('k_1', T0 + 99);
        assert.equal(stillDenied.allowed, false);
        assert.equal(stillDenied.retryAfterMs, 1);

        assert.equal((await rate('k_2', T0)).allowed, true, 'buckets leak');

        assert.equal((await rate('k_1', T0 + 100)).allowed, true);
        assert.equal((await rate('k_1', T0 + 100)).allowed, false);

        const idle = T0 + 60_000;
        let allowed = 0;
        for (let index = 0; index < 8; index += 1) {
          if ((await rate('k_1', idle)).allowed) allowed += 1;
        }
        assert.equal(allowed, 5, 'an idle bucket refills to exactly the burst');
      });

      test('quota counts up to the limit per period', async ({ store }) => {
        const quota = async (bucket: string, options: { period: string; limit: number }) => {
          const decision = await store.consumeLimits(bucket, { rate: lavish, quota: options }, T0);
          assert.equal(decision.rate.allowed, true);
          return decision.quota;
        };
        const options = { period: '2026-01', limit: 3 };
        const used: number[] = [];
        for (let index = 0; index < 3; index += 1) {
          const decision = await quota('k_1', options);
          assert.equal(decision?.allowed, true);
          assert.equal(decision?.limit, 3);
          assert.equal(decision?.remaining, 3 - (decision?.used ?? 0));
          used.push(decision?.used ?? 0);
        }
        assert.deepEqual(used, [1, 2, 3]);
        const denied = await quota('k_1', options);
        assert.deepEqual(denied, { allowed: false, limit: 3, used: 3, remaining: 0 });
        assert.equal(await store.getQuotaUsage('k_1', '2026-01'), 3);

        const nextMonth = await quota('k_1', { period: '2026-02', limit: 3 });
        assert.deepEqual(nextMonth, { allowed: true, limit: 3, used: 1, remaining: 2 });
        assert.equal(await store.getQuotaUsage('k_2', '2026-01'), 0);
        const raised = await quota('k_1', { period: '2026-01', limit: 4 });
        assert.deepEqual(raised, { allowed: true, limit: 4, used: 4, remaining: 0 });
      });

      test('purgeExpired keeps every record that still counts', async ({ store }) => {
        const limits = {
          rate: { ratePerSecond: 1, burst: 1 },
          quota: { period: '2026-01', limit: 10 },
        };
        assert.equal((await store.consumeLimits('k_live', limits, T0)).rate.allowed, true);
        const live = { scope: 't_a', key: 'live' };
        await store.beginIdempotent(live, { requestHash: 'h', now: T0, ttlMs: 60_000 });
        const response = { statusCode: 200, body: { ok: true } };
        await store.completeIdempotent(live, response);
        const stale = { scope: 't_a', key: 'stale' };
        await store.beginIdempotent(stale, { requestHash: 'h', now: T0 - 120_000, ttlMs: 1_000 });

        assert.ok((await store.purgeExpired(T0 + 500)) >= 0);
        assert.equal(
          (await store.consumeLimits('k_live', limits, T0 + 500)).rate.allowed,
          false,
          'a bucket still draining keeps limiting',
        );
        assert.equal(await store.getQuotaUsage('k_live', '2026-01'), 1);
        assert.deepEqual(
          await store.beginIdempotent(live, { requestHash: 'h', now: T0 + 500, ttlMs: 60_000 }),
          { outcome: 'replay', response },
        );
        assert.deepEqual(
          await store.beginIdempotent(stale, { requestHash: 'other', now: T0 + 500, ttlMs: 1_000 }),
          { outcome: 'started' },
        );
      });

      test('a request the quota refuses still uses its rate slot', async ({ store }) => {
        const limits = { rate: { ratePerSecond: 1, burst: 2 }, quota: { period: 'p', limit: 1 } };
        const first = await store.consumeLimits('k_q', limits, T0);
        assert.equal(first.quota?.allowed, true);
        const second = await store.consumeLimits('k_q', limits, T0);
        assert.equal(second.rate.allowed, true);
        assert.equal(second.quota?.allowed, false);
        const third = await store.consumeLimits('k_q', limits, T0);
        assert.equal(third.rate.allowed, false, 'the burst of 2 was used by both requests');
        assert.equal(third.quota, null);
        assert.equal(await store.getQuotaUsage('k_q', 'p'), 1);
      });
    });

    describe('idempotency', () => {
      const ref = { scope: 't_a', key: 'idem-1' };
      const ttl = { ttlMs: 60_000 };

      test('started, in_progress, conflict, then replay', async ({ store }) => {
        const begin = (requestHash: string, now = T0) =>
          store.beginIdempotent(ref, { requestHash, now, ...ttl });
        assert.deepEqual(await begin('h1'), { outcome: 'started' });
        assert.deepEqual(await begin('h1', T0 + 1), { outcome: 'in_progress' });
        assert.deepEqual(await begin('h2', T0 + 1), { outcome: 'conflict' });

        const response = { statusCode: 201, body: { id: 'video_1', status: 'queued', n: [1, 2] } };
        await store.completeIdempotent(ref, response);
        assert.deepEqual(await begin('h1', T0 + 2), { outcome: 'replay', response });
        assert.deepEqual(await begin('h1', T0 + 3), { outcome: 'replay', response });
        assert.deepEqual(await begin('h2', T0 + 3), { outcome: 'conflict' });

        const otherScope = { scope: 't_b', key: 'idem-1' };
        assert.deepEqual(
          await store.beginIdempotent(otherScope, { requestHash: 'h2', now: T0, ...ttl }),
          { outcome: 'started' },
        );
      });

      test('abandon frees a reservation but never a stored response', async ({ store }) => {
        await store.beginIdempotent(ref, { requestHash: 'h1', now: T0, ...ttl });
        await store.abandonIdempotent(ref);
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h2', now: T0 + 1, ...ttl }),
          { outcome: 'started' },
        );
        const response = { statusCode: 200, body: 'ok' };
        await store.completeIdempotent(ref, response);
        await store.abandonIdempotent(ref);
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h2', now: T0 + 2, ...ttl }),
          { outcome: 'replay', response },
        );
      });

      test('expired records count as absent', async ({ store }) => {
        await store.beginIdempotent(ref, { requestHash: 'h1', now: T0, ttlMs: 1000 });
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h1', now: T0 + 999, ttlMs: 1000 }),
          { outcome: 'in_progress' },
        );
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h2', now: T0 + 1000, ttlMs: 1000 }),
          { outcome: 'started' },
        );
        await store.completeIdempotent(ref, { statusCode: 200, body: { a: 1 } });
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h2', now: T0 + 1999, ttlMs: 1000 }),
          { outcome: 'replay', response: { statusCode: 200, body: { a: 1 } } },
        );
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h1', now: T0 + 2000, ttlMs: 1000 }),
          { outcome: 'started' },
        );
        assert.deepEqual(
          await store.beginIdempotent(ref, { requestHash: 'h1', now: T0 + 2001, ttlMs: 1000 }),
          { outcome: 'in_progress' },
        );
      });
    });

    describe('audit log', () => {
      const entry = (auditId: string, tenantId: string, at: number): AuditEntry => ({
        auditId,
        at,
        actor: 'cli:alice',
        action: 'credits.added',
        tenantId,
        target: `entry_${auditId}`,
        details: { amount: 5, reason: 'goodwill', nested: { ok: true } },
      });

      test('lists newest first, by tenant or across tenants, up to the limit', async ({
        store,
      }) => {
        await store.appendAudit(entry('a_1', 't_1', T0 + 1));
        await store.appendAudit(entry('a_2', 't_2', T0 + 2));
        await store.appendAudit(entry('a_3', 't_1', T0 + 3));
        await store.appendAudit(entry('a_4', 't_1', T0 + 4));
        assert.deepEqual(await store.listAudit({ tenantId: 't_1', limit: 10 }), [
          entry('a_4', 't_1', T0 + 4),
          entry('a_3', 't_1', T0 + 3),
          entry('a_1', 't_1', T0 + 1),
        ]);
        const recent = await store.listAudit({ limit: 3 });
        assert.deepEqual(
          recent.map((e) => e.auditId),
          ['a_4', 'a_3', 'a_2'],
        );
        assert.deepEqual(
          (await store.listAudit({ tenantId: 't_1', limit: 2 })).map((e) => e.auditId),
          ['a_4', 'a_3'],
        );
        assert.deepEqual(await store.listAudit({ tenantId: 't_none', limit: 5 }), []);
        await rejectsWith(store.listAudit({ limit: 0 }), 'validation_error');
      });
    });

    describe('concurrency', () => {
      /** The main store plus, when the adapter offers it, two more connections. */
      async function connections(harness: StoreHarness): Promise<Store[]> {
        if (!harness.second) return [harness.store];
        return [harness.store, await harness.second(), await harness.second()];
      }

      test('another connection sees committed writes', async (harness) => {
        if (!harness.second) return;
        const other = await harness.second();
        await harness.store.createTenant(makeTenant('t_a'));
        await other.post(makeEntry('g1', 't_a', 5));
        assert.equal(await harness.store.getBalance('t_a'), 5);
        assert.deepEqual(await other.getTenant('t_a'), makeTenant('t_a'));
      });

      test('300 parallel createJob on 50 credits: exactly 50 succeed', async (harness) => {
        const { store } = harness;
        const stores = await connections(harness);
        await store.createTenant(makeTenant('t_a'));
        await store.post(makeEntry('g1', 't_a', 50));

        const results = await Promise.allSettled(
          Array.from({ length: 300 }, (_, index) => {
            const job = makeJob(`video_${String(index).padStart(3, '0')}`, 't_a', {
              createdAt: T0 + index,
            });
            return (stores[index % stores.length] as Store).createJob(job, chargeFor(job));
          }),
        );
        const succeeded = results.filter((result) => result.status === 'fulfilled');
        const failed = results.filter((result) => result.status === 'rejected');
        assert.equal(succeeded.length, 50);
        assert.equal(failed.length, 250);
        for (const result of failed) assert.ok(isAppError(result.reason, 'insufficient_credits'));

        assert.equal(await store.getBalance('t_a'), 0);
        await assertBalanced(store, 't_a');
        assert.equal((await allEntries(store, 't_a')).length, 51);
        const listed = await collect(100, (after) =>
          store.listJobs({ tenantId: 't_a', after, limit: 100, order: 'asc' }),
        );
        assert.equal(listed.items.length, 50);
      });

      test('100 parallel posts of one refund id apply once', async (harness) => {
        const stores = await connections(harness);
        await harness.store.createTenant(makeTenant('t_a'));
        const refund = makeEntry('refund:video_1', 't_a', 3, { kind: 'refund' });
        const results = await Promise.all(
          Array.from({ length: 100 }, (_, index) =>
            (stores[index % stores.length] as Store).post(refund),
          ),
        );
        assert.equal(results.filter((result) => result.applied).length, 1);
        assert.equal(await harness.store.getBalance('t_a'), 3);
        await assertBalanced(harness.store, 't_a');
      });

      test('50 parallel claims by different owners: exactly one wins', async (harness) => {
        const stores = await connections(harness);
        await harness.store.createTenant(makeTenant('t_a'));
        await harness.store.post(makeEntry('g1', 't_a', 1));
        const job = makeJob('video_1', 't_a');
        await harness.store.createJob(job, chargeFor(job));
        const claims = await Promise.all(
          Array.from({ length: 50 }, (_, index) =>
            (stores[index % stores.length] as Store).claimJob('video_1', {
              owner: `w${index}`,
              leaseMs: 30_000,
              now: T0,
            }),
          ),
        );
        const winners = claims.filter((claim) => claim !== null);
        assert.equal(winners.length, 1);
        assert.equal((await harness.store.getJob('video_1'))?.leaseOwner, winners[0]?.leaseOwner);
      });

      test('200 parallel requests at one instant: exactly the burst passes', async (harness) => {
        const stores = await connections(harness);
        const limits = {
          rate: { ratePerSecond: 1, burst: 20 },
          quota: { period: '2026-01', limit: 1_000 },
        };
        const decisions = await Promise.all(
          Array.from({ length: 200 }, (_, index) =>
            (stores[index % stores.length] as Store).consumeLimits('k_hot', limits, T0),
          ),
        );
        assert.equal(decisions.filter((decision) => decision.rate.allowed).length, 20);
        for (const decision of decisions.filter((d) => !d.rate.allowed)) {
          assert.ok(decision.rate.retryAfterMs > 0);
          assert.equal(decision.quota, null);
        }
        assert.equal(await harness.store.getQuotaUsage('k_hot', '2026-01'), 20);
      });

      test('parallel quota consumption never exceeds the limit', async (harness) => {
        const stores = await connections(harness);
        const limits = {
          rate: { ratePerSecond: 1_000, burst: 1_000 },
          quota: { period: '2026-01', limit: 40 },
        };
        const decisions = await Promise.all(
          Array.from({ length: 120 }, (_, index) =>
            (stores[index % stores.length] as Store).consumeLimits('k_1', limits, T0),
          ),
        );
        assert.equal(decisions.filter((decision) => decision.quota?.allowed).length, 40);
        assert.equal(decisions.filter((decision) => decision.quota?.allowed === false).length, 80);
        assert.equal(await harness.store.getQuotaUsage('k_1', '2026-01'), 40);
      });
    });
  });
}
