/**
 * The BlobStore contract, written only against the port so every adapter runs the
 * same suite: `runBlobContract('S3BlobStore', async () => ({ blobs, cleanup }))`.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import type { BlobStore } from '../../src/core/ports.ts';

export type BlobStoreFactory = () => Promise<{ blobs: BlobStore; cleanup: () => Promise<void> }>;

const CHUNK = 64 * 1024;

/** A stream of `chunks` random chunks, and the digest it will have produced. */
function generated(chunks: number): { body: Readable; bytes: number; sha256: () => string } {
  const hash = createHash('sha256');
  async function* produce() {
    for (let i = 0; i < chunks; i++) {
      const chunk = randomBytes(CHUNK);
      hash.update(chunk);
      yield chunk;
    }
  }
  return {
    body: Readable.from(produce()),
    bytes: chunks * CHUNK,
    sha256: () => hash.digest('hex'),
  };
}

/** Sends some bytes, then fails the way a dropped upstream connection does. */
function failingMidway(): Readable {
  async function* produce() {
    yield randomBytes(CHUNK);
    yield randomBytes(CHUNK);
    throw new Error('upstream connection reset');
  }
  return Readable.from(produce());
}

async function sha256Of(body: Readable): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of body) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

async function text(blobs: BlobStore, key: string): Promise<string | null> {
  const got = await blobs.get(key);
  return got && (await buffer(got.body)).toString('utf8');
}

export function runBlobContract(name: string, factory: BlobStoreFactory): void {
  async function withBlobs(run: (blobs: BlobStore) => Promise<void>): Promise<void> {
    const { blobs, cleanup } = await factory();
    try {
      await run(blobs);
    } finally {
      await cleanup();
    }
  }

  describe(`BlobStore contract: ${name}`, () => {
    it('answers ping', () => withBlobs((blobs) => blobs.ping()));

    it('round-trips a multi-MB stream through put, head and get', () =>
      withBlobs(async (blobs) => {
        const source = generated(96);
        const info = await blobs.put('videos/t1/video_abc/video.mp4', source.body, {
          contentType: 'video/mp4',
          expectedBytes: source.bytes,
        });
        assert.deepEqual(info, { bytes: source.bytes, contentType: 'video/mp4' });
        assert.deepEqual(await blobs.head('videos/t1/video_abc/video.mp4'), info);

        const got = await blobs.get('videos/t1/video_abc/video.mp4');
        assert.ok(got);
        assert.equal(got.bytes, source.bytes);
        assert.equal(got.contentType, 'video/mp4');
        assert.equal(await sha256Of(got.body), source.sha256());
      }));

    it('accepts a put without expectedBytes', () =>
      withBlobs(async (blobs) => {
        const info = await blobs.put('a.txt', Readable.from([Buffer.from('hello')]), {
          contentType: 'text/plain',
        });
        assert.deepEqual(info, { bytes: 5, contentType: 'text/plain' });
        assert.equal(await text(blobs, 'a.txt'), 'hello');
      }));

    it('streams an inclusive byte range', () =>
      withBlobs(async (blobs) => {
        const data = randomBytes(10_000);
        await blobs.put('ranged.bin', Readable.from([data]), {
          contentType: 'application/octet-stream',
          expectedBytes: data.length,
        });
        for (const [start, end] of [
          [0, 0],
          [10, 19],
          [9_000, 9_999],
        ] as const) {
          const got = await blobs.get('ranged.bin', { start, end });
          assert.ok(got);
          assert.deepEqual(await buffer(got.body), data.subarray(start, end + 1));
        }
      }));

    it('leaves nothing when fewer bytes arrive than expected', () =>
      withBlobs(async (blobs) => {
        const source = generated(4);
        await assert.rejects(
          blobs.put('short.mp4', source.body, {
            contentType: 'video/mp4',
            expectedBytes: source.bytes + 1,
          }),
          /expected/,
        );
        assert.equal(await blobs.head('short.mp4'), null);
        assert.equal(await blobs.get('short.mp4'), null);
      }));

    it('leaves nothing when more bytes arrive than expected', () =>
      withBlobs(async (blobs) => {
        const source = generated(4);
        await assert.rejects(
          blobs.put('long.mp4', source.body, { contentType: 'video/mp4', expectedBytes: CHUNK }),
          /expected/,
        );
        assert.equal(await blobs.head('long.mp4'), null);
      }));

    it('leaves nothing when the stream fails midway', () =>
      withBlobs(async (blobs) => {
        await assert.rejects(
          blobs.put('broken.mp4', failingMidway(), { contentType: 'video/mp4' }),
          /upstream connection reset/,
        );
        assert.equal(await blobs.head('broken.mp4'), null);
        assert.equal(await blobs.get('broken.mp4'), null);
      }));

    it('keeps the previous object when an overwrite fails', () =>
      withBlobs(async (blobs) => {
        await blobs.put('kept.txt', Readable.from([Buffer.from('first')]), {
          contentType: 'text/plain',
        });
        await assert.rejects(blobs.put('kept.txt', failingMidway(), { contentType: 'video/mp4' }));
        assert.deepEqual(await blobs.head('kept.txt'), { bytes: 5, contentType: 'text/plain' });
        assert.equal(await text(blobs, 'kept.txt'), 'first');
      }));

    it('overwrites an existing key, content type included', () =>
      withBlobs(async (blobs) => {
        await blobs.put('over.bin', Readable.from([Buffer.from('first version')]), {
          contentType: 'text/plain',
        });
        await blobs.put('over.bin', Readable.from([Buffer.from('second')]), {
          contentType: 'application/json',
        });
        assert.deepEqual(await blobs.head('over.bin'), {
          bytes: 6,
          contentType: 'application/json',
        });
        assert.equal(await text(blobs, 'over.bin'), 'second');
      }));

    it('deletes, and deleting a missing key is fine', () =>
      withBlobs(async (blobs) => {
        await blobs.put('gone/x.webp', Readable.from([Buffer.from('x')]), {
          contentType: 'image/webp',
        });
        await blobs.delete('gone/x.webp');
        assert.equal(await blobs.head('gone/x.webp'), null);
        assert.equal(await blobs.get('gone/x.webp'), null);
        await blobs.delete('gone/x.webp');
        await blobs.delete('never/existed.mp4');
      }));

    it('answers null for missing keys', () =>
      withBlobs(async (blobs) => {
        assert.equal(await blobs.head('missing/key.mp4'), null);
        assert.equal(await blobs.get('missing/key.mp4'), null);
        assert.equal(await blobs.get('missing/key.mp4', { start: 0, end: 9 }), null);
      }));

    it('signs an absolute http(s) URL', () =>
      withBlobs(async (blobs) => {
        await blobs.put('signed/video.mp4', Readable.from([Buffer.from('v')]), {
          contentType: 'video/mp4',
        });
        for (const filename of [undefined, 'my video.mp4']) {
          const url = new URL(
            await blobs.signedUrl('signed/video.mp4', { expiresInSeconds: 3600, filename }),
          );
          assert.match(url.protocol, /^https?:$/);
        }
      }));
  });
}
