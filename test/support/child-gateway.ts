import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { DEFAULT_CATALOG_PATH } from '../../src/core/catalog.ts';
import { eventually } from './gateway.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

export interface ChildGateway {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/**
 * `src/main/server.ts` compiled to one ESM file, packages left external, as a deployment
 * builds it (the CDK bundles the Lambda the same way). Run without the tsx loader, whose
 * loader thread and compiler add ~90 MB of RSS that a built gateway does not carry. It
 * lives under `node_modules/.cache` so its package imports resolve; pass
 * `REELPOSTLY_CATALOG`, since the bundled default catalog path no longer points at config/.
 */
export async function bundleServer(): Promise<string> {
  const dir = join(ROOT, 'node_modules', '.cache', 'reelpostly-test');
  await mkdir(dir, { recursive: true });
  const outfile = join(dir, `server-${process.pid}.mjs`);
  await build({
    entryPoints: [join(ROOT, 'src/main/server.ts')],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile,
    logLevel: 'warning',
  });
  return outfile;
}

/**
 * Starts the gateway's entry point as its own process (through tsx, as `npm start` does,
 * or a file made by {@link bundleServer}) and waits until it listens.
 */
export async function startChildGateway(
  env: Record<string, string>,
  options: { entry?: string } = {},
): Promise<ChildGateway> {
  const args = options.entry ? [options.entry] : ['--import', 'tsx', 'src/main/server.ts'];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (chunk) => {
    out += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    out += chunk;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  let gone = false;
  exited.then(() => {
    gone = true;
  });
  await eventually(
    async () => {
      if (gone) throw new Error(`gateway exited before listening:\n${out}`);
      return /listening/.test(out);
    },
    { timeoutMs: 30_000 },
  );
  return { child, output: () => out, exited };
}

/**
 * The environment of a gateway whose `sora-2` goes to an OpenAI-compatible upstream
 * (an emulator) only, storing under `dataDir`, with the worker and polls on short
 * intervals for tests.
 */
export async function openAIGatewayEnv(options: {
  port: number;
  dataDir: string;
  upstreamUrl: string;
  upstreamKey: string;
}): Promise<Record<string, string>> {
  return {
    PORT: String(options.port),
    HOST: '127.0.0.1',
    REELPOSTLY_DATA_DIR: options.dataDir,
    REELPOSTLY_SIMULATED: 'false',
    REELPOSTLY_CATALOG: await writeOpenAICatalog(options.dataDir),
    OPENAI_API_KEY: options.upstreamKey,
    OPENAI_BASE_URL: options.upstreamUrl,
    REELPOSTLY_POLL_INTERVAL_MS: '100',
    REELPOSTLY_WORKER_INTERVAL_MS: '50',
  };
}

/** A catalog file whose `sora-2` is served by the `openai` route only. */
async function writeOpenAICatalog(dir: string): Promise<string> {
  const catalog = JSON.parse(await readFile(DEFAULT_CATALOG_PATH, 'utf8'));
  const sora = catalog.models['sora-2'];
  sora.routes = [{ provider: 'openai', upstreamModel: 'sora-2' }];
  catalog.models = { 'sora-2': sora };
  const path = join(dir, 'catalog.json');
  await writeFile(path, JSON.stringify(catalog));
  return path;
}

/** Resident set of a live process, in bytes: its peak (`VmHWM`) or current (`VmRSS`) one; null once it has exited. */
export async function rssOf(
  pid: number,
  which: 'VmHWM' | 'VmRSS' = 'VmHWM',
): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = new RegExp(`${which}:\\s+(\\d+) kB`).exec(status)?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}
