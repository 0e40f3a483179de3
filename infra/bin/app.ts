import { App, Validations } from 'aws-cdk-lib';
import cdkNag from 'cdk-nag';
import { ReelpostlyStack, type ReelpostlyStackProps } from '../lib/reelpostly-stack.ts';

// cdk-nag is CommonJS whose named exports Node cannot detect statically.
const { AwsSolutionsChecks } = cdkNag;

const app = new App();

function text(key: string): string | undefined {
  const value: unknown = app.node.tryGetContext(key);
  return value === undefined || value === '' ? undefined : String(value);
}

function number(key: string): number | undefined {
  const raw = text(key);
  if (raw === undefined) return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`context ${key} must be > 0`);
  return value;
}

const props: ReelpostlyStackProps = {
  // Unset account/region keep the template environment-agnostic, so `cdk synth` needs no
  // credentials; `cdk deploy` fills them in from the CLI's profile.
  env: { account: text('account'), region: text('region') },
  ssmPrefix: text('ssmPrefix'),
  ssmKmsKeyArn: text('ssmKmsKeyArn'),
  videoRetentionDays: number('videoRetentionDays'),
  throttlingRateLimit: number('throttlingRateLimit'),
  throttlingBurstLimit: number('throttlingBurstLimit'),
  corsOrigins: text('corsOrigins')?.split(','),
  domainName: text('domainName'),
  certificateArn: text('certificateArn'),
  hostedZoneId: text('hostedZoneId'),
  hostedZoneName: text('hostedZoneName'),
  alarmTopicArn: text('alarmTopicArn'),
  workerBudgetMs: number('workerBudgetMs'),
};

new ReelpostlyStack(app, text('stackName') ?? 'ReelPostly', props);
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
