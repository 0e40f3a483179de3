/**
 * A 1 GiB upstream video, generated on the fly by the OpenAI emulator, streams through a
 * real gateway process into FsBlobStore; the process's peak resident set stays under
 * 200 MB and the stored bytes hash to what the emulator sent.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { after, describe, it } from 'node:test';
import { blobKey } from '../../src/core/pipeline.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import { systemClock } from '../../src/services.ts';
import { createSqliteStore } from '../../src/stores/sqlite/sqlite-store.ts';
import {
  type OpenAIVideosEmulator,
  startOpenAIVideosEmulator,
} from '../emulators/openai-videos-emulator.ts';
import {
  bundleServer,
  type ChildGateway,
  openAIGatewayEnv,
  rssOf,
  startChildGateway,
} from '../support/child-gateway.ts';
import { api, eventually, freePort } from '../support/gateway.ts';

const GIB = 1024 ** 3;
const RSS_LIMIT = 200 * 1000 * 1000;
const UPSTREAM_KEY = 'sk-large-file';

async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path, { highWaterMark: 1024 * 1024 }), hash);
  return hash.digest('hex');
}

describe('a 1 GiB upstream video', () => {
  let dataDir = '';
  let gateway: ChildGateway | undefined;
  let emulator: OpenAIVideosEmulator | undefined;
  let entry = '';
  /** Peak RSS of the gateway over its whole life, download included; 0 until measured. */
  let peak = 0;
  after(async () => {
    gateway?.child.kill('SIGKILL');
    if (entry) await rm(entry, { force: true });
    await emulator?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('streams into storage: exact bytes, and the download adds little to the RSS', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-large-'));
    emulator = await startOpenAIVideosEmulator({
      apiKey: UPSTREAM_KEY,
      clock: systemClock,
      queuedMs: 100,
      runMs: 200,
      assetsDir: defaultAssetsDir(),
    });
    emulator.faults.syntheticVideoBytes = GIB;
    emulator.faults.contentChunkBytes = 256 * 1024;
    const port = await freePort();
    const baseUrl = `http://127.0.0.1:${port}`;
    entry = await bundleServer();
    gateway = await startChildGateway(
      await openAIGatewayEnv({
        port,
        dataDir,
        upstreamUrl: emulator.baseUrl,
        upstreamKey: UPSTREAM_KEY,
      }),
      { entry },
    );
    const pid = gateway.child.pid as number;
    const output = gateway.output;
    const apiKey = await eventually(async () => /API key: (rp_live_\w+)/.exec(output())?.[1]);
    const before = (await rssOf(pid, 'VmRSS')) ?? 0;
    const created = await api(baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'A very long take', model: 'sora-2', seconds: 12, size: '1280x720' },
    });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const id: string = created.body.video_id;

    const started = Date.now();
    const store = createSqliteStore({ path: join(dataDir, 'reelpostly.db') });
    try {
      const job = await eventually(
        async () => {
          const j = await store.getJob(id);
          if (j?.state === 'failed') throw new Error(`job failed: ${JSON.stringify(j.error)}`);
          return j?.state === 'completed' ? j : null;
        },
        { timeoutMs: 120_000, intervalMs: 100 },
      );
      const seconds = (Date.now() - started) / 1000;
      peak = (await rssOf(pid, 'VmHWM')) ?? 0;
      const path = join(dataDir, 'blobs', blobKey(job, 'video'));
      assert.equal((await stat(path)).size, GIB);
      assert.equal(job.asset?.bytes, GIB);
      const videos = emulator.deliveries.filter((d) => d.variant === 'video');
      assert.equal(videos.length, 1);
      assert.equal(videos[0]?.complete, true, 'the emulator finished sending');
      assert.equal(await sha256Of(path), videos[0]?.sha256);
      const growth = peak - before;
      process.stdout.write(
        `# 1 GiB stored in ${seconds.toFixed(1)} s (${(GIB / 1024 ** 2 / seconds).toFixed(0)} MiB/s); gateway ` +
          `RSS ${mb(before)} MB before the job, peak (VmHWM) ${mb(peak)} MB, growth at most ${mb(growth)} MB\n`,
      );
      // A buffered download would grow by the file's size; streaming only by the garbage
      // chunks awaiting collection (~40 MB here, more on a busy machine).
      assert.ok(growth < 128 * 1024 * 1024, `RSS grew by ${growth} bytes`);
    } finally {
      await store.close();
    }
    gateway.child.kill('SIGTERM');
    assert.equal(await gateway.exited, 0);
  });

  // Idle ~125 MB (no AWS or provider SDK loads until used); the stream adds ~40-60 MB of
  // chunk buffers awaiting collection.
  it('keeps the gateway under 200 MB peak RSS', () => {
    assert.ok(peak > 0, 'the streaming test ran');
    assert.ok(peak < RSS_LIMIT, `peak RSS ${mb(peak)} MB`);
  });
});

function mb(bytes: number): string {
  return (bytes / 1e6).toFixed(0);
}
