import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { type DynamoDbLocal, startDynamoDbLocal } from '../support/dynamodb-local.ts';

const BIN = new URL('../../bin/reelpostly.js', import.meta.url).pathname;
const run = promisify(execFile);

/** The operator commands that replace the original's `aws dynamodb` scripts, on DynamoDB. */
describe('operator CLI on the DynamoDB store', () => {
  let dynamo: DynamoDbLocal;
  let dataDir = '';
  let env: NodeJS.ProcessEnv;

  const json = async (...args: string[]) => {
    const { stdout } = await run(process.execPath, [BIN, ...args, '--json'], { env });
    return JSON.parse(stdout);
  };

  before(async () => {
    dynamo = await startDynamoDbLocal();
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-cli-ddb-'));
    env = {
      ...process.env,
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      REELPOSTLY_STORE: 'dynamodb',
      REELPOSTLY_DYNAMODB_TABLE: `cli-${randomBytes(4).toString('hex')}`,
      REELPOSTLY_DATA_DIR: dataDir,
    };
  });
  after(async () => {
    await dynamo?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('migrate creates the table; tenants, keys, credits and videos work on it', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'migrate'], { env });
    assert.match(stdout, /current schema/);

    const tenant = await json('tenants', 'create', '--email', 'ddb@example.com', '--credits', '40');
    assert.match(tenant.apiKey, /^rp_live_/);
    assert.equal(tenant.credits, 40);
    assert.equal(
      (await json('credits', 'add', tenant.tenantId, '10', '--reason', 'top-up')).balance,
      50,
    );
    assert.deepEqual(await json('credits', 'show', tenant.tenantId), {
      tenantId: tenant.tenantId,
      credits: 50,
    });
    const ledger = await json('credits', 'ledger', tenant.tenantId);
    assert.deepEqual(
      ledger.items.map((e: { kind: string; amount: number }) => [e.kind, e.amount]),
      [
        ['grant', 40],
        ['grant', 10],
      ],
    );

    const key = await json('keys', 'create', tenant.tenantId, '--name', 'second');
    await json('keys', 'revoke', key.keyId);
    const keys = await json('keys', 'list', tenant.tenantId);
    assert.deepEqual(
      keys.map((k: { name: string; revokedAt: number | null }) => [k.name, k.revokedAt !== null]),
      [
        ['default', false],
        ['second', true],
      ],
    );

    assert.equal((await json('tenants', 'suspend', tenant.tenantId)).status, 'suspended');
    assert.equal((await json('tenants', 'set-plan', tenant.tenantId, 'pro')).planId, 'pro');
    const listed = await json('tenants', 'list');
    assert.deepEqual(
      listed.map((t: { tenantId: string; status: string; planId: string }) => [
        t.tenantId,
        t.status,
        t.planId,
      ]),
      [[tenant.tenantId, 'suspended', 'pro']],
    );
    assert.deepEqual(await json('videos', 'list'), []);
  });
});
