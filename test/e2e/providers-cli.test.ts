import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import { closedPortUrl, startUpstreams, type Upstreams } from '../support/upstreams.ts';

const BIN = new URL('../../bin/reelpostly.js', import.meta.url).pathname;
const run = promisify(execFile);
const CATALOG = JSON.parse(readFileSync(DEFAULT_CATALOG_PATH, 'utf8')) as {
  models: Record<
    string,
    {
      seconds: number[];
      sizes: string[];
      price: { credits: number; per: string };
      routes: Array<{ provider: string; upstreamModel: string; params?: string }>;
    }
  >;
};
const ALL = ['openai', 'openrouter', 'fal', 'replicate'] as const;

interface Checked {
  provider: string;
  reachable: boolean;
  authenticated: boolean;
  detail: string;
}

describe('operator commands about models and providers, against the emulators', () => {
  let up: Upstreams;
  let dataDir = '';
  /** Runs the CLI with only the given env (plus PATH/HOME), so the host's keys never leak in. */
  const cli = async (env: Record<string, string>, ...args: string[]) => {
    try {
      const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          REELPOSTLY_DATA_DIR: dataDir,
          ...env,
        },
      });
      return { code: 0, stdout, stderr };
    } catch (error) {
      const e = error as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  before(async () => {
    up = await startUpstreams();
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-providers-cli-'));
  });
  after(async () => {
    await up.close();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('models --json lists every catalog model with its routes, configured as the env says', async () => {
    for (const configured of [['openrouter', 'fal'], [...ALL]] as const) {
      const res = await cli(up.env(configured), 'models', '--json');
      assert.equal(res.code, 0, res.stderr);
      const models = JSON.parse(res.stdout) as Array<{
        id: string;
        seconds: number[];
        sizes: string[];
        price: unknown;
        routes: Array<{ provider: string; upstreamModel: string; configured: boolean }>;
      }>;
      assert.deepEqual(
        models.map((m) => m.id),
        Object.keys(CATALOG.models),
      );
      for (const model of models) {
        const entry = CATALOG.models[model.id];
        assert.ok(entry);
        assert.deepEqual(model.seconds, entry.seconds);
        assert.deepEqual(model.sizes, entry.sizes);
        assert.deepEqual(model.price, entry.price);
        assert.deepEqual(
          model.routes,
          entry.routes.map((r) => ({
            ...r,
            configured: (configured as readonly string[]).includes(r.provider),
          })),
          model.id,
        );
      }
    }
  });

  it('models without any upstream: only the simulated routes are configured; the table has its columns', async () => {
    const json = await cli({}, 'models', '--json');
    assert.equal(json.code, 0, json.stderr);
    for (const model of JSON.parse(json.stdout) as Array<{
      routes: Array<{ provider: string; configured: boolean }>;
    }>) {
      for (const route of model.routes) {
        assert.equal(route.configured, route.provider === 'simulated');
      }
    }
    const table = await cli(up.env(['fal']), 'models');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /^MODEL\s+PRICE\s+SECONDS\s+SIZES\s+ROUTE\s+CONFIGURED$/m);
    assert.match(
      table.stdout,
      /veo-3\.1\s+5\/second\s+4,6,8\s+\S+\s+1\. openrouter:google\/veo-3\.1\s+no/,
    );
    assert.match(table.stdout, /2\. fal:fal-ai\/veo3\.1 \(veo\)\s+yes/);
  });

  it('providers check --json: reachable and authenticated with the right keys, exit 0', async () => {
    const res = await cli(up.env(ALL), 'providers', 'check', '--json');
    assert.equal(res.code, 0, `${res.stderr}${res.stdout}`);
    const results = JSON.parse(res.stdout) as Checked[];
    assert.deepEqual(results.map((r) => r.provider).sort(), [...ALL].sort());
    for (const r of results) {
      assert.equal(r.reachable, true, `${r.provider}: ${r.detail}`);
      assert.equal(r.authenticated, true, `${r.provider}: ${r.detail}`);
    }
  });

  it('providers check: a wrong key is reachable but not authenticated, exit 1, key not printed', async () => {
    const env = {
      ...up.env(ALL),
      OPENROUTER_API_KEY: 'sk-or-v1-wrong-key-123',
      FAL_KEY: 'wrong-id:wrong-secret-456',
      REPLICATE_API_TOKEN: 'r8_wrongtoken789',
      OPENAI_API_KEY: 'sk-wrong-openai-000',
    };
    const res = await cli(env, 'providers', 'check', '--json');
    assert.equal(res.code, 1);
    const results = JSON.parse(res.stdout) as Checked[];
    assert.equal(results.length, 4);
    for (const r of results) {
      assert.equal(r.reachable, true, `${r.provider}: ${r.detail}`);
      assert.equal(r.authenticated, false, `${r.provider}: ${r.detail}`);
    }
    for (const secret of [
      'wrong-key-123',
      'wrong-secret-456',
      'wrongtoken789',
      'wrong-openai-000',
    ]) {
      assert.ok(!res.stdout.includes(secret), `${secret} leaked`);
    }

    const mixed = await cli(
      { ...up.env(['openrouter', 'fal']), OPENROUTER_API_KEY: 'sk-or-v1-wrong' },
      'providers',
      'check',
    );
    assert.equal(mixed.code, 1);
    assert.match(mixed.stdout, /^PROVIDER\s+REACHABLE\s+AUTHENTICATED\s+DETAIL$/m);
    assert.match(mixed.stdout, /^openrouter\s+yes\s+NO\s+\S/m);
    assert.match(mixed.stdout, /^fal\s+yes\s+yes\s+\S/m);
  });

  it('providers check: an unreachable upstream reads NO / NO with exit 1', async () => {
    const res = await cli(
      { ...up.env(['replicate']), REPLICATE_BASE_URL: await closedPortUrl('/v1') },
      'providers',
      'check',
    );
    assert.equal(res.code, 1);
    assert.match(res.stdout, /^PROVIDER\s+REACHABLE\s+AUTHENTICATED\s+DETAIL$/m);
    assert.match(res.stdout, /^replicate\s+NO\s+NO\s+\S/m);
  });
});
