import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { App, Stack, aws_s3 as s3, Validations } from 'aws-cdk-lib';
import { Annotations, Match } from 'aws-cdk-lib/assertions';
import cdkNag from 'cdk-nag';
import { synth } from './synth.ts';

const { AwsSolutionsChecks } = cdkNag;

interface Report {
  pluginReports: { pluginName: string; conclusion: string; violations: unknown[] }[];
}

describe('cdk-nag AwsSolutions', () => {
  it('passes with every finding acknowledged (template-only synth)', () => {
    const { stack, assembly } = synth({}, { bundle: false });
    const report = JSON.parse(
      readFileSync(join(assembly.directory, 'validation-report.json'), 'utf8'),
    ) as Report;
    // CDK lists only plugins that reported violations.
    assert.deepEqual(report.pluginReports, []);
    const errors = Annotations.fromStack(stack).findError(
      '*',
      Match.stringLikeRegexp('AwsSolutions-.*'),
    );
    assert.deepEqual(errors, []);
  });

  it('is really checking: an unacknowledged finding fails synth', () => {
    const app = new App();
    const stack = new Stack(app, 'Bare');
    new s3.Bucket(stack, 'Open');
    Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
    assert.throws(() => app.synth(), /Validation failed/);
  });
});
