/**
 * The built-in `simulated` provider: the zero-config default, and the upstream every
 * test and demo can rely on. It serves the real MP4/WebP/JPEG files in `assets/`.
 *
 * It keeps no state. Everything a job needs (start time, duration, orientation,
 * outcome) is encoded in its providerJobId, and status is computed from the clock, so
 * a restarted gateway, or another instance, resumes every job where it was:
 *
 *     sim_<startedAtMs base36>_<durationMs base36>_<l|p>_<c|m|x>_<16 hex random>
 *
 * Timeline of a job of duration D: `queued` (progress 0) for the first 10% of D,
 * then `in_progress` with progress rising linearly, then `completed` (100) once D has
 * elapsed.
 *
 * Failures are injected deterministically by markers anywhere in the prompt (the first
 * one in this list wins when several are present):
 *
 * - `[[simulate:upstream_500]]` ({@link SIMULATE_UPSTREAM_500}): `submit` throws a
 *   ProviderError 500 (certain, retryable), as an upstream outage would.
 * - `[[simulate:moderation_blocked]]` ({@link SIMULATE_MODERATION_BLOCKED}): the job is
 *   accepted, runs, and at 50% of D ends `failed` with code `moderation_blocked`.
 * - `[[simulate:asset_expired]]` ({@link SIMULATE_ASSET_EXPIRED}): the job completes,
 *   but every `download` throws ProviderError 410 (certain, not retryable), as when an
 *   upstream deleted the output before the gateway fetched it.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ProviderError } from '../../core/errors.ts';
import type {
  Clock,
  JobError,
  ProviderDownload,
  ProviderJobStatus,
  SubmitInput,
  VideoProvider,
  VideoVariant,
} from '../../core/ports.ts';

export const SIMULATE_UPSTREAM_500 = '[[simulate:upstream_500]]';
export const SIMULATE_MODERATION_BLOCKED = '[[simulate:moderation_blocked]]';
export const SIMULATE_ASSET_EXPIRED = '[[simulate:asset_expired]]';

const PROVIDER_ID = 'simulated';

/** Share of the duration a job stays `queued`. */
const QUEUED_FRACTION = 0.1;
/** Share of the duration after which a moderation-blocked job fails. */
const MODERATION_FAILS_AT = 0.5;

const MODERATION_ERROR: JobError = {
  code: 'moderation_blocked',
  message: "The prompt was blocked by the provider's moderation system.",
};

type Orientation = 'landscape' | 'portrait';
type Outcome = 'complete' | 'moderation_blocked' | 'asset_expired';

const ORIENTATION_FLAGS: Record<Orientation, string> = { landscape: 'l', portrait: 'p' };
const ORIENTATION_BY_FLAG: Partial<Record<string, Orientation>> = { l: 'landscape', p: 'portrait' };
const OUTCOME_FLAGS: Record<Outcome, string> = {
  complete: 'c',
  moderation_blocked: 'm',
  asset_expired: 'x',
};
const OUTCOME_BY_FLAG: Partial<Record<string, Outcome>> = {
  c: 'complete',
  m: 'moderation_blocked',
  x: 'asset_expired',
};

const ID_PATTERN = /^sim_([0-9a-z]{1,11})_([0-9a-z]{1,11})_([lp])_([cmx])_[0-9a-f]{16}$/;

const VARIANT_FILES: Record<VideoVariant, { suffix: string; contentType: string }> = {
  video: { suffix: '.mp4', contentType: 'video/mp4' },
  thumbnail: { suffix: '-thumbnail.webp', contentType: 'image/webp' },
  spritesheet: { suffix: '-spritesheet.jpg', contentType: 'image/jpeg' },
};

interface SimulatedJob {
  startedAt: number;
  durationMs: number;
  orientation: Orientation;
  outcome: Outcome;
}

export interface SimulatedProviderOptions {
  clock: Clock;
  /** How long a new job takes to complete; jobs keep the duration they started with. */
  durationMs: number;
  /** Directory holding `landscape.mp4`, `portrait-thumbnail.webp`, etc. */
  assetsDir: string;
}

/** `<repo>/assets`, where the committed sample files live. */
export function defaultAssetsDir(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../../assets');
}

export function createSimulatedProvider(options: SimulatedProviderOptions): SimulatedProvider {
  return new SimulatedProvider(options);
}

export class SimulatedProvider implements VideoProvider {
  readonly id = PROVIDER_ID;
  readonly capabilities = { remix: true, inputReference: true, idempotentSubmit: true };

  readonly #clock: Clock;
  readonly #durationMs: number;
  readonly #assetsDir: string;

  constructor(options: SimulatedProviderOptions) {
    if (!Number.isSafeInteger(options.durationMs) || options.durationMs < 0) {
      throw new RangeError(`durationMs must be a non-negative integer, got ${options.durationMs}`);
    }
    this.#clock = options.clock;
    this.#durationMs = options.durationMs;
    this.#assetsDir = options.assetsDir;
  }

  async submit(input: SubmitInput): Promise<{ providerJobId: string }> {
    if (input.prompt.includes(SIMULATE_UPSTREAM_500)) {
      throw new ProviderError(PROVIDER_ID, 'Simulated upstream error 500: internal server error', {
        httpStatus: 500,
        certain: true,
        retryable: true,
      });
    }
    const orientation =
      input.remixOfProviderJobId === undefined
        ? orientationOf(input.size)
        : parseJobId(input.remixOfProviderJobId).orientation;
    const job: SimulatedJob = {
      startedAt: this.#clock.now(),
      durationMs: this.#durationMs,
      orientation,
      outcome: outcomeOf(input.prompt),
    };
    return { providerJobId: formatJobId(job) };
  }

  async status(providerJobId: string): Promise<ProviderJobStatus> {
    return statusAt(parseJobId(providerJobId), this.#clock.now());
  }

  async download(providerJobId: string, variant: VideoVariant): Promise<ProviderDownload | null> {
    const job = parseJobId(providerJobId);
    const current = statusAt(job, this.#clock.now());
    if (current.state !== 'completed') {
      const ended = current.state === 'failed';
      throw new ProviderError(
        PROVIDER_ID,
        ended
          ? `Simulated job ${providerJobId} failed; it has no content`
          : `Simulated job ${providerJobId} is not ready (${current.state})`,
        { httpStatus: 409, certain: true, retryable: !ended },
      );
    }
    if (job.outcome === 'asset_expired') {
      throw new ProviderError(PROVIDER_ID, `Simulated job ${providerJobId}: content expired`, {
        httpStatus: 410,
        certain: true,
        retryable: false,
      });
    }
    const file = VARIANT_FILES[variant];
    const path = join(this.#assetsDir, `${job.orientation}${file.suffix}`);
    let bytes: number;
    try {
      bytes = (await stat(path)).size;
    } catch (error) {
      // A missing sample file is an installation fault that retrying cannot fix.
      throw new ProviderError(PROVIDER_ID, `Simulated asset ${path} is unreadable`, {
        certain: true,
        retryable: false,
        cause: error,
      });
    }
    return { body: createReadStream(path), contentType: file.contentType, bytes };
  }
}

function statusAt(job: SimulatedJob, now: number): ProviderJobStatus {
  // A clock behind the start (another host, NTP step) reads as "just started".
  const elapsed = Math.max(0, now - job.startedAt);
  if (job.outcome === 'moderation_blocked' && elapsed >= job.durationMs * MODERATION_FAILS_AT) {
    return {
      state: 'failed',
      progress: progressAt(job, job.durationMs * MODERATION_FAILS_AT),
      providerStatus: 'failed',
      error: MODERATION_ERROR,
    };
  }
  if (elapsed >= job.durationMs) {
    return { state: 'completed', progress: 100, providerStatus: 'completed' };
  }
  if (elapsed < job.durationMs * QUEUED_FRACTION) {
    return { state: 'queued', progress: 0, providerStatus: 'queued' };
  }
  return {
    state: 'in_progress',
    progress: progressAt(job, elapsed),
    providerStatus: 'in_progress',
  };
}

function progressAt(job: SimulatedJob, elapsed: number): number {
  const queuedMs = job.durationMs * QUEUED_FRACTION;
  const share = (elapsed - queuedMs) / (job.durationMs - queuedMs);
  return Math.min(99, Math.max(0, Math.floor(share * 100)));
}

function orientationOf(size: string): Orientation {
  const match = /^(\d+)x(\d+)$/.exec(size);
  if (!match) {
    throw new ProviderError(PROVIDER_ID, `Invalid size '${size}', expected WIDTHxHEIGHT`, {
      httpStatus: 400,
      certain: true,
      retryable: false,
    });
  }
  return Number(match[2]) > Number(match[1]) ? 'portrait' : 'landscape';
}

function outcomeOf(prompt: string): Outcome {
  if (prompt.includes(SIMULATE_MODERATION_BLOCKED)) return 'moderation_blocked';
  if (prompt.includes(SIMULATE_ASSET_EXPIRED)) return 'asset_expired';
  return 'complete';
}

function formatJobId(job: SimulatedJob): string {
  return [
    'sim',
    job.startedAt.toString(36),
    job.durationMs.toString(36),
    ORIENTATION_FLAGS[job.orientation],
    OUTCOME_FLAGS[job.outcome],
    randomBytes(8).toString('hex'),
  ].join('_');
}

function parseJobId(providerJobId: string): SimulatedJob {
  const [started = '', duration = '', orientationFlag = '', outcomeFlag = ''] =
    ID_PATTERN.exec(providerJobId)?.slice(1) ?? [];
  const startedAt = Number.parseInt(started, 36);
  const durationMs = Number.parseInt(duration, 36);
  const orientation = ORIENTATION_BY_FLAG[orientationFlag];
  const outcome = OUTCOME_BY_FLAG[outcomeFlag];
  if (
    Number.isSafeInteger(startedAt) &&
    Number.isSafeInteger(durationMs) &&
    orientation !== undefined &&
    outcome !== undefined
  ) {
    return { startedAt, durationMs, orientation, outcome };
  }
  throw new ProviderError(PROVIDER_ID, `Unknown simulated job '${providerJobId}'`, {
    httpStatus: 404,
    certain: true,
    retryable: false,
  });
}
