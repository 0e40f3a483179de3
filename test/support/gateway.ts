import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.ts';
import type { Clock, VideoProvider } from '../../src/core/ports.ts';
import { buildApp } from '../../src/http/app.ts';
import { createServices, type Services } from '../../src/services.ts';
import { startWorker } from '../../src/worker/worker.ts';

/** A clock tests move by hand, so limits and expiry are checked without sleeping. */
export class ManualClock implements Clock {
  constructor(private t: number = Date.UTC(2026, 11, 4, 12, 0, 0)) {}
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
  set(ms: number): void {
    this.t = ms;
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface TestGateway {
  baseUrl: string;
  dataDir: string;
  services: Services;
  /** Creates a tenant with one key; returns its id and plaintext key. */
  tenant(options?: {
    credits?: number;
    plan?: string;
  }): Promise<{ tenantId: string; apiKey: string; keyId: string }>;
  close(): Promise<void>;
}

/**
 * A real gateway listening on 127.0.0.1 with its own SQLite file and blob dir.
 * The worker runs unless a manual clock is given (time then only moves by hand).
 */
export async function startGateway(
  options: {
    env?: Record<string, string>;
    clock?: Clock;
    dataDir?: string;
    worker?: boolean;
    /** Replaces the default simulated provider. */
    providers?: VideoProvider[];
  } = {},
): Promise<TestGateway> {
  const dataDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'reelpostly-e2e-')));
  const port = await freePort();
  const config = loadConfig({
    PORT: String(port),
    HOST: '127.0.0.1',
    REELPOSTLY_DATA_DIR: dataDir,
    REELPOSTLY_SIMULATED_SECONDS: '1',
    REELPOSTLY_POLL_INTERVAL_MS: '100',
    REELPOSTLY_WORKER_INTERVAL_MS: '50',
    REELPOSTLY_DEMO: 'false',
    ...options.env,
  });
  const services = createServices(config, {
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.providers ? { providers: options.providers } : {}),
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
  });
  await services.store.migrate();
  const app = await buildApp(services);
  await app.listen({ port, host: '127.0.0.1' });
  const worker = (options.worker ?? !options.clock) ? startWorker(services) : null;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    dataDir,
    services,
    async tenant({ credits = 100, plan = 'starter' } = {}) {
      const { tenant, apiKey } = await services.accounts.createTenant({
        email: `t${Math.random().toString(36).slice(2)}@example.com`,
        planId: plan,
        credits,
      });
      return { tenantId: tenant.tenantId, apiKey: apiKey.plaintext, keyId: apiKey.key.keyId };
    },
    async close() {
      // A test is over: drop kept-alive client sockets instead of waiting out their timeout.
      const closing = app.close();
      app.server.closeAllConnections();
      await closing;
      await worker?.stop();
      await services.close();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until it returns a value, or fails after `timeoutMs`. */
export async function eventually<T>(
  fn: () => Promise<T | undefined | null | false>,
  { timeoutMs = 15_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function api(
  baseUrl: string,
  path: string,
  init: {
    method?: string;
    key?: string;
    bearer?: string;
    body?: unknown;
    headers?: Record<string, string>;
  } = {},
  // biome-ignore lint/suspicious/noExplicitAny: tests read response fields freely and assert on them
): Promise<{ status: number; headers: Headers; body: any }> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.key) headers['x-api-key'] = init.key;
  if (init.bearer) headers.authorization = `Bearer ${init.bearer}`;
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(baseUrl + path, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers,
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Non-JSON bodies (files) stay text.
  }
  return { status: res.status, headers: res.headers, body };
}
