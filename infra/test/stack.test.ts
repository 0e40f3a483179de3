import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import {
  INDEX,
  TTL_ATTRIBUTE,
  tableDefinition,
} from '../../src/stores/dynamodb/table-definition.ts';
import { synth } from './synth.ts';

type Resource = { Properties: Record<string, unknown> };

describe('ReelpostlyStack (bundled, default props)', () => {
  let template: Template;
  let assemblyDir: string;
  let started: number;

  before(() => {
    started = Date.now();
    const result = synth();
    template = result.template;
    assemblyDir = result.assembly.directory;
  });

  it('synthesizes with bundling in well under a minute', () => {
    assert.ok(Date.now() - started < 60_000);
  });

  it('creates the table exactly as tableDefinition() describes it', () => {
    const definition = tableDefinition('x');
    template.resourceCountIs('AWS::DynamoDB::Table', 1);
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      UpdateReplacePolicy: 'Retain',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        TimeToLiveSpecification: { AttributeName: TTL_ATTRIBUTE, Enabled: true },
        KeySchema: definition.KeySchema,
        AttributeDefinitions: Match.arrayEquals(
          (definition.AttributeDefinitions ?? []).map((a) => Match.objectEquals(a)),
        ),
        GlobalSecondaryIndexes: (definition.GlobalSecondaryIndexes ?? []).map((gsi) => ({
          IndexName: gsi.IndexName,
          KeySchema: gsi.KeySchema,
          Projection: gsi.Projection,
        })),
      },
    });
    const [table] = Object.values(template.findResources('AWS::DynamoDB::Table')) as Resource[];
    assert.ok(table);
    const names = (table.Properties.GlobalSecondaryIndexes as { IndexName: string }[]).map(
      (g) => g.IndexName,
    );
    assert.deepEqual(names.sort(), Object.values(INDEX).sort());
  });

  it('creates a private, encrypted, TLS-only bucket with expiry and upload cleanup', () => {
    template.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      Properties: {
        BucketEncryption: {
          ServerSideEncryptionConfiguration: [
            { ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } },
          ],
        },
        PublicAccessBlockConfiguration: {
          BlockPublicAcls: true,
          BlockPublicPolicy: true,
          IgnorePublicAcls: true,
          RestrictPublicBuckets: true,
        },
        LifecycleConfiguration: {
          Rules: Match.arrayWith([
            Match.objectLike({ AbortIncompleteMultipartUpload: { DaysAfterInitiation: 1 } }),
            Match.objectLike({ Prefix: 'videos-store/', ExpirationInDays: 90, Status: 'Enabled' }),
          ]),
        },
      },
    });
    template.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Deny',
            Condition: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ]),
      },
    });
  });

  it('runs both handlers on Node 22 arm64 with the AWS wiring', () => {
    const functions = template.findResources('AWS::Lambda::Function', {
      Properties: { Runtime: 'nodejs22.x', Architectures: ['arm64'] },
    }) as Record<string, Resource>;
    const byHandler = new Map(
      Object.values(functions).map((f) => [f.Properties.Handler as string, f.Properties]),
    );
    assert.deepEqual([...byHandler.keys()].sort(), ['index.http', 'index.worker']);
    for (const properties of byHandler.values()) {
      const variables = (properties.Environment as { Variables: Record<string, unknown> })
        .Variables;
      assert.equal(variables.REELPOSTLY_STORE, 'dynamodb');
      assert.equal(variables.REELPOSTLY_BLOBS, 's3');
      assert.equal(variables.REELPOSTLY_SSM_PREFIX, '/reelpostly');
      assert.equal(variables.REELPOSTLY_DATA_DIR, '/tmp/reelpostly');
      assert.equal(variables.REELPOSTLY_DEMO, 'false');
      assert.equal(variables.REELPOSTLY_WORKER, 'false');
      assert.equal(variables.REELPOSTLY_CATALOG, '/var/task/config/catalog.json');
      assert.match(JSON.stringify(variables.REELPOSTLY_DYNAMODB_TABLE), /"Ref":"VideosTable/);
      assert.match(JSON.stringify(variables.REELPOSTLY_S3_BUCKET), /"Ref":"VideoBucket/);
      assert.ok(JSON.stringify(variables.REELPOSTLY_PUBLIC_URL).includes('execute-api'));
    }
    const worker = byHandler.get('index.worker');
    assert.ok(worker);
    assert.equal(worker.Timeout, 90);
    const { Variables } = worker.Environment as { Variables: Record<string, unknown> };
    assert.equal(Variables.REELPOSTLY_WORKER_BUDGET_MS, '60000');
  });

  it('bundles one ESM file with the catalog and the sample assets beside it', () => {
    const manifest = JSON.parse(
      readFileSync(join(assemblyDir, 'ReelPostly.assets.json'), 'utf8'),
    ) as { files: Record<string, { source: { path: string; packaging?: string } }> };
    const code = Object.values(manifest.files).find((f) => f.source.packaging === 'zip');
    assert.ok(code, 'a zipped code asset');
    const dir = join(assemblyDir, code.source.path);
    const bundle = readFileSync(join(dir, 'index.mjs'), 'utf8');
    assert.ok(bundle.startsWith("import { createRequire } from 'module';"));
    assert.doesNotMatch(bundle, /from\s*"better-sqlite3"/);
    assert.ok(existsSync(join(dir, 'config/catalog.json')));
    assert.ok(existsSync(join(dir, 'assets/portrait.mp4')));
    assert.ok(existsSync(join(dir, 'assets/landscape.mp4')));
  });

  it('serves binary bodies, throttles the stage and writes JSON access logs', () => {
    template.hasResourceProperties('AWS::ApiGateway::RestApi', {
      BinaryMediaTypes: ['*/*'],
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: 'prod',
      MethodSettings: Match.arrayWith([
        Match.objectLike({ ThrottlingRateLimit: 50, ThrottlingBurstLimit: 100 }),
      ]),
      AccessLogSetting: {
        DestinationArn: Match.anyValue(),
        Format: Match.stringLikeRegexp('"requestId":"\\$context.requestId"'),
      },
    });
    template.hasResourceProperties('AWS::ApiGateway::Method', {
      HttpMethod: 'OPTIONS',
      Integration: { Type: 'MOCK', ContentHandling: 'CONVERT_TO_TEXT' },
    });
    template.resourceCountIs('AWS::ApiGateway::DomainName', 0);
  });

  it('ticks the worker every minute', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [
        Match.objectLike({ Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Worker'), 'Arn'] } }),
      ],
    });
  });

  it('alarms on API 5XX, function errors and throttles, DynamoDB throttles; has a dashboard', () => {
    template.resourceCountIs('AWS::CloudWatch::Alarm', 6);
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: '5XXError' });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'Throttles' });
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  });

  it('grants no wildcard action and no `*` resource', () => {
    const policies = template.findResources('AWS::IAM::Policy') as Record<string, Resource>;
    assert.ok(Object.keys(policies).length >= 2);
    for (const [id, policy] of Object.entries(policies)) {
      const document = policy.Properties.PolicyDocument as { Statement: Record<string, unknown>[] };
      for (const statement of document.Statement) {
        const actions = [statement.Action].flat() as string[];
        for (const action of actions) {
          assert.doesNotMatch(action, /\*/, `${id}: action ${action}`);
        }
        for (const resource of [statement.Resource].flat()) {
          assert.notEqual(resource, '*', `${id}: resource *`);
          assert.ok(resource !== undefined, `${id}: statement without a resource`);
        }
      }
    }
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: 'ssm:GetParametersByPath',
            Resource: {
              'Fn::Join': ['', Match.arrayWith([':parameter/reelpostly'])],
            },
          }),
        ]),
      },
    });
    template.resourceCountIs('AWS::IAM::ManagedPolicy', 0);
    for (const role of Object.values(template.findResources('AWS::IAM::Role')) as Resource[]) {
      assert.equal(role.Properties.ManagedPolicyArns, undefined);
    }
  });
});
