/**
 * Load: 2,000 jobs in flight through the simulated provider, driven by the real
 * background worker, all complete exactly once with the ledger balanced; worker
 * concurrency and the per-provider polling rate are bounded by configuration.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import type { Job, VideoProvider, VideoVariant } from '../../src/core/ports.ts';
import { OpenAICompatibleProvider } from '../../src/providers/openai/openai-provider.ts';
import {
  defaultAssetsDir,
  SimulatedProvider,
} from '../../src/providers/simulated/simulated-provider.ts';
import { systemClock } from '../../src/services.ts';
import {
  type OpenAIVideosEmulator,
  startOpenAIVideosEmulator,
} from '../emulators/openai-videos-emulator.ts';
import { eventually, startGateway, type TestGateway } from '../support/gateway.ts';

/** The real simulated provider, counting calls in flight and downloads per upstream job. */
class CountingProvider implements VideoProvider {
  readonly id = 'simulated';
  readonly capabilities;
  inFlight = 0;
  maxInFlight = 0;
  statusCalls = 0;
  readonly videoDownloads = new Map<string, number>();
  constructor(private readonly inner: SimulatedProvider) {
    this.capabilities = inner.capabilities;
  }
  submit(input: Parameters<VideoProvider['submit']>[0]) {
    return this.inner.submit(input);
  }
  async status(id: string) {
    this.statusCalls += 1;
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      // Yield, so calls the worker runs side by side really overlap.
      await new Promise((r) => setImmediate(r));
      return await this.inner.status(id);
    } finally {
      this.inFlight -= 1;
    }
  }
  download(id: string, variant: VideoVariant) {
    if (variant === 'video') this.videoDownloads.set(id, (this.videoDownloads.get(id) ?? 0) + 1);
    return this.inner.download(id, variant);
  }
}

const JOBS = 2_000;
const CONCURRENCY = 16;

describe('2,000 jobs in flight through the simulated provider', () => {
  let gateway: TestGateway | undefined;
  after(async () => gateway?.close());

  it('all complete exactly once, none lost, the ledger balanced, concurrency bounded', async () => {
    const provider = new CountingProvider(
      new SimulatedProvider({
        clock: systemClock,
        durationMs: 2_000,
        assetsDir: defaultAssetsDir(),
      }),
    );
    gateway = await startGateway({
      providers: [provider],
      env: {
        REELPOSTLY_WORKER_CONCURRENCY: String(CONCURRENCY),
        REELPOSTLY_WORKER_BATCH: '500',
        REELPOSTLY_WORKER_INTERVAL_MS: '20',
        REELPOSTLY_POLL_INTERVAL_MS: '500',
      },
    });
    const { services } = gateway;
    const tenant = await gateway.tenant({ plan: 'enterprise', credits: JOBS + 500 });
    const started = Date.now();
    const ids: string[] = [];
    for (let batch = 0; batch < JOBS / 100; batch += 1) {
      const created = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          services.videos.generate({
            ...tenant,
            prompt: `load ${batch * 100 + i}`,
            model: 'sora-2',
            seconds: 4,
            size: i % 2 ? '1280x720' : '720x1280',
          }),
        ),
      );
      ids.push(...created.map((c) => c.job.jobId));
    }
    const createdMs = Date.now() - started;
    assert.equal(new Set(ids).size, JOBS);

    let jobs: Job[] = [];
    await eventually(
      async () => {
        jobs = (await Promise.all(ids.map((id) => services.store.getJob(id)))) as Job[];
        return jobs.every((j) => j && (j.state === 'completed' || j.state === 'failed'));
      },
      { timeoutMs: 50_000, intervalMs: 500 },
    );
    const elapsedMs = Date.now() - started;
    assert.deepEqual(
      jobs.filter((j) => j.state !== 'completed').map((j) => [j.jobId, j.error]),
      [],
    );
    for (const job of jobs) {
      assert.ok(job.asset?.keys.video, job.jobId);
      assert.equal(provider.videoDownloads.get(job.providerJobId as string), 1, job.jobId);
    }
    assert.equal(provider.videoDownloads.size, JOBS, 'one download per job, none twice');

    const entries = [];
    let after: string | undefined;
    for (;;) {
      const page = await services.store.listEntries(tenant.tenantId, {
        limit: 100,
        ...(after ? { after } : {}),
      });
      entries.push(...page.items);
      if (!page.next) break;
      after = page.next;
    }
    const charges = entries.filter((e) => e.kind === 'charge');
    assert.equal(charges.length, JOBS);
    assert.equal(new Set(charges.map((e) => e.jobId)).size, JOBS);
    assert.equal(entries.filter((e) => e.kind === 'refund').length, 0);
    const balance = await services.store.getBalance(tenant.tenantId);
    assert.equal(balance, 500);
    assert.equal(
      entries.reduce((sum, e) => sum + e.amount, 0),
      balance,
    );
    assert.ok(provider.maxInFlight <= CONCURRENCY, `max in flight ${provider.maxInFlight}`);
    assert.ok(provider.maxInFlight > 1, 'the worker does run jobs side by side');
    process.stdout.write(
      `# ${JOBS} jobs: created in ${createdMs} ms, all completed after ${elapsedMs} ms; ` +
        `${provider.statusCalls} status calls, max ${provider.maxInFlight} in flight (limit ${CONCURRENCY})\n`,
    );
  });
});

describe('per-provider polling rate', () => {
  let gateway: TestGateway | undefined;
  let emulator: OpenAIVideosEmulator | undefined;
  after(async () => {
    await gateway?.close();
    await emulator?.close();
  });

  it('the upstream never sees more status checks than REELPOSTLY_PROVIDER_POLL_RATE allows', async () => {
    const RATE = 20;
    emulator = await startOpenAIVideosEmulator({
      apiKey: 'sk-rate',
      clock: systemClock,
      queuedMs: 100,
      runMs: 600_000,
      assetsDir: defaultAssetsDir(),
    });
    gateway = await startGateway({
      providers: [new OpenAICompatibleProvider({ apiKey: 'sk-rate', baseUrl: emulator.baseUrl })],
      env: {
        REELPOSTLY_PROVIDER_POLL_RATE: String(RATE),
        REELPOSTLY_WORKER_CONCURRENCY: '16',
        REELPOSTLY_WORKER_INTERVAL_MS: '20',
        REELPOSTLY_POLL_INTERVAL_MS: '100',
      },
    });
    const tenant = await gateway.tenant({ plan: 'enterprise', credits: 200 });
    // 100 jobs each due every 100 ms: unlimited, that is ~1,000 checks a second.
    await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        gateway?.services.videos.generate({
          ...tenant,
          prompt: `rate ${i}`,
          model: 'sora-2',
          seconds: 4,
          size: '1280x720',
        }),
      ),
    );
    const windows: number[] = [];
    let last = emulator.statusChecks().length;
    for (let second = 0; second < 4; second += 1) {
      await new Promise((r) => setTimeout(r, 1_000));
      const now = emulator.statusChecks().length;
      windows.push(now - last);
      last = now;
    }
    const total = windows.reduce((a, b) => a + b, 0);
    process.stdout.write(
      `# poll rate ${RATE}/s, 100 jobs due every 100 ms: status checks per second ${windows.join(', ')}\n`,
    );
    // A full bucket (one second's worth) may go out at once; after that, the rate.
    assert.ok(total <= RATE * windows.length + RATE, `total ${total}`);
    // Once the bucket is drained, each second sees about the rate (timer slack aside).
    for (const count of windows.slice(1)) assert.ok(count <= RATE * 1.5, `window ${count}`);
    assert.ok(total >= RATE * (windows.length - 1), `the worker keeps polling (${total})`);
  });
});
