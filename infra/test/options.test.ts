import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { synth } from './synth.ts';

describe('ReelpostlyStack (props, no bundling)', () => {
  let template: Template;

  before(() => {
    ({ template } = synth(
      {
        domainName: 'api.example.com',
        certificateArn:
          'arn:aws:acm:eu-west-1:123456789012:certificate/00000000-0000-0000-0000-000000000000',
        hostedZoneId: 'Z0123456789ABCDEFGHIJ',
        hostedZoneName: 'example.com',
        throttlingRateLimit: 7,
        throttlingBurstLimit: 9,
        videoRetentionDays: 30,
        ssmPrefix: '/acme/',
        ssmKmsKeyArn: 'arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111',
        alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:ops',
      },
      { bundle: false },
    ));
  });

  it('creates the custom domain, its mapping and the alias record', () => {
    template.hasResourceProperties('AWS::ApiGateway::DomainName', {
      DomainName: 'api.example.com',
      SecurityPolicy: 'TLS_1_2',
      EndpointConfiguration: { Types: ['REGIONAL'] },
    });
    template.resourceCountIs('AWS::ApiGateway::BasePathMapping', 1);
    template.hasResourceProperties('AWS::Route53::RecordSet', {
      Name: 'api.example.com.',
      Type: 'A',
      HostedZoneId: 'Z0123456789ABCDEFGHIJ',
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: {
        Variables: Match.objectLike({ REELPOSTLY_PUBLIC_URL: 'https://api.example.com' }),
      },
    });
  });

  it('applies the throttling, retention and SSM props', () => {
    template.hasResourceProperties('AWS::ApiGateway::Stage', {
      MethodSettings: Match.arrayWith([
        Match.objectLike({ ThrottlingRateLimit: 7, ThrottlingBurstLimit: 9 }),
      ]),
    });
    template.hasResourceProperties('AWS::S3::Bucket', {
      LifecycleConfiguration: {
        Rules: Match.arrayWith([Match.objectLike({ ExpirationInDays: 30 })]),
      },
    });
    template.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ REELPOSTLY_SSM_PREFIX: '/acme' }) },
    });
    template.hasResourceProperties('AWS::IAM::Policy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Action: 'kms:Decrypt',
            Resource: 'arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111',
            Condition: { StringEquals: { 'kms:ViaService': Match.anyValue() } },
          }),
        ]),
      },
    });
  });

  it('sends every alarm to the topic', () => {
    const alarms = Object.values(template.findResources('AWS::CloudWatch::Alarm')) as {
      Properties: { AlarmActions?: unknown[] };
    }[];
    assert.equal(alarms.length, 6);
    for (const alarm of alarms) {
      assert.deepEqual(alarm.Properties.AlarmActions, ['arn:aws:sns:eu-west-1:123456789012:ops']);
    }
  });
});
