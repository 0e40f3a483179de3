/**
 * DynamoDB Local for tests: the jar shipped in the npm package
 * `amplify-dynamodb-simulator`, run in memory with the machine's Java. When
 * `AWS_ENDPOINT_URL_DYNAMODB` is set (CI service container, a developer's own
 * instance) that endpoint is used and nothing is started.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface DynamoDbLocal {
  endpoint: string;
  stop(): Promise<void>;
}

const STARTUP_TIMEOUT_MS = 60_000;

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no TCP port available');
  return address.port;
}

function emulatorDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('amplify-dynamodb-simulator/package.json')), 'emulator');
}

/** Any HTTP answer at all means the server is accepting requests. */
async function answers(endpoint: string): Promise<boolean> {
  try {
    await fetch(endpoint, { signal: AbortSignal.timeout(1000) });
    return true;
  } catch {
    return false;
  }
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export async function startDynamoDbLocal(): Promise<DynamoDbLocal> {
  const configured = process.env.AWS_ENDPOINT_URL_DYNAMODB;
  if (configured) return { endpoint: configured, stop: async () => {} };

  const dir = emulatorDir();
  const port = await freePort();
  const child = spawn(
    'java',
    [
      `-Djava.library.path=${join(dir, 'DynamoDBLocal_lib')}`,
      '-jar',
      join(dir, 'DynamoDBLocal.jar'),
      '-inMemory',
      '-sharedDb',
      '-disableTelemetry',
      '-port',
      String(port),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  let failure: Error | null = null;
  child.once('error', (error: NodeJS.ErrnoException) => {
    failure =
      error.code === 'ENOENT'
        ? new Error(
            'DynamoDB Local needs Java 17+ on PATH (`java` was not found); install a JRE or ' +
              'set AWS_ENDPOINT_URL_DYNAMODB to a running DynamoDB Local',
          )
        : error;
  });
  child.once('exit', (code, signal) => {
    failure ??= new Error(`DynamoDB Local exited (${code ?? signal}) before answering: ${stderr}`);
  });
  // A crashed test run must not leave a JVM behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (failure) throw failure;
    if (await answers(endpoint)) break;
    if (Date.now() > deadline) {
      await stopProcess(child);
      throw new Error(`DynamoDB Local did not answer within ${STARTUP_TIMEOUT_MS} ms: ${stderr}`);
    }
    await sleep(100);
  }
  return {
    endpoint,
    stop: async () => {
      process.off('exit', killOnExit);
      await stopProcess(child);
    },
  };
}
