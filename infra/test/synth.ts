import { App, Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import cdkNag from 'cdk-nag';
import { ReelpostlyStack, type ReelpostlyStackProps } from '../lib/reelpostly-stack.ts';

// cdk-nag is CommonJS whose named exports Node cannot detect statically.
const { AwsSolutionsChecks } = cdkNag;

/**
 * Synthesizes the stack as `bin/app.ts` does, cdk-nag included: an unacknowledged
 * finding fails `synth()` itself. `bundle: false` skips esbuild for tests that only
 * look at the template.
 */
export function synth(props: ReelpostlyStackProps = {}, options: { bundle?: boolean } = {}) {
  const app = new App({
    context: options.bundle === false ? { 'aws:cdk:bundling-stacks': [] } : {},
  });
  const stack = new ReelpostlyStack(app, 'ReelPostly', props);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  const assembly = app.synth();
  return { app, stack, assembly, template: Template.fromStack(stack) };
}
