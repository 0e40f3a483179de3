#!/usr/bin/env node
// Runs the TypeScript sources directly, so `npx reelpostly` needs no build step.
import { register } from 'tsx/esm/api';

register();
await import('../src/main/cli.ts');
