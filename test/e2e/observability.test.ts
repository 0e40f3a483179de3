import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { buildProgram } from '../../src/cli/program.ts';
import { loadConfig } from '../../src/config.ts';
import { buildApp } from '../../src/http/app.ts';
import { SIMULATE_MODERATION_BLOCKED } from '../../src/providers/simulated/simulated-provider.ts';
import { createServices } from '../../src/services.ts';
import {
  api,
  eventually,
  freePort,
  ManualClock,
  startGateway,
  type TestGateway,
} from '../support/gateway.ts';

const ROOT = new URL('../../', import.meta.url).pathname;
const BIN = join(ROOT, 'bin', 'reelpostly.js');

/** Sum of every sample of `name` whose labels include `labels` (Prometheus text format). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = Object.fromEntries(
      [...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => present[k] === v)) {
      total += Number(match[3]);
      seen = true;
    }
  }
  assert.ok(seen, `no sample ${name} ${JSON.stringify(labels)}`);
  return total;
}

async function metricsText(baseUrl: string): Promise<string> {
  const res = await fetch(`${baseUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /text\/plain; version=0\.0\.4/);
  return res.text();
}

describe('metrics, health and readiness', () => {
  let gw: TestGateway;
  before(async () => {
    gw = await startGateway();
  });
  after(() => gw.close());

  it('counts requests by route, jobs, credits, upstream calls and bytes stored', async () => {
    const t = await gw.tenant({ credits: 100 });
    const ok = await api(gw.baseUrl, '/video/generate', {
      key: t.apiKey,
      body: { prompt: 'Tea farms at sunrise' },
    });
    assert.equal(ok.status, 200);
    const blocked = await api(gw.baseUrl, '/video/generate', {
      key: t.apiKey,
      body: { prompt: `A riot ${SIMULATE_MODERATION_BLOCKED}` },
    });
    assert.equal(blocked.status, 200);
    const charged = 100 - blocked.body.credits_remaining;
    const blockedCost = ok.body.credits_remaining - blocked.body.credits_remaining;

    for (const [id, want] of [
      [ok.body.video_id, 'completed'],
      [blocked.body.video_id, 'failed'],
    ]) {
      await eventually(async () => {
        const res = await api(gw.baseUrl, `/video/status/${id}`, { key: t.apiKey });
        return res.body.status === want;
      });
    }
    const stored = await gw.services.store.getJob(ok.body.video_id);
    assert.ok(stored?.asset);

    const text = await metricsText(gw.baseUrl);
    assert.equal(sample(text, 'reelpostly_jobs_created_total', { model: 'sora-2' }), 2);
    assert.equal(sample(text, 'reelpostly_jobs_completed_total'), 1);
    assert.equal(sample(text, 'reelpostly_jobs_failed_total', { code: 'moderation_blocked' }), 1);
    assert.equal(sample(text, 'reelpostly_jobs_in_flight'), 0);
    assert.equal(sample(text, 'reelpostly_credits_granted_total'), 100);
    assert.equal(sample(text, 'reelpostly_credits_charged_total'), charged);
    assert.equal(sample(text, 'reelpostly_credits_refunded_total'), blockedCost);
    assert.ok(sample(text, 'reelpostly_blob_bytes_stored_total') >= stored.asset.bytes);
    assert.equal(sample(text, 'reelpostly_blob_put_errors_total'), 0);

    const http = 'reelpostly_http_request_duration_seconds_count';
    assert.equal(
      sample(text, http, { route: '/video/generate', method: 'POST', status_code: '200' }),
      2,
    );
    assert.ok(
      sample(text, http, { route: '/video/status/:id', method: 'GET', status_code: '200' }) >= 2,
    );
    assert.doesNotMatch(text, new RegExp(ok.body.video_id), 'raw URLs must not become labels');

    const upstream = 'reelpostly_upstream_request_duration_seconds_count';
    const simulated = { provider: 'simulated', outcome: 'ok' };
    assert.equal(sample(text, upstream, { ...simulated, operation: 'submit' }), 2);
    assert.ok(sample(text, upstream, { ...simulated, operation: 'status' }) >= 2);
    assert.ok(sample(text, upstream, { ...simulated, operation: 'download' }) >= 1);
    assert.match(text, /# TYPE reelpostly_upstream_errors_total counter/);
    assert.ok(sample(text, 'reelpostly_process_resident_memory_bytes') > 0);
  });

  it('answers /healthz and /readyz without a key, and keeps them out of the API document', async () => {
    const health = await api(gw.baseUrl, '/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(health.body, { status: 'ok' });
    const ready = await api(gw.baseUrl, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: 'ok', checks: { store: 'ok', blobs: 'ok' } });
    const doc = (await api(gw.baseUrl, '/openapi.json')).body;
    for (const path of ['/healthz', '/readyz', '/metrics'])
      assert.equal(doc.paths[path], undefined);
  });

  it('/readyz answers 503 naming the dependency that failed', async () => {
    const broken = await startGateway({ worker: false });
    try {
      // A file where the blob directory should be: every write there fails.
      await rm(join(broken.dataDir, 'blobs'), { recursive: true, force: true });
      await writeFile(join(broken.dataDir, 'blobs'), 'not a directory');
      const blobsDown = await api(broken.baseUrl, '/readyz');
      assert.equal(blobsDown.status, 503);
      assert.deepEqual(blobsDown.body, {
        status: 'unavailable',
        checks: { store: 'ok', blobs: 'failed' },
      });
      await broken.services.store.close();
      const bothDown = await api(broken.baseUrl, '/readyz');
      assert.equal(bothDown.status, 503);
      assert.deepEqual(bothDown.body.checks, { store: 'failed', blobs: 'failed' });
      assert.equal((await api(broken.baseUrl, '/healthz')).status, 200, 'alive, not ready');
    } finally {
      await broken.close().catch(() => {});
    }
  });
});

describe('metrics behind a token', () => {
  it('answers /metrics only with the bearer token; health stays open', async () => {
    const gw = await startGateway({ env: { REELPOSTLY_METRICS_TOKEN: 'scrape-s3cret' } });
    try {
      const scrape = (authorization?: string) =>
        fetch(`${gw.baseUrl}/metrics`, authorization ? { headers: { authorization } } : {});
      for (const authorization of [undefined, 'Bearer wrong', 'scrape-s3cret', 'Bearer ']) {
        const refused = await scrape(authorization);
        assert.equal(refused.status, 401, String(authorization));
        assert.match(refused.headers.get('www-authenticate') ?? '', /^Bearer/);
        assert.deepEqual(await refused.json(), { error: 'Missing or invalid metrics token' });
      }
      const ok = await scrape('Bearer scrape-s3cret');
      assert.equal(ok.status, 200);
      assert.match(await ok.text(), /reelpostly_http_request_duration_seconds/);
      assert.equal((await fetch(`${gw.baseUrl}/healthz`)).status, 200);
      assert.equal((await fetch(`${gw.baseUrl}/readyz`)).status, 200);
    } finally {
      await gw.close();
    }
  });
});

describe('jobs by state', () => {
  it('reports the store-wide count of unfinished jobs at each scrape', async () => {
    // A manual clock and no worker: jobs stay where generate leaves them.
    const gw = await startGateway({ clock: new ManualClock() });
    try {
      const before = await metricsText(gw.baseUrl);
      assert.equal(sample(before, 'reelpostly_jobs', { state: 'queued' }), 0);
      assert.equal(sample(before, 'reelpostly_jobs', { state: 'in_progress' }), 0);
      const t = await gw.tenant({ credits: 10 });
      for (let index = 0; index < 3; index += 1) {
        const res = await api(gw.baseUrl, '/video/generate', {
          key: t.apiKey,
          body: { prompt: `scene ${index}` },
        });
        assert.equal(res.status, 200);
      }
      const after = await metricsText(gw.baseUrl);
      const unfinished =
        sample(after, 'reelpostly_jobs', { state: 'queued' }) +
        sample(after, 'reelpostly_jobs', { state: 'in_progress' });
      assert.equal(unfinished, 3);
    } finally {
      await gw.close();
    }
  });
});

describe('request logs', () => {
  it("carry the request id and the caller's tenant and key, per request", async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-logs-'));
    const lines: Record<string, unknown>[] = [];
    const services = createServices(
      loadConfig({ REELPOSTLY_DATA_DIR: dataDir, REELPOSTLY_DEMO: 'false', LOG_LEVEL: 'info' }),
      {
        logger: pino({ level: 'info' }, { write: (line: string) => lines.push(JSON.parse(line)) }),
      },
    );
    const app = await buildApp(services);
    try {
      const tenants = await Promise.all(
        ['a', 'b'].map((name) =>
          services.accounts.createTenant({ email: `${name}@example.com`, planId: 'starter' }),
        ),
      );
      for (const [index, { apiKey }] of tenants.entries()) {
        const res = await app.inject({
          url: '/video/status/video_missing',
          headers: { 'x-api-key': apiKey.plaintext, 'x-request-id': `trace-${index}` },
        });
        assert.equal(res.statusCode, 404);
      }
      const anonymous = await app.inject({
        url: '/video/status/video_missing',
        headers: { 'x-request-id': 'trace-anonymous' },
      });
      assert.equal(anonymous.statusCode, 401);
      const completed = (reqId: string) =>
        lines.find((line) => line.reqId === reqId && line.msg === 'request completed');
      for (const [index, { tenant, apiKey }] of tenants.entries()) {
        const line = completed(`trace-${index}`);
        assert.equal(line?.tenantId, tenant.tenantId);
        assert.equal(line?.keyId, apiKey.key.keyId);
      }
      const line = completed('trace-anonymous');
      assert.ok(line, 'the unauthenticated request is logged');
      assert.equal(line.tenantId, undefined, 'no bindings leak from earlier requests');
    } finally {
      await app.close();
      await services.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('audit log of operator actions', () => {
  let dataDir = '';
  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-audit-'));
  });
  after(() => rm(dataDir, { recursive: true, force: true }));
  const actor = `cli:${userInfo().username}`;

  /** The real CLI process: slow to start, so used for the steps that prove the wiring. */
  const cli = async (...args: string[]): Promise<string> => {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, ...args], {
      env: { ...process.env, REELPOSTLY_DATA_DIR: dataDir },
    });
    return stdout;
  };
  /** The same commands in-process, with the services the CLI would build. */
  const inProcess = async (...args: string[]): Promise<string> => {
    let out = '';
    const program = buildProgram({
      io: { out: (text) => (out += `${text}\n`) },
      serve: async () => {},
      withServices: async (fn) => {
        const config = loadConfig({ REELPOSTLY_DATA_DIR: dataDir });
        const services = createServices(config, { logger: pino({ level: 'silent' }), actor });
        try {
          await services.store.migrate();
          return await fn(services);
        } finally {
          await services.close();
        }
      },
    });
    await program.parseAsync(args, { from: 'user' });
    return out;
  };

  it('records each CLI action with its actor, newest first, by tenant or overall', async () => {
    const created = JSON.parse(
      await cli('tenants', 'create', '--email', 'ops@example.com', '--credits', '5', '--json'),
    );
    const tenantId: string = created.tenantId;
    const other = JSON.parse(
      await inProcess('tenants', 'create', '--email', 'b@example.com', '--json'),
    );
    await inProcess('credits', 'add', tenantId, '20', '--reason', 'goodwill');
    const key = JSON.parse(await inProcess('keys', 'create', tenantId, '--name', 'ci', '--json'));
    await inProcess('keys', 'revoke', key.keyId);
    await inProcess('tenants', 'suspend', tenantId);
    await inProcess('tenants', 'activate', tenantId);
    await inProcess('tenants', 'set-plan', tenantId, 'pro');
    await inProcess('tenants', 'cancel', tenantId);

    const entries = JSON.parse(await cli('audit', '--tenant', tenantId, '--json'));
    assert.deepEqual(
      entries.map((e: { action: string }) => e.action),
      [
        'tenant.cancelled',
        'tenant.plan_changed',
        'tenant.activated',
        'tenant.suspended',
        'key.revoked',
        'key.created',
        'credits.added',
        'key.created',
        'credits.added',
        'tenant.created',
      ],
    );
    for (const entry of entries) {
      assert.equal(entry.actor, actor);
      assert.equal(entry.tenantId, tenantId);
    }
    const byAction = (action: string) =>
      entries.find((e: { action: string }) => e.action === action);
    assert.deepEqual(byAction('tenant.plan_changed').details, { from: 'starter', to: 'pro' });
    assert.deepEqual(byAction('tenant.suspended').details, { from: 'active' });
    assert.equal(byAction('key.revoked').target, key.keyId);
    assert.deepEqual(byAction('credits.added').details, {
      amount: 20,
      reason: 'goodwill',
      balance: 25,
    });
    assert.doesNotMatch(JSON.stringify(entries), /rp_live_[0-9A-Za-z]{20,}/, 'no key plaintext');

    const recent = JSON.parse(await inProcess('audit', '--limit', '2', '--json'));
    assert.deepEqual(
      recent.map((e: { action: string }) => e.action),
      ['tenant.cancelled', 'tenant.plan_changed'],
    );
    const table = await inProcess('audit', '--tenant', other.tenantId);
    assert.match(table, /^AT\s+ACTOR\s+ACTION\s+TENANT\s+TARGET\s+DETAILS/);
    assert.match(table, /tenant\.created/);
    assert.match(table, /key\.created/);
  });
});

describe('graceful shutdown', () => {
  let dataDir = '';
  let child: ChildProcess | undefined;
  after(async () => {
    child?.kill('SIGKILL');
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('on SIGTERM finishes the request in flight, then exits 0', async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-shutdown-'));
    const port = await freePort();
    const server = spawn(process.execPath, ['--import', 'tsx', 'src/main/server.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        LOG_LEVEL: 'warn',
        PORT: String(port),
        HOST: '127.0.0.1',
        REELPOSTLY_DATA_DIR: dataDir,
        REELPOSTLY_SIMULATED_SECONDS: '1',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = server;
    let output = '';
    server.stdout?.on('data', (chunk) => {
      output += chunk;
    });
    server.stderr?.on('data', (chunk) => {
      output += chunk;
    });
    const exited = new Promise<number | null>((resolve) =>
      server.once('exit', (code) => resolve(code)),
    );
    const apiKey = await eventually(async () => /API key: (rp_live_\w+)/.exec(output)?.[1], {
      timeoutMs: 30_000,
    });

    // Headers and half the body now; the rest only after SIGTERM has arrived.
    const body = JSON.stringify({ prompt: 'Tea farms at sunrise, cinematic' });
    const events: string[] = [];
    const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          method: 'POST',
          path: '/video/generate',
          headers: {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
            'x-api-key': apiKey,
          },
        },
        (res) => {
          let text = '';
          res.on('data', (chunk) => {
            text += chunk;
          });
          res.on('end', () => {
            events.push('response');
            resolve({ status: res.statusCode ?? 0, body: text });
          });
        },
      );
      req.on('error', reject);
      req.write(body.slice(0, 10));
      setTimeout(() => {
        events.push('sigterm');
        server.kill('SIGTERM');
        setTimeout(() => req.end(body.slice(10)), 300);
      }, 300);
    });
    void exited.then(() => events.push('exit'));

    const res = await response;
    assert.equal(res.status, 200, res.body);
    assert.match(JSON.parse(res.body).video_id, /^video_/);
    assert.equal(await exited, 0, output);
    assert.deepEqual(events, ['sigterm', 'response', 'exit']);
    child = undefined;
  });
});
