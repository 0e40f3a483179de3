import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { pino } from 'pino';
import { ManualClock } from '../../test/support/gateway.ts';
import { FsBlobStore } from '../blobs/fs/fs-blob-store.ts';
import {
  defaultAssetsDir,
  SIMULATE_ASSET_EXPIRED,
  SimulatedProvider,
} from '../providers/simulated/simulated-provider.ts';
import { createSqliteStore } from '../stores/sqlite/sqlite-store.ts';
import { Catalog, DEFAULT_CATALOG_PATH } from './catalog.ts';
import { ProviderError } from './errors.ts';
import { JobPipeline, type PipelineOptions } from './pipeline.ts';
import type { Store, VideoProvider, VideoVariant } from './ports.ts';
import { VideoService } from './videos.ts';

/** The real simulated provider with faults switched on by the test and calls counted. */
class FaultySimulatedProvider implements VideoProvider {
  readonly id = 'simulated';
  readonly capabilities;
  statusFailures = 0;
  downloads: Record<VideoVariant, number> = { video: 0, thumbnail: 0, spritesheet: 0 };
  submits = 0;
  constructor(private readonly inner: SimulatedProvider) {
    this.capabilities = inner.capabilities;
  }
  submit(input: Parameters<VideoProvider['submit']>[0]) {
    this.submits += 1;
    return this.inner.submit(input);
  }
  async status(id: string) {
    if (this.statusFailures > 0) {
      this.statusFailures -= 1;
      throw new ProviderError('simulated', 'status 503', {
        httpStatus: 503,
        certain: true,
        retryable: true,
      });
    }
    return this.inner.status(id);
  }
  async download(id: string, variant: VideoVariant) {
    this.downloads[variant] += 1;
    // Make the race window real: the download yields before streaming.
    await new Promise((r) => setTimeout(r, 20));
    return this.inner.download(id, variant);
  }
}

const OPTIONS: PipelineOptions = {
  pollIntervalMs: 1000,
  leaseMs: 30_000,
  jobDeadlineMs: 3_600_000,
  maxCheckFailures: 4,
  maxBackoffMs: 60_000,
};

describe('job pipeline with real adapters on an injected clock', () => {
  let dir: string;
  let store: Store;
  let clock: ManualClock;
  let provider: FaultySimulatedProvider;
  let pipeline: JobPipeline;
  let videos: VideoService;
  let tenantId: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reelpostly-pipeline-'));
    clock = new ManualClock();
    store = createSqliteStore({ path: join(dir, 'db.sqlite') });
    await store.migrate();
    const blobs = new FsBlobStore({
      dir: join(dir, 'blobs'),
      publicBaseUrl: 'http://x',
      secret: 's',
      clock,
    });
    provider = new FaultySimulatedProvider(
      new SimulatedProvider({ clock, durationMs: 8000, assetsDir: defaultAssetsDir() }),
    );
    const providers = new Map([[provider.id, provider]]);
    pipeline = new JobPipeline({
      store,
      blobs,
      providers,
      clock,
      logger: pino({ level: 'silent' }),
      options: OPTIONS,
    });
    videos = new VideoService({
      store,
      blobs,
      catalog: Catalog.load(DEFAULT_CATALOG_PATH),
      providers,
      pipeline,
      clock,
      options: {
        pollIntervalMs: 1000,
        submitTimeoutMs: 60_000,
        urlTtlSeconds: 3600,
        upstreamWebhookBaseUrl: null,
      },
    });
    tenantId = 'tenant_pipeline';
    await store.createTenant({
      tenantId,
      email: 'p@example.com',
      planId: 'starter',
      status: 'active',
      createdAt: clock.now(),
    });
    await store.post({
      entryId: 'grant',
      tenantId,
      kind: 'grant',
      amount: 10,
      reason: 'test',
      jobId: null,
      createdAt: clock.now(),
    });
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function ledger() {
    const { items } = await store.listEntries(tenantId, { limit: 100 });
    return {
      items,
      sum: items.reduce((s, e) => s + e.amount, 0),
      balance: await store.getBalance(tenantId),
    };
  }

  it('50 racing advances at completion download the video exactly once', async () => {
    const { job } = await videos.generate({
      tenantId,
      keyId: 'k',
      prompt: 'race',
      seconds: 4,
      size: '1280x720',
    });
    clock.advance(9000);
    const results = await Promise.all(
      Array.from({ length: 50 }, () => pipeline.advance(job.jobId)),
    );
    assert.equal(provider.downloads.video, 1);
    assert.equal(provider.downloads.thumbnail, 1);
    assert.ok(results.some((j) => j?.state === 'completed'));
    const stored = await store.getJob(job.jobId);
    assert.equal(stored?.state, 'completed');
    assert.equal(stored?.nextCheckAt, null);
    // A later advance of an ended job does nothing.
    await pipeline.advance(job.jobId);
    assert.equal(provider.downloads.video, 1);
    assert.equal((await ledger()).balance, 9);
  });

  it('a submit interrupted by a crash is resubmitted once the lease lapses (idempotent provider)', async () => {
    const now = clock.now();
    await store.createJob(
      {
        jobId: 'video_crashed',
        tenantId,
        keyId: 'k',
        model: 'sora-2',
        provider: 'simulated',
        upstreamModel: 'sim-standard',
        providerJobId: null,
        prompt: 'crashed mid-submit',
        seconds: 4,
        size: '720x1280',
        state: 'queued',
        progress: 0,
        providerStatus: 'submitting',
        error: null,
        cost: 1,
        asset: null,
        remixedFromJobId: null,
        createdAt: now,
        updatedAt: now,
        completedAt: null,
        nextCheckAt: now + 60_000,
        checkFailures: 0,
        leaseOwner: 'dead-process:1',
        leaseUntil: now + 60_000,
        version: 1,
      },
      {
        entryId: 'charge:video_crashed',
        tenantId,
        kind: 'charge',
        amount: -1,
        reason: 't',
        jobId: 'video_crashed',
        createdAt: now,
      },
    );
    assert.equal(
      (await pipeline.advance('video_crashed'))?.providerJobId,
      null,
      'lease still held',
    );
    clock.advance(60_001);
    const resumed = await pipeline.advance('video_crashed');
    assert.match(resumed?.providerJobId ?? '', /^sim_/);
    assert.equal(provider.submits, 1);
    clock.advance(9000);
    assert.equal((await pipeline.advance('video_crashed'))?.state, 'completed');
    const { items, balance } = await ledger();
    assert.deepEqual(
      items.map((e) => e.kind),
      ['grant', 'charge'],
    );
    assert.equal(balance, 9);
  });

  it('a remix interrupted mid-submit is resubmitted as a remix, or failed if its source is gone', async () => {
    const { job: source } = await videos.generate({
      tenantId,
      keyId: 'k',
      prompt: 'source',
      seconds: 4,
      size: '1280x720',
    });
    clock.advance(9000);
    assert.equal((await pipeline.advance(source.jobId))?.state, 'completed');
    const crashedRemix = async (jobId: string) => {
      const now = clock.now();
      const { job } = await videos.generate({ tenantId, keyId: 'k', prompt: 'template' });
      await store.createJob(
        {
          ...job,
          jobId,
          providerJobId: null,
          // Portrait on purpose: a plain resubmit would render portrait, a remix keeps the source's landscape.
          size: '720x1280',
          providerStatus: 'submitting',
          remixedFromJobId: source.jobId,
          createdAt: now,
          nextCheckAt: now,
          leaseOwner: null,
          leaseUntil: 0,
          version: 1,
        },
        {
          entryId: `charge:${jobId}`,
          tenantId,
          kind: 'charge',
          amount: -1,
          reason: 't',
          jobId,
          createdAt: now,
        },
      );
    };
    await crashedRemix('video_remix_1');
    const resumed = await pipeline.advance('video_remix_1');
    assert.match(resumed?.providerJobId ?? '', /^sim_[0-9a-z]+_[0-9a-z]+_l_/);

    await crashedRemix('video_remix_2');
    await videos.delete(tenantId, source.jobId);
    const orphan = await pipeline.advance('video_remix_2');
    assert.equal(orphan?.state, 'failed');
    assert.equal(orphan?.error?.code, 'upstream_unknown');
    const { sum, balance } = await ledger();
    assert.equal(sum, balance);
  });

  it('an expired upstream asset fails the job and refunds once; nothing partial is stored', async () => {
    const { job } = await videos.generate({
      tenantId,
      keyId: 'k',
      prompt: `x ${SIMULATE_ASSET_EXPIRED}`,
    });
    clock.advance(9000);
    const failed = await pipeline.advance(job.jobId);
    assert.equal(failed?.state, 'failed');
    assert.equal(failed?.error?.code, 'asset_unavailable');
    await pipeline.advance(job.jobId);
    const { items, sum, balance } = await ledger();
    assert.equal(items.filter((e) => e.kind === 'refund').length, 1);
    assert.equal(balance, 10);
    assert.equal(sum, balance);
    const blobDir = join(dir, 'blobs', 'videos', tenantId, job.jobId);
    assert.deepEqual(await readdir(blobDir).catch(() => []), []);
  });

  it('failing status checks back off with growing delays, then fail and refund', async () => {
    const { job } = await videos.generate({ tenantId, keyId: 'k', prompt: 'flaky' });
    provider.statusFailures = 100;
    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      clock.advance(120_000);
      const before = clock.now();
      const j = await pipeline.advance(job.jobId);
      assert.equal(j?.state, 'queued');
      assert.equal(j?.checkFailures, i + 1);
      delays.push((j?.nextCheckAt ?? 0) - before);
    }
    // Backoff doubles from the poll interval (with +-50% jitter) up to the ceiling.
    const [first = 0, , third = 0] = delays;
    assert.ok(first >= 1000 && first <= 3000, `${delays}`);
    assert.ok(third >= 4000 && third <= 12_000, `${delays}`);
    clock.advance(120_000);
    const failed = await pipeline.advance(job.jobId);
    assert.equal(failed?.state, 'failed');
    assert.equal(failed?.error?.code, 'upstream_error');
    assert.equal((await ledger()).balance, 10);
  });

  it('a job past its deadline fails as timeout and is refunded exactly once', async () => {
    const { job } = await videos.generate({ tenantId, keyId: 'k', prompt: 'slow' });
    clock.advance(OPTIONS.jobDeadlineMs + 1);
    await Promise.all(Array.from({ length: 10 }, () => pipeline.advance(job.jobId)));
    assert.equal((await store.getJob(job.jobId))?.state, 'failed');
    assert.equal((await store.getJob(job.jobId))?.error?.code, 'timeout');
    const { items, balance } = await ledger();
    assert.equal(items.filter((e) => e.kind === 'refund').length, 1);
    assert.equal(balance, 10);
  });
});
