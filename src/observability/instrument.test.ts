import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { ProviderError } from '../core/errors.ts';
import type { BlobStore, VideoProvider } from '../core/ports.ts';
import { instrumentBlobStore, instrumentProvider } from './instrument.ts';
import { createMetrics } from './metrics.ts';

describe('instrumentProvider / instrumentBlobStore', () => {
  it('times calls by outcome, counts errors, and keeps optional methods optional', async () => {
    const metrics = createMetrics();
    const raw: VideoProvider = {
      id: 'up',
      capabilities: { remix: false, inputReference: false, idempotentSubmit: false },
      submit: async () => ({ providerJobId: 'p_1' }),
      status: async () => {
        throw new ProviderError('up', 'boom', { certain: true, retryable: true });
      },
      download: async () => null,
    };
    const provider = instrumentProvider(raw, metrics);
    assert.equal(provider.id, 'up');
    assert.equal(provider.cancel, undefined);
    assert.equal(provider.verifyWebhook, undefined);
    assert.deepEqual(await provider.submit({} as never), { providerJobId: 'p_1' });
    await assert.rejects(provider.status('p_1'), ProviderError);

    const errors = await metrics.upstreamErrors.get();
    assert.deepEqual(
      errors.values.map((v) => [v.labels, v.value]),
      [[{ provider: 'up', operation: 'status' }, 1]],
    );
    const text = await metrics.registry.metrics();
    assert.match(
      text,
      /reelpostly_upstream_request_duration_seconds_count\{provider="up",operation="submit",outcome="ok"\} 1/,
    );
    assert.match(
      text,
      /reelpostly_upstream_request_duration_seconds_count\{provider="up",operation="status",outcome="error"\} 1/,
    );
  });

  it('counts stored bytes and failed writes', async () => {
    const metrics = createMetrics();
    let fail = false;
    const raw = {
      put: async (_key: string, body: Readable) => {
        let bytes = 0;
        for await (const chunk of body) bytes += (chunk as Buffer).length;
        if (fail) throw new Error('disk full');
        return { bytes, contentType: 'video/mp4' };
      },
    } as unknown as BlobStore;
    const blobs = instrumentBlobStore(raw, metrics);
    await blobs.put('a', Readable.from([Buffer.alloc(1000)]), { contentType: 'video/mp4' });
    fail = true;
    await assert.rejects(blobs.put('b', Readable.from([Buffer.alloc(5)]), { contentType: 'x' }));
    assert.equal((await metrics.blobBytesStored.get()).values[0]?.value, 1000);
    assert.equal((await metrics.blobPutErrors.get()).values[0]?.value, 1);
  });
});
