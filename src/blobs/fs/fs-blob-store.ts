/**
 * BlobStore on the local disk, for single-host deployments. Objects are plain files at
 * `<dir>/<key>`, so an operator can inspect them; each has a hidden sidecar
 * `.<name>.meta.json` holding its content type. Signed URLs point at the gateway's own
 * `/files/<key>` route, which checks them with {@link FsBlobStore.verifySignature}.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError } from '../../core/errors.ts';
import type { BlobInfo, BlobStore, Clock } from '../../core/ports.ts';

export interface FsBlobStoreOptions {
  /** Root directory; created on first write. */
  dir: string;
  /** Absolute base URL of this gateway, e.g. `https://videos.example.com`. */
  publicBaseUrl: string;
  /** HMAC key for signed URLs; rotating it invalidates every outstanding URL. */
  secret: string | Buffer;
  clock: Clock;
}

export type SignatureCheck = 'ok' | 'expired' | 'invalid';

/**
 * Segments may not start with a dot: that rules out `.` and `..`, and keeps keys from
 * colliding with the temp files and sidecars, which are all dot-files.
 */
const KEY_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9._-]*(\/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$/;
const FALLBACK_CONTENT_TYPE = 'application/octet-stream';

export function createFsBlobStore(options: FsBlobStoreOptions): FsBlobStore {
  return new FsBlobStore(options);
}

const MAX_REMEMBERED_URLS = 4096;

export class FsBlobStore implements BlobStore {
  readonly #dir: string;
  readonly #publicBaseUrl: string;
  readonly #secret: string | Buffer;
  readonly #clock: Clock;
  /** URLs handed out lately, by what they sign: a job polled within a minute signs once. */
  #urls = new Map<string, string>();

  constructor(options: FsBlobStoreOptions) {
    if (options.secret.length === 0) {
      throw new AppError('validation_error', 'FsBlobStore needs a non-empty signing secret');
    }
    this.#dir = options.dir;
    this.#publicBaseUrl = options.publicBaseUrl.replace(/\/+$/, '');
    this.#secret = options.secret;
    this.#clock = options.clock;
  }

  async put(
    key: string,
    body: Readable,
    meta: { contentType: string; expectedBytes?: number },
  ): Promise<BlobInfo> {
    const path = this.#pathOf(key);
    const parent = dirname(path);
    await mkdir(parent, { recursive: true });
    // A writer killed mid-put leaves its temp file behind; the next put of the same key
    // (callers hold one writer per key, e.g. the job lease) sweeps it.
    const tmpPrefix = `.tmp-${basename(path)}-`;
    const leftovers = (await readdir(parent)).filter((name) => name.startsWith(tmpPrefix));
    await Promise.all(leftovers.map((name) => rm(join(parent, name), { force: true })));
    const tmpData = join(parent, `${tmpPrefix}${randomBytes(8).toString('hex')}`);
    const tmpMeta = `${tmpData}.meta`;
    const { expectedBytes } = meta;
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        // Stop an oversized stream early instead of writing it all to disk first.
        if (expectedBytes !== undefined && bytes > expectedBytes) {
          callback(sizeMismatch(key, expectedBytes, `more than ${expectedBytes}`));
        } else {
          callback(null, chunk);
        }
      },
    });
    try {
      // Opened eagerly, so the temp file exists (and gets removed) even if the body fails
      // before its first chunk; `flush` fsyncs it before the stream closes.
      const sink = createWriteStream(tmpData, { fd: await open(tmpData, 'wx'), flush: true });
      try {
        await pipeline(body, counter, sink);
      } catch (error) {
        if (!sink.closed) await once(sink, 'close');
        throw error;
      }
      if (expectedBytes !== undefined && bytes !== expectedBytes) {
        throw sizeMismatch(key, expectedBytes, String(bytes));
      }
      await writeFileSynced(tmpMeta, JSON.stringify({ contentType: meta.contentType }));
      // Sidecar first: a reader that finds the data always finds a matching sidecar.
      await rename(tmpMeta, sidecarOf(path));
      await rename(tmpData, path);
      await syncDir(parent);
    } catch (error) {
      await Promise.all([rm(tmpData, { force: true }), rm(tmpMeta, { force: true })]);
      throw error;
    }
    return { bytes, contentType: meta.contentType };
  }

  async head(key: string): Promise<BlobInfo | null> {
    const path = this.#pathOf(key);
    const stats = await statOrNull(path);
    if (!stats?.isFile()) return null;
    return { bytes: stats.size, contentType: await readContentType(path) };
  }

  /** `bytes` is the size of the whole object, also when a range is asked for. */
  async get(
    key: string,
    range?: { start: number; end: number },
  ): Promise<(BlobInfo & { body: Readable }) | null> {
    const path = this.#pathOf(key);
    // Size and stream come from one open file, so a concurrent overwrite (a rename)
    // cannot pair the old size with the new bytes.
    const file = await open(path, 'r').catch((error: unknown) => {
      if (isMissing(error)) return null;
      throw error;
    });
    if (!file) return null;
    try {
      const stats = await file.stat();
      if (!stats.isFile()) {
        await file.close();
        return null;
      }
      if (range) checkRange(range, stats.size);
      const contentType = await readContentType(path);
      const body = file.createReadStream(range && { start: range.start, end: range.end });
      return { bytes: stats.size, contentType, body };
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  async signedUrl(
    key: string,
    options: { expiresInSeconds: number; filename?: string },
  ): Promise<string> {
    checkKey(key);
    if (!(options.expiresInSeconds > 0)) {
      throw new AppError('validation_error', 'expiresInSeconds must be positive', {
        param: 'expiresInSeconds',
      });
    }
    // Rounded up, so a URL never lives shorter than asked; to the minute for long-lived
    // URLs, so a client polling a job gets the same URL (and its cached video) for a
    // minute instead of a new one each second.
    const step = options.expiresInSeconds >= 3600 ? 60 : 1;
    const expires = String(
      Math.ceil((this.#clock.now() / 1000 + options.expiresInSeconds) / step) * step,
    );
    const signed = material(key, expires, options.filename);
    let url = this.#urls.get(signed);
    if (url === undefined) {
      const query = new URLSearchParams({
        expires,
        signature: this.#hmac(signed),
      });
      if (options.filename !== undefined) query.set('filename', options.filename);
      url = `${this.#publicBaseUrl}/files/${key}?${query}`;
      if (this.#urls.size >= MAX_REMEMBERED_URLS) this.#urls = new Map();
      this.#urls.set(signed, url);
    }
    return url;
  }

  /**
   * Checks the query of a URL made by {@link signedUrl} for `key`. `expired` is only
   * answered for authentic URLs, so it reveals nothing to a forger.
   */
  verifySignature(
    key: string,
    query: { expires?: string; signature?: string; filename?: string },
  ): SignatureCheck {
    const { expires, signature, filename } = query;
    if (!KEY_PATTERN.test(key) || !expires || !/^\d{1,15}$/.test(expires) || !signature) {
      return 'invalid';
    }
    const expected = Buffer.from(this.#sign(key, expires, filename));
    const given = Buffer.from(signature);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid';
    return this.#clock.now() >= Number(expires) * 1000 ? 'expired' : 'ok';
  }

  async delete(key: string): Promise<void> {
    const path = this.#pathOf(key);
    await rm(path, { force: true });
    await rm(sidecarOf(path), { force: true });
  }

  async ping(): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const probe = join(this.#dir, `.tmp-ping-${randomBytes(8).toString('hex')}`);
    await writeFile(probe, '');
    await unlink(probe);
  }

  #pathOf(key: string): string {
    checkKey(key);
    return join(this.#dir, key);
  }

  #sign(key: string, expires: string, filename: string | undefined): string {
    return this.#hmac(material(key, expires, filename));
  }

  #hmac(signed: string): string {
    return createHmac('sha256', this.#secret).update(signed).digest('base64url');
  }
}

/** Keys and expiry cannot contain a newline, so this encoding is unambiguous. */
function material(key: string, expires: string, filename: string | undefined): string {
  return filename === undefined ? `${key}\n${expires}` : `${key}\n${expires}\n${filename}`;
}

function checkKey(key: string): void {
  if (!KEY_PATTERN.test(key)) {
    throw new AppError('validation_error', `Invalid blob key '${key}'`, { param: 'key' });
  }
}

function sidecarOf(path: string): string {
  return join(dirname(path), `.${basename(path)}.meta.json`);
}

function sizeMismatch(key: string, expected: number, got: string): Error {
  return new Error(`Blob ${key}: expected ${expected} bytes, got ${got}`);
}

function checkRange(range: { start: number; end: number }, size: number): void {
  const { start, end } = range;
  if (
    !Number.isSafeInteger(start) ||
    !Number.isSafeInteger(end) ||
    start < 0 ||
    end < start ||
    start >= size
  ) {
    throw new AppError(
      'validation_error',
      `Range ${start}-${end} not satisfiable for ${size} bytes`,
      {
        param: 'range',
        details: { size },
      },
    );
  }
}

async function readContentType(path: string): Promise<string> {
  try {
    const parsed: unknown = JSON.parse(await readFile(sidecarOf(path), 'utf8'));
    const contentType = (parsed as { contentType?: unknown }).contentType;
    return typeof contentType === 'string' ? contentType : FALLBACK_CONTENT_TYPE;
  } catch (error) {
    if (isMissing(error)) return FALLBACK_CONTENT_TYPE;
    throw error;
  }
}

async function statOrNull(path: string) {
  try {
    return await stat(path);
  } catch (error) {
    if (isMissing(error)) return null;
    throw error;
  }
}

async function writeFileSynced(path: string, data: string): Promise<void> {
  const file = await open(path, 'wx');
  try {
    await file.writeFile(data);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Makes the renames themselves survive a power loss, not just the file contents. */
async function syncDir(path: string): Promise<void> {
  const dir = await open(path, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  // ENOTDIR: a key nested under another key's file (`a/b` when `a` is an object).
  return code === 'ENOENT' || code === 'ENOTDIR';
}
