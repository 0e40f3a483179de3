/**
 * One streaming measurement in a process of its own, so its peak RSS is its own.
 * A loopback HTTP upstream serves `mb` MB; `raw` copies them straight to a file,
 * `pipeline` runs a completed job through JobPipeline.advance: provider download ->
 * FsBlobStore.put, exactly the path a finished video takes. Prints one JSON line.
 * argv: <raw|pipeline> <mb> <dir>
 */
import { createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { createServer, get, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { pipeline as pump } from 'node:stream/promises';
import type { VideoProvider } from '../src/core/ports.ts';

const [mode, mbText, dir] = process.argv.slice(2) as ['raw' | 'pipeline', string, string];
const total = Number(mbText) * 1024 * 1024;
const chunk = Buffer.alloc(1024 * 1024, 7);

const upstream = createServer(async (_request, response) => {
  response.writeHead(200, { 'content-type': 'video/mp4', 'content-length': total });
  for (let sent = 0; sent < total; sent += chunk.length) {
    if (!response.write(chunk)) await new Promise((resolve) => response.once('drain', resolve));
  }
  response.end();
});
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(upstream.address() as { port: number }).port}/video.mp4`;
const fetchUpstream = () =>
  new Promise<IncomingMessage>((resolve, reject) => get(url, resolve).on('error', reject));

/** Sampled, because maxRSS also counts loading the app; growth is what streaming costs. */
let rssAtStart = 0;
let rssPeak = 0;
let sampler: NodeJS.Timeout | undefined;
const startTransfer = () => {
  rssAtStart = process.memoryUsage.rss();
  rssPeak = rssAtStart;
  sampler = setInterval(() => {
    rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
  }, 20);
  return performance.now();
};

await mkdir(dir, { recursive: true });
let started: number;
if (mode === 'raw') {
  started = startTransfer();
  await pump(await fetchUpstream(), createWriteStream(join(dir, 'raw.mp4')));
} else {
  // Loaded only here, so the raw copy's memory is not the whole app's.
  const { pino } = await import('pino');
  const { loadConfig } = await import('../src/config.ts');
  const { createServices } = await import('../src/services.ts');
  const provider: VideoProvider = {
    id: 'loopback',
    capabilities: { remix: false, inputReference: false, idempotentSubmit: true },
    submit: async () => ({ providerJobId: 'up_1' }),
    status: async () => ({ state: 'completed', progress: 100, providerStatus: 'completed' }),
    download: async (_id, variant) => {
      if (variant !== 'video') return null;
      const body = await fetchUpstream();
      return { body, contentType: 'video/mp4', bytes: Number(body.headers['content-length']) };
    },
  };
  const services = createServices(
    loadConfig({ REELPOSTLY_DATA_DIR: dir, REELPOSTLY_DEMO: 'false', LOG_LEVEL: 'silent' }),
    { logger: pino({ level: 'silent' }), providers: [provider] },
  );
  await services.store.migrate();
  const { tenant } = await services.accounts.createTenant({ email: 'r@bench.dev', credits: 1 });
  const now = Date.now();
  const jobId = `video_${'0'.repeat(32)}`;
  await services.store.createJob(
    {
      jobId,
      tenantId: tenant.tenantId,
      keyId: 'key_bench',
      model: 'sora-2',
      provider: 'loopback',
      upstreamModel: 'loop',
      providerJobId: 'up_1',
      prompt: 'bench',
      seconds: 4,
      size: '720x1280',
      state: 'in_progress',
      progress: 50,
      providerStatus: 'in_progress',
      error: null,
      cost: 1,
      asset: null,
      remixedFromJobId: null,
      createdAt: now,
      updatedAt: now,
      completedAt: null,
      nextCheckAt: now,
      checkFailures: 0,
      leaseOwner: null,
      leaseUntil: 0,
      version: 1,
    },
    {
      entryId: `charge:${jobId}`,
      tenantId: tenant.tenantId,
      kind: 'charge',
      amount: -1,
      reason: 'bench',
      jobId,
      createdAt: now,
    },
  );
  started = startTransfer();
  const job = await services.pipeline.advance(jobId);
  if (job?.state !== 'completed' || job.asset?.bytes !== total) {
    throw new Error(`relay did not store the video: ${JSON.stringify(job)}`);
  }
  await services.close();
}
const seconds = (performance.now() - started) / 1000;
clearInterval(sampler);
rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
upstream.close();
await rm(dir, { recursive: true, force: true });
process.stdout.write(
  `${JSON.stringify({
    mbPerSecond: total / 1024 / 1024 / seconds,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
    rssAtStartMb: rssAtStart / 1024 / 1024,
    growthMb: (rssPeak - rssAtStart) / 1024 / 1024,
  })}\n`,
);
