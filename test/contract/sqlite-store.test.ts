import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import type { ApiKey, Store } from '../../src/core/ports.ts';
import { schemaVersion } from '../../src/stores/sqlite/migrations.ts';
import { createSqliteStore, type SqliteStore } from '../../src/stores/sqlite/sqlite-store.ts';
import { chargeFor, makeJob } from '../support/fixtures.ts';
import { runStoreContract } from './store-contract.ts';

const projectRoot = fileURLToPath(new URL('../../', import.meta.url));
const workerScript = fileURLToPath(new URL('./fixtures/create-jobs-worker.ts', import.meta.url));

async function tempDbPath(): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'reelpostly-sqlite-'));
  return { path: join(dir, 'store.db'), remove: () => rm(dir, { recursive: true, force: true }) };
}

runStoreContract('SqliteStore', async () => {
  const { path, remove } = await tempDbPath();
  const opened: Store[] = [createSqliteStore({ path })];
  return {
    store: opened[0] as Store,
    second: async () => {
      const store = createSqliteStore({ path });
      opened.push(store);
      return store;
    },
    cleanup: async () => {
      for (const store of opened) await store.close();
      await remove();
    },
  };
});

describe('SqliteStore specifics', () => {
  let path: string;
  let remove: () => Promise<void>;
  let store: SqliteStore;

  before(async () => {
    ({ path, remove } = await tempDbPath());
    store = createSqliteStore({ path });
  });

  after(async () => {
    await store.close();
    await remove();
  });

  it('records the schema version and WAL mode in the file', () => {
    const raw = new Database(path, { readonly: true });
    try {
      assert.equal(raw.pragma('user_version', { simple: true }), schemaVersion);
      assert.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      raw.close();
    }
  });

  it('refuses edits to ledger entries at the database level', async () => {
    await store.createTenant({
      tenantId: 't_ledger',
      email: 'l@example.com',
      planId: 'starter',
      status: 'active',
      createdAt: 0,
    });
    await store.post({
      entryId: 'g1',
      tenantId: 't_ledger',
      kind: 'grant',
      amount: 5,
      reason: 'test',
      jobId: null,
      createdAt: 0,
    });
    const raw = new Database(path);
    try {
      assert.throws(
        () => raw.prepare('UPDATE ledger_entries SET amount = 500').run(),
        /append-only/,
      );
      assert.throws(() => raw.prepare('DELETE FROM ledger_entries').run(), /append-only/);
    } finally {
      raw.close();
    }
    assert.equal(await store.getBalance('t_ledger'), 5);
  });

  it('works on an in-memory database', async () => {
    const memory = createSqliteStore({ path: ':memory:' });
    try {
      await memory.ping();
      assert.equal(await memory.getBalance('t_none'), 0);
    } finally {
      await memory.close();
    }
  });

  it('4 processes racing 300 createJob on 50 credits create exactly 50 jobs', async () => {
    const tenantId = 't_race';
    await store.createTenant({
      tenantId,
      email: 'race@example.com',
      planId: 'starter',
      status: 'active',
      createdAt: 0,
    });
    await store.post({
      entryId: 'grant:race',
      tenantId,
      kind: 'grant',
      amount: 50,
      reason: 'test',
      jobId: null,
      createdAt: 0,
    });

    const workers = Array.from({ length: 4 }, (_, index) => {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', workerScript, path, tenantId, String(index), '75'],
        { cwd: projectRoot, stdio: ['pipe', 'pipe', 'inherit'] },
      );
      const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
      const exited = once(child, 'exit');
      return { child, lines, exited };
    });
    try {
      // Barrier: every worker has opened the file before any starts writing.
      for (const worker of workers) {
        assert.equal((await worker.lines.next()).value, 'ready');
      }
      for (const worker of workers) worker.child.stdin.write('go\n');

      const tallies: { created: number; refused: number }[] = [];
      for (const worker of workers) {
        tallies.push(JSON.parse((await worker.lines.next()).value));
        assert.deepEqual(await worker.exited, [0, null]);
      }
      assert.equal(
        tallies.reduce((sum, tally) => sum + tally.created, 0),
        50,
      );
      assert.equal(
        tallies.reduce((sum, tally) => sum + tally.refused, 0),
        250,
      );
    } finally {
      for (const worker of workers) if (worker.child.exitCode === null) worker.child.kill();
    }

    const jobs = await store.listJobs({ tenantId, limit: 1000, order: 'asc' });
    assert.equal(jobs.items.length, 50);
    assert.equal(jobs.next, null);
    assert.equal(await store.getBalance(tenantId), 0);
    const entries = await store.listEntries(tenantId, { limit: 1000 });
    assert.equal(entries.items.length, 51);
    assert.equal(
      entries.items.reduce((sum, entry) => sum + entry.amount, 0),
      0,
    );
    const charged = new Set(entries.items.map((entry) => entry.jobId).filter((id) => id !== null));
    assert.deepEqual(charged, new Set(jobs.items.map((job) => job.jobId)));
  });

  it('purgeExpired deletes expired idempotency records, refilled buckets and old months', async () => {
    const own = await tempDbPath();
    const purging = createSqliteStore({ path: own.path });
    const now = Date.UTC(2026, 11, 4, 12);
    try {
      for (let index = 0; index < 1_200; index += 1) {
        await purging.beginIdempotent(
          { scope: 't_p', key: `old-${index}` },
          { requestHash: 'h', now: now - 10_000, ttlMs: 1_000 },
        );
      }
      await purging.beginIdempotent(
        { scope: 't_p', key: 'live' },
        { requestHash: 'h', now, ttlMs: 60_000 },
      );
      const limits = (period: string) => ({
        rate: { ratePerSecond: 1, burst: 5 },
        quota: { period, limit: 10 },
      });
      await purging.consumeLimits('idle', limits('2026-10'), now - 60_000);
      await purging.consumeLimits('busy', limits('2026-11'), now);
      await purging.consumeLimits('busy', limits('2026-12'), now);

      assert.equal(await purging.purgeExpired(now), 1_200 + 1 + 1);
      const raw = new Database(own.path, { readonly: true });
      try {
        const rows = (sql: string) => raw.prepare(sql).pluck().all();
        assert.deepEqual(rows('SELECT key FROM idempotency_records'), ['live']);
        assert.deepEqual(rows('SELECT bucket FROM rate_buckets'), ['busy']);
        assert.deepEqual(rows('SELECT period FROM quota_counters ORDER BY period'), [
          '2026-11',
          '2026-12',
        ]);
      } finally {
        raw.close();
      }
      assert.equal(await purging.purgeExpired(now), 0);
    } finally {
      await purging.close();
      await own.remove();
    }
  });

  it('decides a turn of mixed limit requests exactly as one at a time', async () => {
    // Interleaved buckets, periods and plans, some refused by the rate, some by the quota.
    const requests = Array.from({ length: 120 }, (_, index) => ({
      bucket: `k${index % 3}`,
      limits: {
        rate: { ratePerSecond: 10, burst: 5 + (index % 3) * 10 },
        quota: { period: index % 5 === 0 ? '2026-11' : '2026-12', limit: 18 },
      },
      now: 1_000_000 + index * 7,
    }));
    const run = (prefix: string, request: (typeof requests)[number]) =>
      store.consumeLimits(`${prefix}${request.bucket}`, request.limits, request.now);
    const oneByOne = [];
    for (const request of requests) oneByOne.push(await run('seq-', request));
    const together = await Promise.all(requests.map((request) => run('turn-', request)));
    assert.deepEqual(together, oneByOne);
    assert.ok(oneByOne.some((decision) => decision.quota === null));
    assert.ok(oneByOne.some((decision) => decision.quota?.allowed === false));
    for (const bucket of ['k0', 'k1', 'k2']) {
      for (const period of ['2026-11', '2026-12']) {
        assert.equal(
          await store.getQuotaUsage(`turn-${bucket}`, period),
          await store.getQuotaUsage(`seq-${bucket}`, period),
        );
      }
    }
  });

  describe('row cache (keys, tenants, jobs read on every request)', () => {
    const tenant = (tenantId: string) => ({
      tenantId,
      email: `${tenantId}@example.com`,
      planId: 'starter',
      status: 'active' as const,
      createdAt: 0,
    });
    const apiKey = (keyId: string, tenantId: string): ApiKey => ({
      keyId,
      tenantId,
      name: 'k',
      prefix: 'rp_live_abc',
      hash: `hash-${keyId}`,
      createdAt: 0,
      lastUsedAt: null,
      expiresAt: null,
      revokedAt: null,
    });

    it('sees another connection of this process change cached rows on the next read', async () => {
      await store.createTenant(tenant('t_cache'));
      await store.createKey(apiKey('key_cache', 't_cache'));
      const job = makeJob('video_cache', 't_cache');
      await store.post({
        entryId: 'grant:cache',
        tenantId: 't_cache',
        kind: 'grant',
        amount: 5,
        reason: 'test',
        jobId: null,
        createdAt: 0,
      });
      await store.createJob(job, chargeFor(job));
      // Cached by the first reads.
      assert.equal((await store.findKeyByHash('hash-key_cache'))?.revokedAt, null);
      assert.equal((await store.getTenant('t_cache'))?.status, 'active');
      assert.equal((await store.getJob('video_cache'))?.state, 'queued');

      const other = createSqliteStore({ path });
      try {
        await other.revokeKey('key_cache', 123);
        await other.updateTenant('t_cache', { status: 'suspended' });
        await other.updateJob('video_cache', { state: 'in_progress' }, { expectVersion: 1 });
      } finally {
        await other.close();
      }
      assert.equal((await store.findKeyByHash('hash-key_cache'))?.revokedAt, 123);
      assert.equal((await store.getTenant('t_cache'))?.status, 'suspended');
      assert.equal((await store.getJob('video_cache'))?.state, 'in_progress');
    });

    it("sees another process's commit once it has ended", async () => {
      await store.createTenant(tenant('t_cache_proc'));
      assert.equal((await store.getTenant('t_cache_proc'))?.status, 'active');
      const child = spawn(
        process.execPath,
        [
          '-e',
          `const db = new (require('better-sqlite3'))(process.argv[1]);
           db.pragma('busy_timeout = 5000');
           db.prepare("UPDATE tenants SET status = 'suspended' WHERE tenant_id = 't_cache_proc'").run();
           db.close();`,
          path,
        ],
        { cwd: projectRoot, stdio: 'inherit' },
      );
      assert.deepEqual(await once(child, 'exit'), [0, null]);
      assert.equal((await store.getTenant('t_cache_proc'))?.status, 'suspended');
    });

    it("evicts on this connection's own writes, whichever statement makes them", async () => {
      await store.createTenant(tenant('t_cache_own'));
      await store.createKey(apiKey('key_cache_own', 't_cache_own'));
      assert.equal((await store.findKeyByHash('hash-key_cache_own'))?.lastUsedAt, null);
      await store.touchKey('key_cache_own', 456);
      assert.equal((await store.findKeyByHash('hash-key_cache_own'))?.lastUsedAt, 456);
      await store.updateTenant('t_cache_own', { planId: 'pro' });
      assert.equal((await store.getTenant('t_cache_own'))?.planId, 'pro');
    });

    it('hands out frozen rows, so no caller can change what the next one reads', async () => {
      await store.createTenant(tenant('t_cache_frozen'));
      const row = (await store.getTenant('t_cache_frozen')) as { status: string };
      assert.throws(() => {
        row.status = 'cancelled';
      }, TypeError);
      assert.equal((await store.getTenant('t_cache_frozen'))?.status, 'active');
    });

    it('counts limits requested just before close', async () => {
      const own = await tempDbPath();
      const closing = createSqliteStore({ path: own.path });
      const limits = { rate: { ratePerSecond: 10, burst: 10 }, quota: { period: 'p', limit: 10 } };
      const pending = [1, 2, 3].map(() => closing.consumeLimits('k_close', limits, 0));
      await closing.close();
      assert.deepEqual(
        (await Promise.all(pending)).map((decision) => decision.quota?.used),
        [1, 2, 3],
      );
      const reopened = createSqliteStore({ path: own.path });
      try {
        assert.equal(await reopened.getQuotaUsage('k_close', 'p'), 3);
      } finally {
        await reopened.close();
        await own.remove();
      }
    });
  });
});
