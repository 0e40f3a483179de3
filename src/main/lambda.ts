import awsLambdaFastify, { type PromiseHandler } from '@fastify/aws-lambda';
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from 'aws-lambda';
import { loadConfig } from '../config.ts';
import { buildApp } from '../http/app.ts';
import { loadSsmParameters } from '../secrets/ssm.ts';
import { createServices, type Services } from '../services.ts';
import { runOutbox } from '../worker/deliveries.ts';
import { advanceJobs } from '../worker/worker.ts';

/** What API Gateway must pass through as bytes: everything the blob stores serve. */
const BINARY_MIME_TYPES = [
  'video/mp4',
  'image/webp',
  'image/jpeg',
  'image/png',
  'application/octet-stream',
];

/** The worker stops starting ticks when the invocation has less than this left. */
const SAFETY_MARGIN_MS = 10_000;

interface ColdStart {
  services: Services;
  /** Longest a worker invocation keeps starting ticks; Infinity means "until the margin". */
  workerBudgetMs: number;
}

let coldStart: Promise<ColdStart> | undefined;

/**
 * Once per execution environment: secrets from SSM into the environment, then the same
 * config and services the server uses. A failed start is not cached, so the next
 * invocation retries it instead of failing forever.
 */
function start(): Promise<ColdStart> {
  coldStart ??= (async () => {
    const prefix = process.env.REELPOSTLY_SSM_PREFIX;
    if (prefix) await loadSsmParameters({ path: prefix, env: process.env });
    const config = loadConfig(process.env);
    const services = createServices(config);
    await services.store.migrate();
    return { services, workerBudgetMs: config.worker.budgetMs };
  })().catch((error: unknown) => {
    coldStart = undefined;
    throw error;
  });
  return coldStart;
}

let proxy: Promise<PromiseHandler<APIGatewayProxyEvent, APIGatewayProxyResult>> | undefined;

/**
 * API Gateway REST (payload v1) -> the same Fastify app the server listens with.
 * Jobs advance only in `worker`: a request-scoped function must not run timers.
 */
export async function http(
  event: APIGatewayProxyEvent,
  context: Context,
): Promise<APIGatewayProxyResult> {
  proxy ??= start()
    .then(async ({ services }) => {
      const app = await buildApp(services);
      const handler = awsLambdaFastify<APIGatewayProxyEvent>(app, {
        binaryMimeTypes: BINARY_MIME_TYPES,
        decorateRequest: false,
      });
      await app.ready();
      return handler;
    })
    .catch((error: unknown) => {
      proxy = undefined;
      throw error;
    });
  return (await proxy)(event, context);
}

export interface WorkerSummary {
  ticks: number;
  /** Jobs looked at, summed over the ticks (a job advanced twice counts twice). */
  jobs: number;
}

/**
 * Scheduled (EventBridge) job pipeline: runs ticks back to back, pausing the worker
 * interval between them, until the budget or the invocation's time is nearly used.
 */
export async function worker(
  _event: unknown,
  context: Pick<Context, 'getRemainingTimeInMillis'>,
): Promise<WorkerSummary> {
  const { services, workerBudgetMs } = await start();
  const { intervalMs, concurrency, batchSize } = services.config.worker;
  const budgetEnd = Date.now() + workerBudgetMs;
  // Re-read each time: the runtime's clock is the one that ends the invocation.
  const timeLeft = () =>
    Math.min(budgetEnd - Date.now(), context.getRemainingTimeInMillis() - SAFETY_MARGIN_MS);
  const summary: WorkerSummary = { ticks: 0, jobs: 0 };
  while (timeLeft() > 0) {
    summary.jobs += await advanceJobs(services, {
      now: services.clock.now(),
      concurrency,
      batchSize,
    });
    await runOutbox(services, { now: services.clock.now(), concurrency, batchSize });
    summary.ticks += 1;
    if (timeLeft() <= intervalMs) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  services.logger.info(summary, 'worker invocation done');
  return summary;
}
