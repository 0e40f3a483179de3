/**
 * Faults injected for real against the job pipeline: a gateway process killed
 * mid-download, an upstream (the OpenAI `/v1/videos` emulator, through the real adapter)
 * whose status calls fail or hang, whose jobs never end, whose assets expire or arrive
 * truncated; a blob directory that cannot be written; 50 status calls racing a
 * completion. Money is checked on the real ledger each time.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, it } from 'node:test';
import { loadConfig } from '../../src/config.ts';
import { blobKey } from '../../src/core/pipeline.ts';
import type { Job, Store } from '../../src/core/ports.ts';
import { OpenAICompatibleProvider } from '../../src/providers/openai/openai-provider.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import { createSqliteStore } from '../../src/stores/sqlite/sqlite-store.ts';
import { advanceJobs } from '../../src/worker/worker.ts';
import {
  type OpenAIVideosEmulator,
  startOpenAIVideosEmulator,
} from '../emulators/openai-videos-emulator.ts';
import {
  type ChildGateway,
  openAIGatewayEnv,
  startChildGateway,
} from '../support/child-gateway.ts';
import {
  api,
  eventually,
  freePort,
  ManualClock,
  startGateway,
  type TestGateway,
} from '../support/gateway.ts';

const UPSTREAM_KEY = 'sk-emulated-upstream';
const ASSET = join(defaultAssetsDir(), 'landscape.mp4');
const REQUEST = { prompt: 'Tea farms at sunrise', model: 'sora-2', seconds: 4, size: '1280x720' };

async function ledgerOf(store: Store, tenantId: string): Promise<Array<[string, number]>> {
  const page = await store.listEntries(tenantId, { limit: 100 });
  return page.items.map((e) => [e.kind, e.amount]);
}

/** Files in a job's blob folder, hidden ones (temp files, sidecars) included; [] when absent. */
async function blobFiles(dataDir: string, job: Pick<Job, 'tenantId' | 'jobId'>): Promise<string[]> {
  try {
    return (await readdir(join(dataDir, 'blobs', 'videos', job.tenantId, job.jobId))).sort();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
}

/**
 * A gateway on a manual clock (no background worker) whose `sora-2` goes to the
 * emulator through the real OpenAI adapter; the test drives the worker tick by tick.
 */
async function upstreamHarness(options: { env?: Record<string, string>; runMs?: number } = {}) {
  const clock = new ManualClock();
  const emulator = await startOpenAIVideosEmulator({
    apiKey: UPSTREAM_KEY,
    clock,
    queuedMs: 1_000,
    runMs: options.runMs ?? 4_000,
    assetsDir: defaultAssetsDir(),
  });
  const provider = new OpenAICompatibleProvider({
    apiKey: UPSTREAM_KEY,
    baseUrl: emulator.baseUrl,
    timeoutMs: 300,
  });
  const gateway = await startGateway({
    clock,
    providers: [provider],
    env: {
      REELPOSTLY_POLL_INTERVAL_MS: '1000',
      REELPOSTLY_MAX_BACKOFF_MS: '16000',
      REELPOSTLY_MAX_CHECK_FAILURES: '8',
      ...options.env,
    },
  });
  const tenant = await gateway.tenant({ plan: 'enterprise', credits: 10 });
  const { services } = gateway;
  return {
    clock,
    emulator,
    gateway,
    tenant,
    store: services.store,
    async generate(): Promise<Job> {
      return (await services.videos.generate({ ...tenant, ...REQUEST })).job;
    },
    /** Moves the clock `ms` in `step`s, running one worker tick after each. */
    async run(ms: number, step = 100): Promise<void> {
      for (let t = 0; t < ms; t += step) {
        clock.advance(step);
        await advanceJobs(services, { now: clock.now(), concurrency: 4, batchSize: 100 });
      }
    },
    async job(jobId: string): Promise<Job> {
      const job = await services.store.getJob(jobId);
      assert.ok(job);
      return job;
    },
    async close() {
      await gateway.close();
      await emulator.close();
    },
  };
}

type Harness = Awaited<ReturnType<typeof upstreamHarness>>;

describe('a gateway killed (SIGKILL) mid-download', () => {
  const children: ChildGateway[] = [];
  let dataDir = '';
  let emulator: OpenAIVideosEmulator | undefined;
  let storedJob: Job | undefined;
  after(async () => {
    for (const { child } of children) child.kill('SIGKILL');
    await emulator?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('stores the video once, charges once and completes after restart', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-sigkill-'));
    emulator = await startOpenAIVideosEmulator({
      apiKey: UPSTREAM_KEY,
      clock: { now: () => Date.now() },
      queuedMs: 100,
      runMs: 200,
      assetsDir: defaultAssetsDir(),
    });
    // ~350 KB in 8 KiB chunks 60 ms apart: about 2.6 s per download.
    emulator.faults.contentChunkBytes = 8 * 1024;
    emulator.faults.contentChunkDelayMs = 60;
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    const env = {
      ...(await openAIGatewayEnv({
        port,
        dataDir,
        upstreamUrl: emulator.baseUrl,
        upstreamKey: UPSTREAM_KEY,
      })),
      REELPOSTLY_LEASE_MS: '1000',
    };
    const first = await startChildGateway(env);
    children.push(first);
    const apiKey = await eventually(async () => /API key: (rp_live_\w+)/.exec(first.output())?.[1]);
    const created = await api(baseUrl, '/video/generate', { key: apiKey, body: REQUEST });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const id: string = created.body.video_id;

    const partial = await eventually(
      async () => emulator?.deliveries.find((d) => d.variant === 'video' && d.sentBytes > 0),
      { timeoutMs: 20_000, intervalMs: 10 },
    );
    first.child.kill('SIGKILL');
    assert.equal(await first.exited, null);
    const sentBeforeKill = partial.sentBytes;
    assert.ok(sentBeforeKill < partial.announcedBytes, 'killed before the download ended');
    assert.equal(partial.complete, false);
    emulator.faults.contentChunkDelayMs = 5;

    const restartedAt = Date.now();
    const second = await startChildGateway(env);
    children.push(second);
    const store = createSqliteStore({ path: join(dataDir, 'reelpostly.db') });
    try {
      const job = await eventually(
        async () => {
          const j = await store.getJob(id);
          return j?.state === 'completed' ? j : null;
        },
        { timeoutMs: 20_000 },
      );
      const takeoverMs = Date.now() - restartedAt;
      assert.deepEqual(await ledgerOf(store, job.tenantId), [
        ['grant', 100],
        ['charge', -1],
      ]);
      assert.equal(await store.getBalance(job.tenantId), 99);
      const stored = await readFile(join(dataDir, 'blobs', blobKey(job, 'video')));
      assert.ok(stored.equals(await readFile(ASSET)), 'stored bytes equal the upstream asset');
      const files = await blobFiles(dataDir, job);
      assert.deepEqual(
        files.filter((f) => !f.startsWith('.')),
        ['spritesheet.jpg', 'thumbnail.webp', 'video.mp4'],
      );
      storedJob = job;
      // One upstream job (the SDK never retries a create), the video fetched twice.
      assert.equal(emulator.creates().length, 1);
      const videoDeliveries = emulator.deliveries.filter((d) => d.variant === 'video');
      assert.equal(videoDeliveries.length, 2);
      assert.equal(videoDeliveries[1]?.complete, true);
      process.stdout.write(
        `# SIGKILL after ${sentBeforeKill}/${partial.announcedBytes} bytes; restarted process completed the job ${takeoverMs} ms after start\n`,
      );
    } finally {
      await store.close();
    }
    const done = await api(baseUrl, `/video/status/${id}`, { key: apiKey });
    assert.equal(done.body.status, 'completed');
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });

  it('leaves no temp file of the killed download behind', async () => {
    assert.ok(storedJob, 'the restart test ran');
    const files = await blobFiles(dataDir, storedJob);
    assert.deepEqual(
      files.filter((f) => f.startsWith('.tmp-')),
      [],
    );
  });
});

describe('upstream faults, through the real OpenAI adapter', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('failing status calls back off with jitter, per job, without a hot loop, then fail and refund', async () => {
    h = await upstreamHarness();
    const job = await h.generate();
    h.emulator.faults.statusFailures = Array.from({ length: 100 }, (_, i) => (i % 2 ? 503 : 500));
    const delays: number[] = [];
    // Ticks every 100 ms of clock time: a loop without backoff would check 1,800 times.
    for (let t = 0; t < 180_000; t += 100) {
      const before = await h.job(job.jobId);
      await h.run(100);
      const after = await h.job(job.jobId);
      if (after.checkFailures > before.checkFailures && after.nextCheckAt !== null) {
        delays.push(after.nextCheckAt - h.clock.now());
      }
    }
    const checks = h.emulator.statusChecks().length;
    process.stdout.write(
      `# 180 s of 100 ms ticks, upstream always 5xx: ${checks} status checks, delays ${delays.join(', ')} ms\n`,
    );
    const failed = await h.job(job.jobId);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error?.code, 'upstream_error');
    assert.equal(checks, 8, 'exactly maxCheckFailures checks, then it stops');
    // Each delay lies within +/-50% jitter of min(16 s, 1 s * 2^failures).
    delays.forEach((delay, i) => {
      const base = Math.min(16_000, 1000 * 2 ** (i + 1));
      assert.ok(delay >= base * 0.5 - 100 && delay <= base * 1.5, `delay ${i}: ${delay}`);
    });
    assert.ok((delays[2] ?? 0) > (delays[0] ?? 0), 'backoff grows');
    assert.deepEqual(await ledgerOf(h.store, job.tenantId), [
      ['grant', 10],
      ['charge', -1],
      ['refund', 1],
    ]);
    await h.run(10_000, 1000);
    assert.equal(h.emulator.statusChecks().length, 8, 'a failed job is never polled again');
  });

  it('a status outage that clears lets every job complete, each on its own schedule', async () => {
    h = await upstreamHarness();
    const sick = await h.generate();
    h.emulator.faults.statusFailures = [503];
    await h.run(1_000);
    const healthy = await h.generate();
    const [a, b] = [await h.job(sick.jobId), await h.job(healthy.jobId)];
    assert.equal(a.checkFailures, 1);
    assert.equal(b.checkFailures, 0);
    assert.equal(b.nextCheckAt, h.clock.now() + 1000);
    assert.notEqual(a.nextCheckAt, b.nextCheckAt);
    h.emulator.faults.statusFailures = [502, 500, 503];
    await h.run(40_000, 250);
    for (const id of [sick.jobId, healthy.jobId]) {
      const job = await h.job(id);
      assert.equal(job.state, 'completed', `${id}: ${JSON.stringify(job.error)}`);
      assert.equal(job.checkFailures, 0);
    }
    assert.deepEqual(await ledgerOf(h.store, sick.tenantId), [
      ['grant', 10],
      ['charge', -1],
      ['charge', -1],
    ]);
  });

  it('a hung status call is cut by the adapter timeout and counts as a failed check', async () => {
    h = await upstreamHarness();
    assert.equal(
      loadConfig({ OPENAI_API_KEY: 'k', OPENAI_TIMEOUT_MS: '300' }).upstreams.openai?.timeoutMs,
      300,
      'the timeout is configurable for the server (OPENAI_TIMEOUT_MS)',
    );
    const job = await h.generate();
    h.emulator.faults.hangStatus = 2;
    const cuts: number[] = [];
    for (let i = 0; i < 2; i += 1) {
      const current = await h.job(job.jobId);
      h.clock.set(current.nextCheckAt ?? h.clock.now());
      const started = Date.now();
      const advanced = await h.gateway.services.pipeline.advance(job.jobId);
      cuts.push(Date.now() - started);
      assert.equal(advanced?.checkFailures, i + 1);
      assert.ok((advanced?.nextCheckAt ?? 0) > h.clock.now());
    }
    process.stdout.write(`# hung status calls cut after ${cuts.join(', ')} ms (timeout 300 ms)\n`);
    for (const ms of cuts) assert.ok(ms >= 250 && ms < 3_000, `cut after ${ms} ms`);
    await h.run(30_000, 250);
    assert.equal((await h.job(job.jobId)).state, 'completed');
  });

  it('a job that never finishes fails at the configured deadline and is refunded once', async () => {
    h = await upstreamHarness({
      runMs: 1_000_000_000,
      env: { REELPOSTLY_JOB_DEADLINE_SECONDS: '60' },
    });
    const job = await h.generate();
    await h.run(59_000, 500);
    assert.equal((await h.job(job.jobId)).state, 'in_progress');
    await h.run(2_000, 500);
    const failed = await h.job(job.jobId);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error?.code, 'timeout');
    // Pollers and ticks after the end change nothing.
    for (let i = 0; i < 5; i += 1) {
      await h.gateway.services.videos.get(job.tenantId, job.jobId);
      await h.run(5_000, 1_000);
    }
    assert.deepEqual(await ledgerOf(h.store, job.tenantId), [
      ['grant', 10],
      ['charge', -1],
      ['refund', 1],
    ]);
    assert.equal(await h.store.getBalance(job.tenantId), 10);
  });

  /** The job ended failed with `code`, no file of it was stored, and it was charged and refunded once. */
  async function assertFailedRefundedNothingStored(harness: Harness, job: Job, code: string) {
    const failed = await harness.job(job.jobId);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error?.code, code);
    assert.equal(await harness.gateway.services.blobs.head(blobKey(job, 'video')), null);
    assert.deepEqual(await blobFiles(harness.gateway.dataDir, job), []);
    assert.deepEqual(await ledgerOf(harness.store, job.tenantId), [
      ['grant', 10],
      ['charge', -1],
      ['refund', 1],
    ]);
  }

  for (const gone of [404, 410] as const) {
    it(`an expired asset (${gone}) fails the job and refunds, storing nothing`, async () => {
      h = await upstreamHarness();
      h.emulator.faults.contentGone = gone;
      const job = await h.generate();
      await h.run(6_000);
      await assertFailedRefundedNothingStored(h, job, 'asset_unavailable');
      assert.equal(h.emulator.videoDownloads().length, 1, 'an expired asset is not retried');
    });
  }

  it('a truncated asset (Content-Length > bytes sent) is retried, then failed and refunded, never stored', async () => {
    h = await upstreamHarness({ env: { REELPOSTLY_MAX_CHECK_FAILURES: '3' } });
    h.emulator.faults.truncateContent = true;
    const job = await h.generate();
    await h.run(60_000, 250);
    await assertFailedRefundedNothingStored(h, job, 'upstream_error');
    assert.equal(h.emulator.videoDownloads().length, 3, 'bounded retries of the download');
  });

  it('a truncation that clears on retry stores the exact bytes', async () => {
    h = await upstreamHarness();
    h.emulator.faults.truncateContent = true;
    const job = await h.generate();
    await h.run(5_500, 250);
    assert.ok(h.emulator.videoDownloads().length >= 1);
    assert.equal((await h.job(job.jobId)).state, 'in_progress');
    h.emulator.faults.truncateContent = false;
    await h.run(30_000, 250);
    const done = await h.job(job.jobId);
    assert.equal(done.state, 'completed');
    const stored = await readFile(join(h.gateway.dataDir, 'blobs', blobKey(job, 'video')));
    assert.ok(stored.equals(await readFile(ASSET)));
    assert.equal(
      (await blobFiles(h.gateway.dataDir, job)).filter((f) => f.startsWith('.tmp-')).length,
      0,
    );
  });

  it('a download whose body stalls is cut after a lease period without bytes, then retried', async () => {
    h = await upstreamHarness({ env: { REELPOSTLY_LEASE_MS: '1000' } });
    const job = await h.generate();
    await h.run(4_900);
    // Headers and one chunk, then silence: the adapter's timeout no longer applies.
    h.emulator.faults.contentChunkBytes = 8 * 1024;
    h.emulator.faults.contentChunkDelayMs = 600_000;
    h.clock.advance(200);
    const advancing = h.gateway.services.pipeline.advance(job.jobId);
    await eventually(async () => h?.emulator.deliveries.some((d) => d.sentBytes > 0), {
      intervalMs: 10,
    });
    h.clock.advance(1_500);
    const started = Date.now();
    const cut = await advancing;
    process.stdout.write(`# stalled body cut ${Date.now() - started} ms after the lease period\n`);
    assert.equal(cut?.state, 'in_progress');
    assert.equal(cut?.checkFailures, 1);
    assert.equal(await h.gateway.services.blobs.head(blobKey(job, 'video')), null);
    assert.deepEqual(await blobFiles(h.gateway.dataDir, job), []);
    h.emulator.faults.contentChunkDelayMs = 0;
    await h.run(30_000, 250);
    assert.equal((await h.job(job.jobId)).state, 'completed');
    assert.equal(h.emulator.videoDownloads().length, 2);
  });

  /** Puts a FILE where the job's blob folder must go: mkdir fails (EEXIST/ENOTDIR), even as root. */
  async function blockBlobFolder(harness: Harness, job: Job): Promise<string> {
    const parent = join(harness.gateway.dataDir, 'blobs', 'videos', job.tenantId);
    await mkdir(parent, { recursive: true });
    const blocker = join(parent, job.jobId);
    await writeFile(blocker, 'not a directory');
    return blocker;
  }

  it('a storage write that keeps failing is retried, then failed and refunded', async () => {
    h = await upstreamHarness({ env: { REELPOSTLY_MAX_CHECK_FAILURES: '4' } });
    const job = await h.generate();
    const blocker = await blockBlobFolder(h, job);
    await h.run(90_000, 250);
    const failed = await h.job(job.jobId);
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error?.code, 'upstream_error');
    assert.equal(h.emulator.videoDownloads().length, 4);
    assert.equal(await readFile(blocker, 'utf8'), 'not a directory', 'nothing written');
    assert.deepEqual(await ledgerOf(h.store, job.tenantId), [
      ['grant', 10],
      ['charge', -1],
      ['refund', 1],
    ]);
  });

  it('a storage failure that clears lets the job complete', async () => {
    h = await upstreamHarness();
    const job = await h.generate();
    const blocker = await blockBlobFolder(h, job);
    await h.run(6_000, 250);
    assert.ok(h.emulator.videoDownloads().length >= 1);
    const retrying = await h.job(job.jobId);
    assert.notEqual(retrying.state, 'completed');
    assert.ok(retrying.checkFailures >= 1);
    await rm(blocker);
    await h.run(30_000, 250);
    const done = await h.job(job.jobId);
    assert.equal(done.state, 'completed');
    const stored = await readFile(join(h.gateway.dataDir, 'blobs', blobKey(job, 'video')));
    assert.ok(stored.equals(await readFile(ASSET)));
    assert.deepEqual(await ledgerOf(h.store, job.tenantId), [
      ['grant', 10],
      ['charge', -1],
    ]);
  });
});

describe('50 status requests at the moment a job completes', () => {
  let h: Harness | undefined;
  after(async () => h?.close());

  it('download the video exactly once', async () => {
    h = await upstreamHarness();
    const gateway: TestGateway = h.gateway;
    const created = await api(gateway.baseUrl, '/video/generate', {
      key: h.tenant.apiKey,
      body: REQUEST,
    });
    assert.equal(created.status, 200);
    const id: string = created.body.video_id;
    // Slow enough that every request arrives while the download is under way.
    h.emulator.faults.contentChunkBytes = 32 * 1024;
    h.emulator.faults.contentChunkDelayMs = 20;
    h.clock.advance(5_000);
    const key = h.tenant.apiKey;
    const answers = await Promise.all(
      Array.from({ length: 50 }, () => api(gateway.baseUrl, `/video/status/${id}`, { key })),
    );
    assert.deepEqual(
      [...new Set(answers.map((a) => a.status))],
      [200],
      JSON.stringify(answers.find((a) => a.status !== 200)?.body),
    );
    const states = answers.map((a) => a.body.status as string);
    assert.ok(states.includes('completed'), 'the winner answers completed');
    const done = await eventually(async () => {
      const res = await api(gateway.baseUrl, `/video/status/${id}`, { key });
      return res.body.status === 'completed' ? res : null;
    });
    assert.equal(h.emulator.videoDownloads().length, 1);
    assert.equal(h.emulator.statusChecks().length >= 1, true);
    const bytes = Buffer.from(await (await fetch(done.body.url)).arrayBuffer());
    assert.ok(bytes.equals(await readFile(ASSET)));
    process.stdout.write(
      `# 50 racing status calls: ${h.emulator.videoDownloads().length} download, ${h.emulator.statusChecks().length} upstream status checks, states ${JSON.stringify(countBy(states))}\n`,
    );
  });
});

function countBy(values: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) counts[value] = (counts[value] ?? 0) + 1;
  return counts;
}
