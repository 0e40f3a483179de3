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
import type { Store } from '../../src/core/ports.ts';
import { schemaVersion } from '../../src/stores/sqlite/migrations.ts';
import { createSqliteStore, type SqliteStore } from '../../src/stores/sqlite/sqlite-store.ts';
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
});
