import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { type DynamoDbLocal, startDynamoDbLocal } from '../support/dynamodb-local.ts';
import { api, eventually, startGateway, type TestGateway } from '../support/gateway.ts';
import { startS3, type TestS3 } from '../support/s3rver.ts';

const MP4 = new URL('../../assets/landscape.mp4', import.meta.url);

/**
 * The original API end to end on the AWS adapters, chosen the way operators choose
 * them: environment variables read by createServices and by the AWS SDK itself.
 */
describe('original API on DynamoDB Local + s3rver', () => {
  let dynamo: DynamoDbLocal;
  let s3: TestS3;
  let gw: TestGateway;

  before(async () => {
    [dynamo, s3] = await Promise.all([startDynamoDbLocal(), startS3()]);
    Object.assign(process.env, {
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
      AWS_ENDPOINT_URL_DYNAMODB: dynamo.endpoint,
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_REQUEST_CHECKSUM_CALCULATION: 'WHEN_REQUIRED',
      AWS_RESPONSE_CHECKSUM_VALIDATION: 'WHEN_REQUIRED',
    });
    gw = await startGateway({
      env: {
        REELPOSTLY_STORE: 'dynamodb',
        REELPOSTLY_DYNAMODB_TABLE: `e2e-${randomBytes(4).toString('hex')}`,
        REELPOSTLY_BLOBS: 's3',
        REELPOSTLY_S3_BUCKET: s3.bucket,
        REELPOSTLY_S3_FORCE_PATH_STYLE: 'true',
      },
    });
  });
  after(async () => {
    await gw?.close();
    await Promise.all([dynamo?.stop(), s3?.stop()]);
  });

  it('generate -> poll -> completed -> the presigned S3 URL serves the MP4', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 10 });
    const created = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: {
        prompt: 'Tea farms at sunrise, cinematic',
        model: 'sora-2',
        seconds: 8,
        size: '1280x720',
      },
    });
    assert.equal(created.status, 200);
    assert.equal(created.body.tenant, tenantId);
    assert.equal(created.body.credits_remaining, 9);
    const done = await eventually(async () => {
      const res = await api(gw.baseUrl, `/video/status/${created.body.video_id}`, { key: apiKey });
      assert.equal(res.status, 200);
      return res.body.status === 'completed' ? res : null;
    });
    const expected = await readFile(MP4);
    assert.equal(done.body.size, expected.length);
    const url = new URL(done.body.url);
    assert.equal(url.origin, new URL(s3.endpoint).origin);
    assert.ok(url.searchParams.get('X-Amz-Signature'));
    assert.equal(url.searchParams.get('X-Amz-Expires'), '604800');
    const file = await fetch(url);
    assert.equal(file.status, 200);
    assert.ok(Buffer.from(await file.arrayBuffer()).equals(expected));
  });

  it('300 parallel generates against 50 credits: exactly 50 accepted, ledger balanced', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 50, plan: 'enterprise' });
    const results = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        api(gw.baseUrl, '/video/generate', {
          key: apiKey,
          body: { prompt: `race ${i}`, seconds: 4 },
        }),
      ),
    );
    assert.equal(results.filter((r) => r.status === 200).length, 50);
    assert.equal(results.filter((r) => r.status === 402).length, 250);
    const { items } = await gw.services.store.listEntries(tenantId, { limit: 1000 });
    const balance = await gw.services.store.getBalance(tenantId);
    assert.equal(balance, 0);
    assert.equal(
      items.reduce((s, e) => s + e.amount, 0),
      balance,
    );
    assert.equal(items.filter((e) => e.kind === 'charge').length, 50);
  });

  it('a moderation failure is refunded exactly once', async () => {
    const { tenantId, apiKey } = await gw.tenant({ credits: 2 });
    const created = await api(gw.baseUrl, '/video/generate', {
      key: apiKey,
      body: { prompt: 'x [[simulate:moderation_blocked]]', seconds: 4 },
    });
    await eventually(async () => {
      const res = await api(gw.baseUrl, `/video/status/${created.body.video_id}`, { key: apiKey });
      return res.body.status === 'failed';
    });
    assert.equal(await gw.services.store.getBalance(tenantId), 2);
  });
});
