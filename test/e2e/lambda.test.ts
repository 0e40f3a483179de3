import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { loadConfig } from '../../src/config.ts';
import { createServices } from '../../src/services.ts';
import { type SsmEmulator, startSsmEmulator } from '../emulators/ssm-emulator.ts';
import { eventually, freePort } from '../support/gateway.ts';

const MP4 = new URL('../../assets/landscape.mp4', import.meta.url);
const PUBLIC_URL = 'https://abc123.execute-api.us-east-1.amazonaws.com';
const SIGNING_SECRET = 'secret-from-parameter-store';
const EXTRA = Array.from(
  { length: 11 },
  (_, i) => `REELPOSTLY_SSM_TEST_${String(i).padStart(2, '0')}`,
);

type Lambda = typeof import('../../src/main/lambda.ts');

/** A fake invocation context; `remainingMs` is what the runtime would report. */
function lambdaContext(remainingMs = 30_000): Context {
  const deadline = Date.now() + remainingMs;
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: 'reelpostly-test',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:reelpostly-test',
    memoryLimitInMB: '1024',
    awsRequestId: randomUUID(),
    logGroupName: '/aws/lambda/reelpostly-test',
    logStreamName: '2026/12/04/[$LATEST]test',
    getRemainingTimeInMillis: () => deadline - Date.now(),
    done: () => {},
    fail: () => {},
    succeed: () => {},
  };
}

/** An API Gateway REST API proxy event (payload 1.0) for `{proxy+}` on stage `prod`. */
function restEvent(
  method: string,
  target: string,
  options: { headers?: Record<string, string>; body?: unknown } = {},
): APIGatewayProxyEvent {
  const url = new URL(target, PUBLIC_URL);
  const headers: Record<string, string> = {
    Host: url.host,
    'User-Agent': 'node-test',
    'X-Forwarded-For': '203.0.113.7',
    'X-Forwarded-Proto': 'https',
    ...options.headers,
  };
  if (options.body !== undefined) headers['Content-Type'] = 'application/json';
  const query = Object.fromEntries(url.searchParams);
  const hasQuery = Object.keys(query).length > 0;
  return {
    resource: '/{proxy+}',
    path: url.pathname,
    httpMethod: method,
    headers,
    multiValueHeaders: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, [v]])),
    queryStringParameters: hasQuery ? query : null,
    multiValueQueryStringParameters: hasQuery
      ? Object.fromEntries(Object.entries(query).map(([k, v]) => [k, [v]]))
      : null,
    pathParameters: { proxy: url.pathname.slice(1) },
    stageVariables: null,
    body: options.body === undefined ? null : JSON.stringify(options.body),
    isBase64Encoded: false,
    requestContext: {
      accountId: '000000000000',
      apiId: 'abc123',
      authorizer: null,
      domainName: url.host,
      domainPrefix: 'abc123',
      httpMethod: method,
      path: `/prod${url.pathname}`,
      protocol: 'HTTP/1.1',
      requestId: randomUUID(),
      requestTimeEpoch: Date.now(),
      resourceId: 'proxy1',
      resourcePath: '/{proxy+}',
      stage: 'prod',
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: null,
        apiKeyId: null,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: '203.0.113.7',
        user: null,
        userAgent: 'node-test',
        userArn: null,
      },
    },
  };
}

function json(res: APIGatewayProxyResult) {
  assert.equal(res.isBase64Encoded, false);
  return JSON.parse(res.body);
}

/**
 * The Lambda entry points in-process, as the runtime calls them: one cold start for the
 * whole file (module state is what Lambda keeps between invocations).
 */
describe('Lambda handlers (API Gateway REST + EventBridge worker, secrets from SSM)', () => {
  let ssm: SsmEmulator;
  let dataDir: string;
  let lambda: Lambda;
  let apiKey: string;

  before(async () => {
    ssm = await startSsmEmulator([
      { name: '/reelpostly/REELPOSTLY_SIGNING_SECRET', value: SIGNING_SECRET },
      { name: '/reelpostly/OPENAI_API_KEY', value: 'sk-from-ssm' },
      { name: '/reelpostly/LOG_LEVEL', value: 'debug', type: 'String' },
      ...EXTRA.map((name, i) => ({ name: `/reelpostly/${name}`, value: `value-${i}` })),
      { name: '/reelpostly/nested/REELPOSTLY_SSM_NESTED', value: 'too deep' },
      { name: '/other-app/REELPOSTLY_SSM_OTHER', value: 'not ours' },
    ]);
    dataDir = await mkdtemp(join(tmpdir(), 'reelpostly-lambda-'));
    for (const name of ['OPENAI_API_KEY', 'REELPOSTLY_SIGNING_SECRET', ...EXTRA]) {
      delete process.env[name];
    }
    Object.assign(process.env, {
      AWS_REGION: 'us-east-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_ENDPOINT_URL_SSM: ssm.endpoint,
      REELPOSTLY_SSM_PREFIX: '/reelpostly/',
      REELPOSTLY_DATA_DIR: dataDir,
      REELPOSTLY_PUBLIC_URL: PUBLIC_URL,
      REELPOSTLY_SIMULATED_SECONDS: '1',
      // The OpenAI key from SSM configures that upstream; nothing listens on this port,
      // so sora-2's first route is refused and the job fails over to the simulated one.
      OPENAI_BASE_URL: `http://127.0.0.1:${await freePort()}/v1`,
      REELPOSTLY_SIMULATED: 'true',
      REELPOSTLY_POLL_INTERVAL_MS: '100',
      REELPOSTLY_WORKER_INTERVAL_MS: '50',
      REELPOSTLY_WORKER_BUDGET_MS: '2000',
      REELPOSTLY_DEMO: 'false',
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    });
    lambda = await import('../../src/main/lambda.ts');
  });
  after(async () => {
    await ssm?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('answers 401 without a key, with the seed error body and x-request-id', async () => {
    const event = restEvent('POST', '/video/generate', { body: { prompt: 'x' } });
    const res = await lambda.http(event, lambdaContext());
    assert.equal(res.statusCode, 401);
    assert.deepEqual(json(res), { error: 'Missing API key' });
    assert.equal(res.headers?.['x-request-id'], event.requestContext.requestId);
  });

  it('loaded the SSM parameters once into the environment, existing variables winning', () => {
    assert.equal(process.env.REELPOSTLY_SIGNING_SECRET, SIGNING_SECRET);
    assert.equal(process.env.OPENAI_API_KEY, 'sk-from-ssm');
    assert.equal(process.env.LOG_LEVEL, process.env.TEST_LOG_LEVEL ?? 'silent');
    for (const [i, name] of EXTRA.entries()) assert.equal(process.env[name], `value-${i}`);
    assert.equal(process.env.REELPOSTLY_SSM_NESTED, undefined);
    assert.equal(process.env.REELPOSTLY_SSM_OTHER, undefined);
    // 14 direct children at 10 a page: two pages, decrypted, non-recursive.
    assert.equal(ssm.requests.length, 2);
    for (const { target, body } of ssm.requests) {
      assert.equal(target, 'AmazonSSM.GetParametersByPath');
      assert.equal(body.Path, '/reelpostly');
      assert.equal(body.WithDecryption, true);
      assert.equal(body.Recursive, false);
    }
    assert.ok(ssm.requests[1]?.body.NextToken);
    // The gateway signs with the secret from SSM instead of generating one.
    assert.equal(existsSync(join(dataDir, 'signing-secret')), false);
  });

  it('generate -> worker ticks -> completed -> the signed /files URL returns the MP4 as base64', async () => {
    const admin = createServices(loadConfig(process.env));
    try {
      const created = await admin.accounts.createTenant({
        email: 'lambda@example.com',
        planId: 'starter',
        credits: 10,
      });
      apiKey = created.apiKey.plaintext;
    } finally {
      await admin.close();
    }

    const generated = await lambda.http(
      restEvent('POST', '/video/generate', {
        headers: { 'x-api-key': apiKey },
        body: { prompt: 'Tea farms at sunrise', model: 'sora-2', seconds: 8, size: '1280x720' },
      }),
      lambdaContext(),
    );
    assert.equal(generated.statusCode, 200, generated.body);
    const { video_id: videoId, credits_remaining: remaining } = json(generated);
    assert.equal(remaining, 9);

    const done = await eventually(async () => {
      // 300 ms of ticking per invocation: the runtime reports the margin plus that.
      const summary = await lambda.worker({}, lambdaContext(10_000 + 300));
      assert.ok(summary.ticks >= 1);
      const res = await lambda.http(
        restEvent('GET', `/video/status/${videoId}`, { headers: { 'x-api-key': apiKey } }),
        lambdaContext(),
      );
      assert.equal(res.statusCode, 200);
      const body = json(res);
      return body.status === 'completed' ? body : null;
    });

    const expected = await readFile(MP4);
    const url = new URL(done.url);
    assert.equal(url.origin, PUBLIC_URL);
    const file = await lambda.http(restEvent('GET', url.pathname + url.search), lambdaContext());
    assert.equal(file.statusCode, 200);
    assert.equal(file.headers?.['content-type'], 'video/mp4');
    assert.equal(file.isBase64Encoded, true);
    assert.ok(Buffer.from(file.body, 'base64').equals(expected));

    assert.equal(ssm.requests.length, 2, 'SSM is read once per cold start');
  });

  it('the worker stops at its budget and starts nothing inside the safety margin', async () => {
    const started = Date.now();
    const budgeted = await lambda.worker({}, lambdaContext(60_000));
    const elapsed = Date.now() - started;
    assert.ok(budgeted.ticks >= 2, `ticks: ${budgeted.ticks}`);
    assert.ok(elapsed >= 1500 && elapsed < 4000, `elapsed ${elapsed} ms`);

    assert.deepEqual(await lambda.worker({}, lambdaContext(9_000)), { ticks: 0, jobs: 0 });
  });
});
