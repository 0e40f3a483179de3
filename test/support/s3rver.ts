/**
 * An S3 endpoint for tests: s3rver on 127.0.0.1 with a free port and a temp directory,
 * or the endpoint named by AWS_ENDPOINT_URL_S3 when that is set.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import S3rver from 's3rver';

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** A new client for the endpoint; the caller destroys it. */
  makeClient(): S3Client;
  stop(): Promise<void>;
}

export async function startS3(): Promise<TestS3> {
  const external = process.env.AWS_ENDPOINT_URL_S3;
  const server = external ? null : await startS3rver();
  const endpoint = external ?? server?.endpoint ?? '';
  const bucket = `reelpostly-test-${randomBytes(6).toString('hex')}`;
  const makeClient = () =>
    new S3Client({
      endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
      forcePathStyle: true,
      // s3rver knows neither aws-chunked uploads nor the checksum headers that the SDK
      // sends by default.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  const client = makeClient();
  try {
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    await server?.stop();
    throw error;
  } finally {
    client.destroy();
  }
  return { endpoint, bucket, makeClient, stop: async () => server?.stop() };
}

async function startS3rver(): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const directory = await mkdtemp(join(tmpdir(), 's3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory });
  try {
    const { port } = await server.run();
    return {
      endpoint: `http://127.0.0.1:${port}`,
      stop: async () => {
        await server.close();
        await rm(directory, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(directory, { recursive: true, force: true });
    throw error;
  }
}
