import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import type { FsBlobStore } from '../../blobs/fs/fs-blob-store.ts';
import { AppError } from '../../core/errors.ts';
import type { BlobStore } from '../../core/ports.ts';

/** Parses a single `bytes=` range; null means "send it all", 'unsatisfiable' means 416. */
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | null | 'unsatisfiable' {
  if (!header) return null;
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  // Multiple or malformed ranges may be ignored (RFC 9110 14.2): serve the whole file.
  if (!match || (match[1] === '' && match[2] === '')) return null;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

/**
 * Streams a stored object with its content type, honouring a single `bytes=` Range
 * (206, or 416 when unsatisfiable) so players can seek.
 */
export async function sendBlob(
  reply: FastifyReply,
  blobs: BlobStore,
  key: string,
  rangeHeader: string | undefined,
): Promise<FastifyReply> {
  const info = await blobs.head(key);
  if (!info) throw new AppError('not_found', 'File not found');
  const range = parseRange(rangeHeader, info.bytes);
  reply.header('Accept-Ranges', 'bytes');
  reply.header('Content-Type', info.contentType);
  if (range === 'unsatisfiable') {
    reply.header('Content-Range', `bytes */${info.bytes}`);
    throw new AppError('validation_error', 'Range not satisfiable', {
      details: { statusCode: 416 },
    });
  }
  const object = await blobs.get(key, range ?? undefined);
  if (!object) throw new AppError('not_found', 'File not found');
  if (range) {
    reply.code(206);
    reply.header('Content-Range', `bytes ${range.start}-${range.end}/${info.bytes}`);
    reply.header('Content-Length', range.end - range.start + 1);
  } else {
    reply.header('Content-Length', info.bytes);
  }
  return reply.send(object.body);
}

/** Serves stored files behind HMAC-signed, expiring URLs, with Range so players can seek. */
export function filesRoutes(files: FsBlobStore): FastifyPluginAsyncTypebox {
  return async (app) => {
    app.get(
      '/files/*',
      {
        schema: {
          summary: 'Download a stored video or image through a signed URL',
          tags: ['files'],
          querystring: Type.Object({
            expires: Type.Optional(Type.String()),
            signature: Type.Optional(Type.String()),
            filename: Type.Optional(Type.String()),
          }),
        },
      },
      async (request, reply) => {
        const key = (request.params as { '*': string })['*'];
        const verdict = files.verifySignature(key, request.query);
        if (verdict === 'expired')
          throw new AppError('validation_error', 'URL expired', { details: { statusCode: 403 } });
        if (verdict !== 'ok')
          throw new AppError('validation_error', 'Invalid signature', {
            details: { statusCode: 403 },
          });

        const filename = request.query.filename;
        reply.header('Cache-Control', 'private, max-age=3600');
        if (filename)
          reply.header(
            'Content-Disposition',
            `inline; filename="${filename.replace(/[^\w.-]/g, '_')}"`,
          );
        return sendBlob(reply, files, key, request.headers.range);
      },
    );
  };
}
