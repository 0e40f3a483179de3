import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { ProviderError } from '../../core/errors.ts';
import type { SubmitInput, VideoVariant } from '../../core/ports.ts';
import {
  defaultAssetsDir,
  SIMULATE_ASSET_EXPIRED,
  SIMULATE_MODERATION_BLOCKED,
  SIMULATE_UPSTREAM_500,
  SimulatedProvider,
} from './simulated-provider.ts';

const DURATION_MS = 10_000;
const assetsDir = defaultAssetsDir();

function setup(durationMs = DURATION_MS) {
  const clock = { nowMs: 1_767_225_600_000, now: () => clock.nowMs };
  const provider = new SimulatedProvider({ clock, durationMs, assetsDir });
  return { clock, provider };
}

function input(overrides: Partial<SubmitInput> = {}): SubmitInput {
  return {
    jobId: 'video_0123abcd',
    upstreamModel: 'sim-1',
    prompt: 'a cat surfing at sunset',
    seconds: 4,
    size: '1280x720',
    ...overrides,
  };
}

function providerError(fields: { httpStatus: number; certain: boolean; retryable: boolean }) {
  return (error: unknown) => {
    assert.ok(error instanceof ProviderError, `expected ProviderError, got ${String(error)}`);
    assert.equal(error.provider, 'simulated');
    assert.equal(error.httpStatus, fields.httpStatus);
    assert.equal(error.certain, fields.certain);
    assert.equal(error.retryable, fields.retryable);
    return true;
  };
}

async function downloadBytes(provider: SimulatedProvider, id: string, variant: VideoVariant) {
  const download = await provider.download(id, variant);
  assert.ok(download);
  const body = await buffer(download.body);
  assert.equal(download.bytes, body.length);
  return { contentType: download.contentType, body };
}

describe('SimulatedProvider', () => {
  it('declares its id and capabilities', () => {
    const { provider } = setup();
    assert.equal(provider.id, 'simulated');
    assert.deepEqual(provider.capabilities, {
      remix: true,
      inputReference: true,
      idempotentSubmit: true,
    });
  });

  it('moves queued -> in_progress with rising progress -> completed', async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input());

    assert.deepEqual(await provider.status(providerJobId), {
      state: 'queued',
      progress: 0,
      providerStatus: 'queued',
    });
    clock.nowMs += 999;
    assert.equal((await provider.status(providerJobId)).state, 'queued');

    clock.nowMs += 1;
    let previous = -1;
    for (let step = 0; step < 9; step++) {
      const status = await provider.status(providerJobId);
      assert.equal(status.state, 'in_progress');
      assert.equal(status.providerStatus, 'in_progress');
      assert.ok(status.progress > previous, `${status.progress} > ${previous}`);
      assert.ok(status.progress < 100);
      previous = status.progress;
      clock.nowMs += 1_000;
    }

    assert.deepEqual(await provider.status(providerJobId), {
      state: 'completed',
      progress: 100,
      providerStatus: 'completed',
    });
    clock.nowMs += 86_400_000;
    assert.equal((await provider.status(providerJobId)).state, 'completed');
  });

  it('serves every variant of the orientation asked for', async () => {
    const { clock, provider } = setup();
    const landscape = await provider.submit(input({ size: '1280x720' }));
    const portrait = await provider.submit(input({ size: '720x1280' }));
    clock.nowMs += DURATION_MS;

    const expected: [VideoVariant, { suffix: string; contentType: string }][] = [
      ['video', { suffix: '.mp4', contentType: 'video/mp4' }],
      ['thumbnail', { suffix: '-thumbnail.webp', contentType: 'image/webp' }],
      ['spritesheet', { suffix: '-spritesheet.jpg', contentType: 'image/jpeg' }],
    ];
    for (const [orientation, { providerJobId }] of [
      ['landscape', landscape],
      ['portrait', portrait],
    ] as const) {
      for (const [variant, file] of expected) {
        const got = await downloadBytes(provider, providerJobId, variant);
        assert.equal(got.contentType, file.contentType);
        const onDisk = await readFile(join(assetsDir, `${orientation}${file.suffix}`));
        assert.ok(got.body.equals(onDisk), `${orientation} ${variant} bytes match the asset`);
      }
    }
  });

  it('treats a square size as landscape', async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input({ size: '1024x1024' }));
    clock.nowMs += DURATION_MS;
    const got = await downloadBytes(provider, providerJobId, 'video');
    assert.ok(got.body.equals(await readFile(join(assetsDir, 'landscape.mp4'))));
  });

  it('rejects a malformed size at submit', async () => {
    const { provider } = setup();
    await assert.rejects(
      provider.submit(input({ size: 'big' })),
      providerError({ httpStatus: 400, certain: true, retryable: false }),
    );
  });

  it('refuses downloads before completion', async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input());
    await assert.rejects(
      provider.download(providerJobId, 'video'),
      providerError({ httpStatus: 409, certain: true, retryable: true }),
    );
    clock.nowMs += DURATION_MS - 1;
    await assert.rejects(
      provider.download(providerJobId, 'thumbnail'),
      providerError({ httpStatus: 409, certain: true, retryable: true }),
    );
  });

  it(`fails a job at half its duration on ${SIMULATE_MODERATION_BLOCKED}`, async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(
      input({ prompt: `a riot ${SIMULATE_MODERATION_BLOCKED}` }),
    );
    assert.equal((await provider.status(providerJobId)).state, 'queued');
    clock.nowMs += DURATION_MS / 2 - 1;
    const running = await provider.status(providerJobId);
    assert.equal(running.state, 'in_progress');

    clock.nowMs += 1;
    const failed = await provider.status(providerJobId);
    assert.deepEqual(failed, {
      state: 'failed',
      progress: running.progress,
      providerStatus: 'failed',
      error: {
        code: 'moderation_blocked',
        message: "The prompt was blocked by the provider's moderation system.",
      },
    });
    clock.nowMs += DURATION_MS;
    assert.deepEqual(await provider.status(providerJobId), failed);
    await assert.rejects(
      provider.download(providerJobId, 'video'),
      providerError({ httpStatus: 409, certain: true, retryable: false }),
    );
  });

  it(`throws a retryable 500 at submit on ${SIMULATE_UPSTREAM_500}`, async () => {
    const { provider } = setup();
    await assert.rejects(provider.submit(input({ prompt: `x ${SIMULATE_UPSTREAM_500} y` })), {
      name: 'ProviderError',
      message: 'Simulated upstream error 500: internal server error',
      provider: 'simulated',
      httpStatus: 500,
      certain: true,
      retryable: true,
    });
  });

  it(`completes but refuses downloads with 410 on ${SIMULATE_ASSET_EXPIRED}`, async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input({ prompt: SIMULATE_ASSET_EXPIRED }));
    clock.nowMs += DURATION_MS;
    assert.equal((await provider.status(providerJobId)).state, 'completed');
    for (const variant of ['video', 'thumbnail', 'spritesheet'] as const) {
      await assert.rejects(
        provider.download(providerJobId, variant),
        providerError({ httpStatus: 410, certain: true, retryable: false }),
      );
    }
  });

  it('reports the same status from a new instance, even with another configured duration', async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input());
    const restarted = new SimulatedProvider({ clock, durationMs: 60_000, assetsDir });
    for (const offset of [0, 3_000, 7_500, DURATION_MS]) {
      clock.nowMs += offset;
      assert.deepEqual(await restarted.status(providerJobId), await provider.status(providerJobId));
    }
    assert.equal((await restarted.status(providerJobId)).state, 'completed');
  });

  it('completes at once with a zero duration', async () => {
    const { provider } = setup(0);
    const { providerJobId } = await provider.submit(input());
    assert.equal((await provider.status(providerJobId)).state, 'completed');
  });

  it('gives every submit a distinct id', async () => {
    const { provider } = setup();
    const ids = new Set<string>();
    for (let i = 0; i < 50; i++) ids.add((await provider.submit(input())).providerJobId);
    assert.equal(ids.size, 50);
  });

  it('rejects malformed and tampered ids with a certain 404', async () => {
    const { clock, provider } = setup();
    const { providerJobId } = await provider.submit(input());
    clock.nowMs += DURATION_MS;
    const bad = [
      '',
      'nope',
      'video_123',
      'sim_',
      providerJobId.replace('_l_', '_q_'),
      providerJobId.replace('_c_', '_z_'),
      `${providerJobId}0`,
      providerJobId.toUpperCase(),
      `sim_zzzzzzzzzzz_1_l_c_${'0'.repeat(16)}`,
    ];
    for (const id of bad) {
      const notFound = providerError({ httpStatus: 404, certain: true, retryable: false });
      await assert.rejects(provider.status(id), notFound, `status(${JSON.stringify(id)})`);
      await assert.rejects(provider.download(id, 'video'), notFound);
    }
  });

  it('remixes into a new job that keeps the source orientation', async () => {
    const { clock, provider } = setup();
    const source = await provider.submit(input({ size: '720x1280' }));
    clock.nowMs += DURATION_MS;
    const remix = await provider.submit(
      input({
        prompt: 'same, but at night',
        size: '1280x720',
        remixOfProviderJobId: source.providerJobId,
      }),
    );
    assert.notEqual(remix.providerJobId, source.providerJobId);
    assert.equal((await provider.status(remix.providerJobId)).state, 'queued');

    clock.nowMs += DURATION_MS;
    const got = await downloadBytes(provider, remix.providerJobId, 'video');
    assert.ok(got.body.equals(await readFile(join(assetsDir, 'portrait.mp4'))));
  });

  it('refuses to remix an unknown job', async () => {
    const { provider } = setup();
    await assert.rejects(
      provider.submit(input({ remixOfProviderJobId: 'sim_nope' })),
      providerError({ httpStatus: 404, certain: true, retryable: false }),
    );
  });

  it('reports a missing asset file as a non-retryable ProviderError', async () => {
    const clock = { now: () => 0 };
    const provider = new SimulatedProvider({ clock, durationMs: 0, assetsDir: '/nonexistent' });
    const { providerJobId } = await provider.submit(input());
    await assert.rejects(provider.download(providerJobId, 'video'), {
      name: 'ProviderError',
      retryable: false,
    });
  });
});
