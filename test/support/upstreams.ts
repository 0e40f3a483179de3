import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { get as httpGet } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import type { Clock } from '../../src/core/ports.ts';
import { defaultAssetsDir } from '../../src/providers/simulated/simulated-provider.ts';
import { FalEmulator } from '../emulators/fal-emulator.ts';
import {
  type OpenAIVideosEmulator,
  startOpenAIVideosEmulator,
} from '../emulators/openai-videos-emulator.ts';
import {
  type OpenRouterEmulator,
  startOpenRouterEmulator,
} from '../emulators/openrouter-emulator.ts';
import { type ReplicateEmulator, startReplicateEmulator } from '../emulators/replicate-emulator.ts';
import { freePort } from './gateway.ts';

/** Emulated upstream jobs run on real time, so the gateway's worker sees them end. */
export const realClock: Clock = { now: () => Date.now() };

export const KEYS = {
  openai: 'sk-e2e-openai-key',
  openrouter: 'sk-or-v1-e2e-key',
  fal: 'e2e-key-id:e2e-key-secret',
  replicate: `r8_${randomBytes(16).toString('hex')}`,
} as const;

export const SECRETS = {
  openrouter: 'whsec-openrouter-e2e',
  replicate: `whsec_${randomBytes(24).toString('base64')}`,
} as const;

export type RealProvider = keyof typeof KEYS;

export interface Upstreams {
  openai: OpenAIVideosEmulator;
  openrouter: OpenRouterEmulator;
  fal: FalEmulator;
  replicate: ReplicateEmulator;
  /** Gateway env configuring exactly `providers` against the emulators; no simulated provider. */
  env(providers: readonly RealProvider[]): Record<string, string>;
  close(): Promise<void>;
}

/** The four upstream emulators, each ending a job about `durationMs` after its create. */
export async function startUpstreams({ durationMs = 400 } = {}): Promise<Upstreams> {
  const assetsDir = defaultAssetsDir();
  const queuedMs = Math.floor(durationMs / 4);
  const [openai, openrouter, fal, replicate] = await Promise.all([
    startOpenAIVideosEmulator({
      apiKey: KEYS.openai,
      clock: realClock,
      assetsDir,
      queuedMs,
      runMs: durationMs - queuedMs,
    }),
    startOpenRouterEmulator({
      apiKey: KEYS.openrouter,
      clock: realClock,
      assetsDir,
      jobDurationMs: durationMs,
      webhookSecret: SECRETS.openrouter,
    }),
    new FalEmulator({
      apiKey: KEYS.fal,
      clock: realClock,
      assetsDir,
      queuedMs,
      durationMs,
    }).start(),
    startReplicateEmulator({
      apiToken: KEYS.replicate,
      clock: realClock,
      assetsDir,
      webhookSecret: SECRETS.replicate,
      startingMs: queuedMs,
      processingMs: durationMs - queuedMs,
    }),
  ]);
  const envOf: Record<RealProvider, Record<string, string>> = {
    openai: { OPENAI_API_KEY: KEYS.openai, OPENAI_BASE_URL: openai.baseUrl },
    openrouter: {
      OPENROUTER_API_KEY: KEYS.openrouter,
      OPENROUTER_BASE_URL: openrouter.baseUrl,
      OPENROUTER_WEBHOOK_SECRET: SECRETS.openrouter,
    },
    fal: { FAL_KEY: KEYS.fal, FAL_BASE_URL: fal.url, FAL_JWKS_URL: fal.jwksUrl },
    replicate: {
      REPLICATE_API_TOKEN: KEYS.replicate,
      REPLICATE_BASE_URL: replicate.baseUrl,
      REPLICATE_WEBHOOK_SECRET: SECRETS.replicate,
    },
  };
  return {
    openai,
    openrouter,
    fal,
    replicate,
    env: (providers) =>
      Object.assign({ REELPOSTLY_SIMULATED: 'false' }, ...providers.map((p) => envOf[p])),
    async close() {
      await Promise.all([openai.close(), openrouter.close(), fal.close(), replicate.close()]);
    },
  };
}

/** A URL on 127.0.0.1 where nothing listens (connection refused). */
export async function closedPortUrl(path = ''): Promise<string> {
  return `http://127.0.0.1:${await freePort()}${path}`;
}

/** The default catalog's plans and defaults with `models` instead of its models. */
export async function writeCatalog(path: string, models: Record<string, unknown>): Promise<string> {
  const base = JSON.parse(readFileSync(DEFAULT_CATALOG_PATH, 'utf8')) as {
    defaults: Record<string, unknown>;
  };
  const first = Object.keys(models)[0];
  await writeFile(
    path,
    JSON.stringify({ ...base, models, defaults: { ...base.defaults, model: first } }),
  );
  return path;
}

/**
 * A TCP forwarder on a port chosen before the gateway starts, so the gateway can be told
 * its public URL (`REELPOSTLY_PUBLIC_URL`) ahead of knowing its own port.
 */
export async function startForwarder(): Promise<{
  url: string;
  attach(targetBaseUrl: string): void;
  close(): Promise<void>;
}> {
  let target: URL | null = null;
  const sockets = new Set<Socket>();
  const server: Server = createServer((inbound) => {
    sockets.add(inbound);
    inbound.on('close', () => sockets.delete(inbound));
    if (!target) {
      inbound.destroy();
      return;
    }
    const outbound = connect(Number(target.port), target.hostname);
    sockets.add(outbound);
    outbound.on('close', () => sockets.delete(outbound));
    outbound.on('error', () => inbound.destroy());
    inbound.on('error', () => outbound.destroy());
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    attach(targetBaseUrl) {
      target = new URL(targetBaseUrl);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * GETs a signed file URL on a fresh connection (`Connection: close`). With fetch's pooled
 * keep-alive connection, closing the gateway afterwards sometimes waited ~70 s for a
 * connection Node did not count as idle.
 */
export function download(
  url: string,
): Promise<{ status: number; contentType: string | undefined; body: Buffer }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          contentType: res.headers['content-type'],
          body: Buffer.concat(chunks),
        }),
      );
    }).on('error', reject);
  });
}
