import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { FsBlobStore } from '../../src/blobs/fs/fs-blob-store.ts';
import { isAppError } from '../../src/core/errors.ts';
import { runBlobContract } from './blob-contract.ts';

const BASE_URL = 'https://videos.example.test';

function movableClock() {
  const clock = { nowMs: 1_767_225_600_123, now: () => clock.nowMs };
  return clock;
}

async function tempStore(options: { secret?: string } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'fs-blob-store-'));
  const clock = movableClock();
  const blobs = new FsBlobStore({
    dir,
    publicBaseUrl: `${BASE_URL}/`,
    secret: options.secret ?? 'test-secret',
    clock,
  });
  return { dir, clock, blobs, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Splits a signed URL the way the `/files/*` route sees it. */
function parseSigned(url: string) {
  const parsed = new URL(url);
  assert.ok(parsed.pathname.startsWith('/files/'));
  const query: Record<string, string> = Object.fromEntries(parsed.searchParams);
  return { key: parsed.pathname.slice('/files/'.length), query };
}

async function listAll(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).sort();
}

runBlobContract('FsBlobStore', tempStore);

describe('FsBlobStore', () => {
  it('stores plain files and leaves no temp files behind, even after failures', async () => {
    const { dir, blobs, cleanup } = await tempStore();
    try {
      await blobs.put('v/a.mp4', Readable.from([Buffer.from('abc')]), { contentType: 'video/mp4' });
      await assert.rejects(
        blobs.put('v/b.mp4', Readable.from([Buffer.from('abc')]), {
          contentType: 'video/mp4',
          expectedBytes: 4,
        }),
      );
      const failsAtOnce = new Readable({
        read() {
          this.destroy(new Error('refused'));
        },
      });
      await assert.rejects(
        blobs.put('v/c.mp4', failsAtOnce, { contentType: 'video/mp4' }),
        /refused/,
      );
      async function* failsLater() {
        yield Buffer.alloc(256 * 1024);
        throw new Error('reset');
      }
      await assert.rejects(
        blobs.put('v/d.mp4', Readable.from(failsLater()), { contentType: 'video/mp4' }),
        /reset/,
      );
      await blobs.ping();
      assert.equal(await readFile(join(dir, 'v/a.mp4'), 'utf8'), 'abc');
      assert.deepEqual(await listAll(dir), ['v', 'v/.a.mp4.meta.json', 'v/a.mp4']);

      await blobs.delete('v/a.mp4');
      assert.deepEqual(await listAll(dir), ['v']);
    } finally {
      await cleanup();
    }
  });

  it('rejects keys that could escape the directory or collide with internal files', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      const bad = [
        '',
        '/etc/passwd',
        '../escape',
        'a/../../escape',
        'a/./b',
        'a//b',
        'a/',
        '.hidden',
        'a/.tmp-123',
        'a\\b',
        'a b',
        'a\nb',
        'ünïcode',
      ];
      for (const key of bad) {
        const invalid = (error: unknown) => isAppError(error, 'validation_error');
        const body = Readable.from([Buffer.from('x')]);
        await assert.rejects(blobs.put(key, body, { contentType: 'text/plain' }), invalid, key);
        await assert.rejects(blobs.head(key), invalid);
        await assert.rejects(blobs.get(key), invalid);
        await assert.rejects(blobs.delete(key), invalid);
        await assert.rejects(blobs.signedUrl(key, { expiresInSeconds: 60 }), invalid);
        assert.equal(
          blobs.verifySignature(key, { expires: '9999999999', signature: 'x' }),
          'invalid',
        );
      }
    } finally {
      await cleanup();
    }
  });

  it('refuses unsatisfiable ranges', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      await blobs.put('r.bin', Readable.from([Buffer.alloc(10)]), { contentType: 'x/y' });
      for (const range of [
        { start: 10, end: 12 },
        { start: 5, end: 4 },
        { start: -1, end: 3 },
      ]) {
        await assert.rejects(blobs.get('r.bin', range), (error) =>
          isAppError(error, 'validation_error'),
        );
      }
    } finally {
      await cleanup();
    }
  });

  it('treats a directory of nested keys as no object', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      await blobs.put('dir/inner.txt', Readable.from([Buffer.from('x')]), {
        contentType: 'text/plain',
      });
      assert.equal(await blobs.head('dir'), null);
      assert.equal(await blobs.get('dir'), null);
      assert.equal(await blobs.head('dir/inner.txt/deeper'), null);
    } finally {
      await cleanup();
    }
  });
});

describe('FsBlobStore signed URLs', () => {
  it('builds /files/<key> URLs under the public base URL', async () => {
    const { clock, blobs, cleanup } = await tempStore();
    try {
      const url = await blobs.signedUrl('videos/t1/v.mp4', {
        expiresInSeconds: 3600,
        filename: 'my video.mp4',
      });
      assert.ok(url.startsWith(`${BASE_URL}/files/videos/t1/v.mp4?`), url);
      const { key, query } = parseSigned(url);
      assert.equal(key, 'videos/t1/v.mp4');
      assert.equal(query.filename, 'my video.mp4');
      assert.match(query.signature ?? '', /^[A-Za-z0-9_-]{43}$/);
      // Rounded up to the minute (an hour or longer), never shorter than asked.
      const asked = clock.nowMs / 1000 + 3600;
      assert.equal(Number(query.expires), Math.ceil(asked / 60) * 60);
    } finally {
      await cleanup();
    }
  });

  it('hands out the same long-lived URL for a minute, a new one after', async () => {
    const { clock, blobs, cleanup } = await tempStore();
    try {
      const sign = () => blobs.signedUrl('v/a.mp4', { expiresInSeconds: 7 * 24 * 3600 });
      clock.nowMs = Date.UTC(2026, 11, 4, 12, 0, 0, 500);
      const first = await sign();
      clock.nowMs += 59_000;
      assert.equal(await sign(), first);
      clock.nowMs += 1_000;
      const next = await sign();
      assert.notEqual(next, first);
      const { key, query } = parseSigned(next);
      assert.equal(blobs.verifySignature(key, query), 'ok');
      assert.equal(Number(query.expires), Date.UTC(2026, 11, 11, 12, 2) / 1000);
      // Short lifetimes keep to the second.
      const short = parseSigned(await blobs.signedUrl('v/a.mp4', { expiresInSeconds: 30 }));
      assert.equal(Number(short.query.expires), Math.ceil(clock.nowMs / 1000) + 30);
    } finally {
      await cleanup();
    }
  });

  it('verifies its own URLs, with and without a filename', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      for (const filename of [undefined, 'video_abc.mp4', '']) {
        const { key, query } = parseSigned(
          await blobs.signedUrl('v/a.mp4', { expiresInSeconds: 60, filename }),
        );
        assert.equal(blobs.verifySignature(key, query), 'ok', `filename ${filename}`);
      }
    } finally {
      await cleanup();
    }
  });

  it('rejects tampered signatures, keys, expiries and filenames', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      const plain = parseSigned(await blobs.signedUrl('v/a.mp4', { expiresInSeconds: 60 }));
      const named = parseSigned(
        await blobs.signedUrl('v/a.mp4', { expiresInSeconds: 60, filename: 'a.mp4' }),
      );
      const signature = plain.query.signature ?? '';
      const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
      const expires = Number(plain.query.expires);
      const cases: [string, Record<string, string | undefined>][] = [
        [plain.key, { ...plain.query, signature: flipped }],
        [plain.key, { ...plain.query, signature: `${signature}A` }],
        [plain.key, { ...plain.query, signature: `${signature}=` }],
        [plain.key, { ...plain.query, signature: signature.slice(0, -1) }],
        [plain.key, { ...plain.query, signature: undefined }],
        [plain.key, { ...plain.query, signature: '' }],
        ['v/b.mp4', plain.query],
        ['v/a.mp4x', plain.query],
        [plain.key, { ...plain.query, expires: String(expires + 3600) }],
        [plain.key, { ...plain.query, expires: `${expires}.0` }],
        [plain.key, { ...plain.query, expires: undefined }],
        [plain.key, { ...plain.query, filename: 'evil.exe' }],
        [named.key, { ...named.query, filename: 'evil.exe' }],
        [named.key, { ...named.query, filename: undefined }],
      ];
      for (const [key, query] of cases) {
        assert.equal(blobs.verifySignature(key, query), 'invalid', JSON.stringify({ key, query }));
      }
    } finally {
      await cleanup();
    }
  });

  it('reports expiry once the clock passes it, and only for authentic URLs', async () => {
    const { clock, blobs, cleanup } = await tempStore();
    try {
      const { key, query } = parseSigned(
        await blobs.signedUrl('v/a.mp4', { expiresInSeconds: 60 }),
      );
      clock.nowMs = Number(query.expires) * 1000 - 1;
      assert.equal(blobs.verifySignature(key, query), 'ok');
      clock.nowMs += 1;
      assert.equal(blobs.verifySignature(key, query), 'expired');
      assert.equal(blobs.verifySignature(key, { ...query, signature: 'x'.repeat(43) }), 'invalid');
    } finally {
      await cleanup();
    }
  });

  it('rejects URLs signed with another secret', async () => {
    const one = await tempStore({ secret: 'secret-one' });
    const two = await tempStore({ secret: 'secret-two' });
    try {
      const { key, query } = parseSigned(
        await one.blobs.signedUrl('v/a.mp4', { expiresInSeconds: 60 }),
      );
      assert.equal(one.blobs.verifySignature(key, query), 'ok');
      assert.equal(two.blobs.verifySignature(key, query), 'invalid');
    } finally {
      await Promise.all([one.cleanup(), two.cleanup()]);
    }
  });

  it('accepts a Buffer secret and refuses an empty one', async () => {
    const clock = movableClock();
    const options = { dir: tmpdir(), publicBaseUrl: BASE_URL, clock };
    const blobs = new FsBlobStore({ ...options, secret: Buffer.from('0123456789abcdef') });
    const { key, query } = parseSigned(await blobs.signedUrl('k', { expiresInSeconds: 1 }));
    assert.equal(blobs.verifySignature(key, query), 'ok');
    assert.throws(() => new FsBlobStore({ ...options, secret: '' }));
    assert.throws(() => new FsBlobStore({ ...options, secret: Buffer.alloc(0) }));
  });

  it('refuses a non-positive lifetime', async () => {
    const { blobs, cleanup } = await tempStore();
    try {
      for (const expiresInSeconds of [0, -5, Number.NaN]) {
        await assert.rejects(blobs.signedUrl('k', { expiresInSeconds }), (error) =>
          isAppError(error, 'validation_error'),
        );
      }
    } finally {
      await cleanup();
    }
  });
});
