import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { api, startGateway, type TestGateway } from '../support/gateway.ts';

const BIN = new URL('../../bin/reelpostly.js', import.meta.url).pathname;
const run = promisify(execFile);

describe('operator CLI on the same store as a running server', () => {
  let dataDir = '';
  let gw: TestGateway;
  const cli = async (...args: string[]) => {
    try {
      const { stdout } = await run(process.execPath, [BIN, ...args], {
        env: { ...process.env, REELPOSTLY_DATA_DIR: dataDir },
      });
      return { code: 0, stdout, stderr: '' };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };
  const json = async (...args: string[]) => {
    const res = await cli(...args, '--json');
    assert.equal(res.code, 0, res.stderr);
    return JSON.parse(res.stdout);
  };

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-cli-'));
    gw = await startGateway({ dataDir });
  });
  after(async () => {
    await gw.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('creates a tenant whose key works against the server at once', async () => {
    const created = await json(
      'tenants',
      'create',
      '--email',
      'ops@example.com',
      '--plan',
      'pro',
      '--credits',
      '7',
    );
    assert.match(created.tenantId, /^tenant_/);
    assert.match(created.apiKey, /^rp_live_[0-9A-Za-z]{32,}$/);
    assert.equal(created.credits, 7);
    assert.equal(created.planId, 'pro');
    const res = await api(gw.baseUrl, '/video/generate', {
      key: created.apiKey,
      body: { prompt: 'cli made me' },
    });
    assert.equal(res.status, 200);
    assert.equal(res.body.credits_remaining, 6);

    const human = await cli('tenants', 'show', created.tenantId);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /TENANTID\s+EMAIL\s+PLAN\s+STATUS\s+CREDITS/);
    assert.match(
      human.stdout,
      new RegExp(`${created.tenantId}\\s+ops@example.com\\s+pro\\s+active\\s+6`),
    );
    assert.doesNotMatch(human.stdout, new RegExp(created.apiKey));

    const shown = await json('tenants', 'show', created.tenantId);
    assert.equal(shown.credits, 6);
    assert.equal(shown.usage[0].requests, 1);
    assert.equal(shown.keys[0].hash, undefined);

    const videos = await json('videos', 'list', '--tenant', created.tenantId);
    assert.equal(videos.length, 1);
    assert.equal(videos[0].jobId, res.body.video_id);
  });

  it('suspends, activates, re-plans; keys create/list/revoke; credits add/show/ledger', async () => {
    const { tenantId, apiKey } = await json('tenants', 'create', '--email', 'b@example.com');
    assert.equal((await json('tenants', 'suspend', tenantId)).status, 'suspended');
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 403);
    assert.equal((await json('tenants', 'activate', tenantId)).status, 'active');
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: apiKey })).status, 404);
    assert.equal((await json('tenants', 'set-plan', tenantId, 'enterprise')).planId, 'enterprise');
    const badPlan = await cli('tenants', 'set-plan', tenantId, 'gold');
    assert.equal(badPlan.code, 1);
    assert.match(badPlan.stderr, /Unknown plan: gold/);

    const key = await json('keys', 'create', tenantId, '--name', 'ci');
    assert.equal(key.name, 'ci');
    const keys = await json('keys', 'list', tenantId);
    assert.deepEqual(
      keys.map((k: { name: string }) => k.name),
      ['default', 'ci'],
    );
    await json('keys', 'revoke', key.keyId);
    assert.equal((await api(gw.baseUrl, '/video/status/video_x', { key: key.apiKey })).status, 401);

    assert.equal(
      (await json('credits', 'add', tenantId, '25', '--reason', 'invoice 7')).balance,
      25,
    );
    assert.equal((await json('credits', 'add', tenantId, '-5')).balance, 20);
    const tooMuch = await cli('credits', 'add', tenantId, '-21');
    assert.equal(tooMuch.code, 1);
    assert.match(tooMuch.stderr, /Insufficient credits/);
    assert.deepEqual(await json('credits', 'show', tenantId), { tenantId, credits: 20 });
    const ledger = await json('credits', 'ledger', tenantId);
    assert.deepEqual(
      ledger.items.map((e: { kind: string; amount: number; reason: string }) => [
        e.kind,
        e.amount,
        e.reason,
      ]),
      [
        ['grant', 25, 'invoice 7'],
        ['adjustment', -5, 'operator adjustment'],
      ],
    );
    const table = await cli('credits', 'ledger', tenantId);
    assert.match(table.stdout, /AT\s+KIND\s+AMOUNT\s+BALANCE/);

    const list = await json('tenants', 'list');
    assert.ok(list.some((t: { tenantId: string }) => t.tenantId === tenantId));
  });

  it('reports mistakes in one line with a non-zero exit', async () => {
    const missing = await cli('credits', 'show', 'tenant_nope');
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr.trim(), 'error: No such tenant: tenant_nope');
    const badEmail = await cli('tenants', 'create', '--email', 'not-an-email');
    assert.equal(badEmail.code, 1);
    assert.match(badEmail.stderr, /Invalid email/);
  });
});
