/**
 * BlobStore on Amazon S3 (or an S3-compatible service). Uploads stream through
 * `@aws-sdk/lib-storage` in bounded multipart chunks; signed URLs are SigV4-presigned
 * GETs that clients fetch from S3 directly, so video bytes never pass the gateway.
 */

import { pipeline, Readable, Transform } from 'node:stream';
import type { GetObjectCommandOutput, S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { AppError } from '../../core/errors.ts';
import { lazily } from '../../core/lazily.ts';
import type { BlobInfo, BlobStore } from '../../core/ports.ts';

/**
 * The SDK, imported on first use: these packages take ~20 MB of memory loaded on their
 * own, which a gateway storing on local disk must not pay just because this module is
 * linked in.
 */
async function importSdk() {
  const [s3, storage, presigner] = await Promise.all([
    import('@aws-sdk/client-s3'),
    import('@aws-sdk/lib-storage'),
    import('@aws-sdk/s3-request-presigner'),
  ]);
  return {
    S3Client: s3.S3Client,
    S3ServiceException: s3.S3ServiceException,
    DeleteObjectCommand: s3.DeleteObjectCommand,
    GetObjectCommand: s3.GetObjectCommand,
    HeadBucketCommand: s3.HeadBucketCommand,
    HeadObjectCommand: s3.HeadObjectCommand,
    Upload: storage.Upload,
    getSignedUrl: presigner.getSignedUrl,
  };
}

type S3Sdk = Awaited<ReturnType<typeof importSdk>>;

const loadSdk = lazily(importSdk);

export interface S3BlobStoreOptions {
  bucket: string;
  /** Defaults to a client made from `clientConfig` and the environment (region, credentials). */
  client?: S3Client;
  /** Settings of the default client (e.g. `forcePathStyle`); ignored when `client` is given. */
  clientConfig?: S3ClientConfig;
  /** Folder every key lives under, e.g. `reelpostly/`; a trailing `/` is added if missing. */
  prefix?: string;
  /** Multipart part size; at least 5 MiB (S3's minimum). */
  partSizeBytes?: number;
  /** Parts uploaded in parallel. One upload holds about `(queueSize + 1) * partSizeBytes`. */
  queueSize?: number;
}

/** SigV4 refuses presigned URLs that live longer than seven days. */
export const MAX_SIGNED_URL_SECONDS = 604_800;
const MIN_PART_SIZE = 5 * 1024 * 1024;
const DEFAULT_PART_SIZE = 8 * 1024 * 1024;
const DEFAULT_QUEUE_SIZE = 4;
const MAX_KEY_BYTES = 1024;
const FALLBACK_CONTENT_TYPE = 'application/octet-stream';

export function createS3BlobStore(options: S3BlobStoreOptions): S3BlobStore {
  return new S3BlobStore(options);
}

export class S3BlobStore implements BlobStore {
  readonly #bucket: string;
  readonly #options: Pick<S3BlobStoreOptions, 'client' | 'clientConfig'>;
  readonly #prefix: string;
  readonly #partSize: number;
  readonly #queueSize: number;
  #ready: Promise<{ sdk: S3Sdk; client: S3Client }> | undefined;

  constructor(options: S3BlobStoreOptions) {
    this.#bucket = options.bucket;
    this.#options = { client: options.client, clientConfig: options.clientConfig };
    this.#prefix = options.prefix ? `${options.prefix.replace(/\/+$/, '')}/` : '';
    this.#partSize = options.partSizeBytes ?? DEFAULT_PART_SIZE;
    this.#queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    if (!Number.isSafeInteger(this.#partSize) || this.#partSize < MIN_PART_SIZE) {
      throw new AppError('validation_error', `S3 part size must be at least ${MIN_PART_SIZE}`, {
        param: 'partSizeBytes',
      });
    }
    if (!Number.isSafeInteger(this.#queueSize) || this.#queueSize < 1) {
      throw new AppError('validation_error', 'S3 upload queue size must be at least 1', {
        param: 'queueSize',
      });
    }
  }

  /** The SDK and the client, made on first use. */
  #sdk(): Promise<{ sdk: S3Sdk; client: S3Client }> {
    this.#ready ??= loadSdk().then((sdk) => ({
      sdk,
      client: this.#options.client ?? new sdk.S3Client(this.#options.clientConfig ?? {}),
    }));
    return this.#ready;
  }

  /**
   * A multipart upload only becomes an object when it is completed, and S3 replaces an
   * existing object atomically at that moment, so a failed put leaves whatever was at
   * the key before untouched. The size check therefore has to fail the stream BEFORE
   * lib-storage sees its end: the counter errors in `flush`, the uploader sees an error
   * instead of end-of-stream and aborts rather than completes (or never sends the single
   * PutObject it uses for small bodies). This beats uploading to a temporary key and
   * copying: no second write of every byte, no 5 GB CopyObject limit, and no window in
   * which a crash between copy and delete leaves a stray object.
   */
  async put(
    key: string,
    body: Readable,
    meta: { contentType: string; expectedBytes?: number },
  ): Promise<BlobInfo> {
    const objectKey = this.#keyOf(key);
    const { sdk, client } = await this.#sdk();
    const { expectedBytes } = meta;
    let bytes = 0;
    let streamError: Error | undefined;
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        // Stop an oversized stream at once instead of uploading it all first.
        if (expectedBytes !== undefined && bytes > expectedBytes) {
          callback(sizeMismatch(key, expectedBytes, `more than ${expectedBytes}`));
        } else {
          callback(null, chunk);
        }
      },
      flush(callback) {
        if (expectedBytes !== undefined && bytes !== expectedBytes) {
          callback(sizeMismatch(key, expectedBytes, String(bytes)));
        } else {
          callback();
        }
      },
    });
    counter.on('error', (error) => {
      streamError ??= error;
    });
    const upload = new sdk.Upload({
      client,
      params: {
        Bucket: this.#bucket,
        Key: objectKey,
        Body: counter,
        ContentType: meta.contentType,
      },
      partSize: this.#partSize,
      queueSize: this.#queueSize,
    });
    // Errors of the source reach the counter (and so the uploader); the callback has
    // nothing to add, since every failure surfaces through `done()` below.
    pipeline(body, counter, () => undefined);
    try {
      await upload.done();
    } catch (error) {
      counter.destroy();
      // When the stream failed, that is the cause, even if aborting the multipart upload
      // then failed too: unfinished parts are invisible and a bucket lifecycle rule
      // (AbortIncompleteMultipartUpload) reaps them.
      throw streamError ?? error;
    }
    return { bytes, contentType: meta.contentType };
  }

  async head(key: string): Promise<BlobInfo | null> {
    const objectKey = this.#keyOf(key);
    const { sdk, client } = await this.#sdk();
    try {
      const head = await client.send(
        new sdk.HeadObjectCommand({ Bucket: this.#bucket, Key: objectKey }),
      );
      return {
        bytes: head.ContentLength ?? 0,
        contentType: head.ContentType ?? FALLBACK_CONTENT_TYPE,
      };
    } catch (error) {
      if (isMissing(sdk, error)) return null;
      throw error;
    }
  }

  /** `bytes` is the size of the whole object, also when a range is asked for. */
  async get(
    key: string,
    range?: { start: number; end: number },
  ): Promise<(BlobInfo & { body: Readable }) | null> {
    const objectKey = this.#keyOf(key);
    // S3 answers a malformed Range with the whole object, so refuse one here.
    if (range) checkRange(range);
    const { sdk, client } = await this.#sdk();
    let object: GetObjectCommandOutput;
    try {
      object = await client.send(
        new sdk.GetObjectCommand({
          Bucket: this.#bucket,
          Key: objectKey,
          Range: range && `bytes=${range.start}-${range.end}`,
        }),
      );
    } catch (error) {
      if (isMissing(sdk, error)) return null;
      if (error instanceof sdk.S3ServiceException && error.name === 'InvalidRange') {
        throw new AppError(
          'validation_error',
          `Range ${range?.start}-${range?.end} not satisfiable for ${key}`,
          { param: 'range', cause: error },
        );
      }
      throw error;
    }
    const body = object.Body;
    if (!(body instanceof Readable)) {
      throw new Error(`GetObject ${key}: expected a Node stream body`);
    }
    const contentType = object.ContentType ?? FALLBACK_CONTENT_TYPE;
    if (!range) return { bytes: object.ContentLength ?? 0, contentType, body };
    // Size and bytes come from one response, so a concurrent overwrite cannot pair the
    // old size with the new bytes.
    const served = parseContentRange(object.ContentRange);
    if (!served || served.start !== range.start) {
      body.destroy();
      throw new Error(`GetObject ${key}: the server did not honour range ${range.start}-`);
    }
    const wanted = Math.min(range.end, served.size - 1) - range.start + 1;
    const length = served.end - served.start + 1;
    // Some S3-compatible servers (s3rver among them) read `bytes=0-0` as open-ended.
    const limited =
      length > wanted ? Readable.from(take(body, wanted), { objectMode: false }) : body;
    return { bytes: served.size, contentType, body: limited };
  }

  /**
   * Presigned with the client's credentials. With temporary credentials (an IAM role,
   * as on Lambda) S3 also refuses the URL once the session behind it has expired, which
   * may be sooner than asked; lifetimes past SigV4's 7-day limit are cut to it.
   */
  async signedUrl(
    key: string,
    options: { expiresInSeconds: number; filename?: string },
  ): Promise<string> {
    const objectKey = this.#keyOf(key);
    if (!(options.expiresInSeconds > 0)) {
      throw new AppError('validation_error', 'expiresInSeconds must be positive', {
        param: 'expiresInSeconds',
      });
    }
    const { sdk, client } = await this.#sdk();
    const command = new sdk.GetObjectCommand({
      Bucket: this.#bucket,
      Key: objectKey,
      ResponseContentDisposition:
        options.filename === undefined ? undefined : inlineDisposition(options.filename),
    });
    // Rounded up, so a URL never lives shorter than asked (within the cap).
    const expiresIn = Math.min(Math.ceil(options.expiresInSeconds), MAX_SIGNED_URL_SECONDS);
    return sdk.getSignedUrl(client, command, { expiresIn });
  }

  async delete(key: string): Promise<void> {
    const objectKey = this.#keyOf(key);
    const { sdk, client } = await this.#sdk();
    await client.send(new sdk.DeleteObjectCommand({ Bucket: this.#bucket, Key: objectKey }));
  }

  async ping(): Promise<void> {
    const { sdk, client } = await this.#sdk();
    await client.send(new sdk.HeadBucketCommand({ Bucket: this.#bucket }));
  }

  #keyOf(key: string): string {
    const objectKey = this.#prefix + key;
    if (key.length === 0 || Buffer.byteLength(objectKey) > MAX_KEY_BYTES) {
      throw new AppError('validation_error', `Invalid blob key '${key}'`, { param: 'key' });
    }
    return objectKey;
  }
}

function sizeMismatch(key: string, expected: number, got: string): Error {
  return new Error(`Blob ${key}: expected ${expected} bytes, got ${got}`);
}

function checkRange(range: { start: number; end: number }): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new AppError('validation_error', `Range ${start}-${end} is not a valid byte range`, {
      param: 'range',
    });
  }
}

/** `bytes 10-19/10000`; null for anything else (e.g. an unknown total, `*`). */
function parseContentRange(
  header: string | undefined,
): { start: number; end: number; size: number } | null {
  const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(header ?? '');
  if (!match) return null;
  return { start: Number(match[1]), end: Number(match[2]), size: Number(match[3]) };
}

async function* take(body: Readable, length: number): AsyncGenerator<Buffer> {
  let left = length;
  for await (const chunk of body) {
    const part = (chunk as Buffer).subarray(0, left);
    left -= part.length;
    yield part;
    // Returning ends the loop, which destroys the response instead of draining it.
    if (left === 0) return;
  }
}

function isMissing(sdk: S3Sdk, error: unknown): boolean {
  // HeadObject has no error body, so a missing key there is a bare 404 `NotFound`.
  return (
    error instanceof sdk.S3ServiceException &&
    (error.name === 'NoSuchKey' || error.name === 'NotFound')
  );
}

/**
 * `inline` so browsers play the video; the quoted form is ASCII-only, so other names
 * also get the RFC 6266 `filename*` form that carries them exactly.
 */
function inlineDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  if (ascii === filename) return `inline; filename="${filename}"`;
  const encoded = encodeURIComponent(filename).replace(
    /['()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `inline; filename="${ascii}"; filename*=UTF-8''${encoded}`;
}
