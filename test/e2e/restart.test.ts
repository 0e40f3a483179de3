import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { createSqliteStore } from '../../src/stores/sqlite/sqlite-store.ts';
import { startChildGateway } from '../support/child-gateway.ts';
import { api, eventually, freePort } from '../support/gateway.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

describe('a gateway killed mid-job', () => {
  let dataDir = '';
  const children: ChildProcess[] = [];
  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('resumes after restart: the video is stored once and charged once', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-restart-'));
    const port = await freePort();
    const env = {
      PORT: String(port),
      HOST: '127.0.0.1',
      REELPOSTLY_DATA_DIR: dataDir,
      REELPOSTLY_SIMULATED_SECONDS: '6',
      REELPOSTLY_POLL_INTERVAL_MS: '100',
      REELPOSTLY_WORKER_INTERVAL_MS: '50',
      REELPOSTLY_LEASE_MS: '500',
    };
    const baseUrl = `http://127.0.0.1:${port}`;

    const first = await startChildGateway(env);
    children.push(first.child);
    const apiKey = await eventually(
      async () => /API key: (rp_live_\w+)/.exec(first.output())?.[1],
      {
        timeoutMs: 30_000,
      },
    );
    assert.match(first.output(), /curl -X POST "http:\/\/localhost:\d+\/video\/generate"/);

    const created = await api(baseUrl, '/video/generate', {
      key: apiKey,
      body: {
        prompt: 'Tea farms at sunrise, cinematic',
        model: 'sora-2',
        seconds: 8,
        size: '1280x720',
      },
    });
    assert.equal(created.status, 200);
    assert.equal(created.body.credits_remaining, 99);
    const id = created.body.video_id;
    // Mid-job: accepted upstream, not finished (a slow machine may still see it queued).
    const midJob = await api(baseUrl, `/video/status/${id}`, { key: apiKey });
    assert.ok(['queued', 'processing'].includes(midJob.body.status), midJob.body.status);

    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null);

    const second = await startChildGateway(env);
    children.push(second.child);
    assert.match(second.output(), /already exists/);
    assert.doesNotMatch(second.output(), /API key: rp_live_/);

    // Nobody polls: the restarted worker alone must finish the job.
    const store = createSqliteStore({ path: join(dataDir, 'reelpostly.db') });
    try {
      const job = await eventually(
        async () => {
          const j = await store.getJob(id);
          return j?.state === 'completed' ? j : null;
        },
        { timeoutMs: 20_000 },
      );
      assert.equal(job.progress, 100);
      const ledger = await store.listEntries(job.tenantId, { limit: 100 });
      assert.deepEqual(
        ledger.items.map((e) => [e.kind, e.amount]),
        [
          ['grant', 100],
          ['charge', -1],
        ],
      );
      assert.equal(await store.getBalance(job.tenantId), 99);
      const dir = join(dataDir, 'blobs', 'videos', job.tenantId, id);
      const files = (await readdir(dir)).filter((f) => !f.startsWith('.'));
      assert.deepEqual(files.sort(), ['spritesheet.jpg', 'thumbnail.webp', 'video.mp4']);
    } finally {
      await store.close();
    }

    const done = await api(baseUrl, `/video/status/${id}`, { key: apiKey });
    assert.equal(done.body.status, 'completed');
    const bytes = Buffer.from(await (await fetch(done.body.url)).arrayBuffer());
    assert.ok(bytes.equals(await readFile(join(ROOT, 'assets', 'landscape.mp4'))));

    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });
});
