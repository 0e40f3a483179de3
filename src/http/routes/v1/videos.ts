import { type FastifyPluginAsyncTypebox, Type } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import type { Job } from '../../../core/ports.ts';
import type { Services } from '../../../services.ts';
import { callerOf } from '../../auth.ts';
import { idempotent } from '../../idempotency.ts';
import { sendBlob } from '../files.ts';
import { OpenAIErrorBody, presentOpenAIError } from './errors.ts';
import {
  inputReferenceOf,
  MAX_REFERENCE_BYTES,
  parseMultipartBody,
  uploadDigest,
} from './input-reference.ts';
import { presentVideo, presentVideoList, VideoListSchema, VideoSchema } from './present.ts';

const Errors = { '4xx': OpenAIErrorBody, '5xx': OpenAIErrorBody };
const VideoId = Type.Object({
  video_id: Type.String({ description: 'The id of the video', examples: ['video_123'] }),
});
/** Room for a 10 MB reference image sent base64 inside JSON. */
const CREATE_BODY_LIMIT = Math.ceil(MAX_REFERENCE_BYTES * 1.4) + 64 * 1024;

const CreateVideoBody = Type.Object(
  {
    prompt: Type.String({
      description: 'Text prompt that describes the video to generate.',
      examples: ['A calico cat playing a piano on stage, warm spotlight'],
    }),
    model: Type.Optional(
      Type.String({
        description: 'Model id from GET /v1/models; defaults to the catalog default (sora-2).',
        examples: ['sora-2'],
      }),
    ),
    seconds: Type.Optional(
      Type.Union([Type.String({ pattern: '^[0-9]+$' }), Type.Integer()], {
        description:
          'Clip length: "4", "8" or "12" (default "4"). OpenAI takes a string; a number is accepted too.',
        examples: ['8'],
      }),
    ),
    size: Type.Optional(
      Type.String({
        description: 'WIDTHxHEIGHT: 720x1280 (default), 1280x720, 1024x1792 or 1792x1024.',
        examples: ['1280x720'],
      }),
    ),
    input_reference: Type.Optional(
      Type.Union(
        [
          Type.Object({
            image_url: Type.Optional(
              Type.String({ description: 'An http(s) URL or a base64 data: URL' }),
            ),
            file_id: Type.Optional(
              Type.String({ description: 'Not supported: this API has no Files endpoint (400)' }),
            ),
          }),
          Type.Unsafe<string>({
            type: 'string',
            contentMediaType: 'image/*',
            description: 'multipart/form-data only: the image file part (JPEG, PNG or WebP)',
          }),
        ],
        {
          description:
            'Reference image guiding the first frame, for models that take one. Up to 10 MB, JPEG, PNG or WebP.',
        },
      ),
    ),
    webhook_url: Type.Optional(
      Type.String({
        description:
          "Extension: also POST this video's video.completed / video.failed here, signed (Standard Webhooks) with your webhook endpoints' secret; register an endpoint first. https and a public address.",
        examples: ['https://example.com/hooks/reelpostly'],
      }),
    ),
  },
  { additionalProperties: true },
);

const RemixBody = Type.Object({
  prompt: Type.String({
    description: 'Updated text prompt that directs the remix.',
    examples: ['Same scene, but at night in the rain'],
  }),
});

const ListQuery = Type.Object({
  after: Type.Optional(Type.String({ description: 'Id of the last video of the previous page' })),
  limit: Type.Integer({ minimum: 1, maximum: 100, default: 20 }),
  order: Type.Union([Type.Literal('asc'), Type.Literal('desc')], {
    default: 'desc',
    description: 'By creation time',
  }),
});

const ContentQuery = Type.Object({
  variant: Type.Union(
    [Type.Literal('video'), Type.Literal('thumbnail'), Type.Literal('spritesheet')],
    { default: 'video', description: 'video (MP4), thumbnail (WebP) or spritesheet (JPEG)' },
  ),
});

const FILE = { schema: { type: 'string', format: 'binary' } };
const FILE_CONTENT = { 'video/mp4': FILE, 'image/webp': FILE, 'image/jpeg': FILE };

/**
 * The OpenAI-compatible `/v1/videos` surface (openai-node v6 `src/resources/videos.ts`
 * and openai-openapi are the contract). Same core as the seed routes: a video created
 * on either surface is visible on both.
 */
export function videosRoutes(services: Services): FastifyPluginAsyncTypebox {
  const pollAfterMs = String(services.config.jobs.pollIntervalMs);
  /** Tells pollers (the SDK's among them) how long to wait before asking again. */
  const sendVideo = (reply: FastifyReply, job: Job) => {
    if (job.state === 'queued' || job.state === 'in_progress') {
      reply.header('openai-poll-after-ms', pollAfterMs);
    }
    return presentVideo(job);
  };

  return async (app) => {
    app.post(
      '/videos',
      {
        bodyLimit: CREATE_BODY_LIMIT,
        preValidation: parseMultipartBody,
        schema: {
          summary: 'Create a video',
          description:
            'Starts a video generation job and charges its price in credits (402 when the balance cannot cover it). Accepts JSON or multipart/form-data; an `Idempotency-Key` header makes retries safe.',
          tags: ['videos'],
          consumes: ['application/json', 'multipart/form-data'],
          body: CreateVideoBody,
          response: { 200: VideoSchema, ...Errors },
        },
      },
      async (request, reply) => {
        const caller = callerOf(request);
        const { prompt, model, seconds, size, input_reference, webhook_url } = request.body;
        const inputReference = inputReferenceOf(request, input_reference);
        const fingerprint = uploadDigest(request);
        return idempotent(services, request, reply, {
          presentError: presentOpenAIError,
          ...(fingerprint ? { fingerprint } : {}),
          run: async () => {
            const { job } = await services.videos.generate({
              tenantId: caller.tenant.tenantId,
              keyId: caller.key.keyId,
              prompt,
              ...(model === undefined ? {} : { model }),
              ...(seconds === undefined ? {} : { seconds: Number(seconds) }),
              ...(size === undefined ? {} : { size }),
              ...(inputReference ? { inputReference } : {}),
              ...(webhook_url === undefined ? {} : { webhookUrl: webhook_url }),
            });
            return { statusCode: 200, body: sendVideo(reply, job) };
          },
        });
      },
    );

    app.get(
      '/videos',
      {
        schema: {
          summary: 'List videos',
          description: "The caller's videos, newest first by default, in cursor pages.",
          tags: ['videos'],
          querystring: ListQuery,
          response: { 200: VideoListSchema, ...Errors },
        },
      },
      async (request) => {
        const { after, limit, order } = request.query;
        const page = await services.videos.list(callerOf(request).tenant.tenantId, {
          ...(after === undefined ? {} : { after }),
          limit,
          order,
        });
        return presentVideoList(page);
      },
    );

    app.get(
      '/videos/:video_id',
      {
        schema: {
          summary: 'Retrieve a video',
          description:
            'The latest state of a video. While it is queued or in progress the response carries `openai-poll-after-ms`.',
          tags: ['videos'],
          params: VideoId,
          response: { 200: VideoSchema, ...Errors },
        },
      },
      async (request, reply) => {
        const job = await services.videos.get(
          callerOf(request).tenant.tenantId,
          request.params.video_id,
        );
        return sendVideo(reply, job);
      },
    );

    app.delete(
      '/videos/:video_id',
      {
        schema: {
          summary: 'Delete a video',
          description:
            'Deletes a completed or failed video and its stored files (400 while it is still running). Credits are not returned.',
          tags: ['videos'],
          params: VideoId,
          response: {
            200: Type.Object({
              id: Type.String(),
              object: Type.Literal('video.deleted'),
              deleted: Type.Boolean(),
            }),
            ...Errors,
          },
        },
      },
      async (request) => {
        const job = await services.videos.delete(
          callerOf(request).tenant.tenantId,
          request.params.video_id,
        );
        return { id: job.jobId, object: 'video.deleted' as const, deleted: true };
      },
    );

    app.get(
      '/videos/:video_id/content',
      {
        schema: {
          summary: 'Download video content',
          description:
            'Streams the stored MP4, thumbnail or spritesheet; supports `Range`. 404 with code `video_not_ready` until the video has completed.',
          tags: ['videos'],
          params: VideoId,
          querystring: ContentQuery,
          response: {
            200: { description: 'The file', content: FILE_CONTENT },
            206: { description: 'The requested byte range', content: FILE_CONTENT },
            ...Errors,
          },
        },
      },
      async (request, reply) => {
        const { video_id } = request.params;
        const { variant } = request.query;
        const key = await services.videos.assetKey(
          callerOf(request).tenant.tenantId,
          video_id,
          variant,
        );
        reply.header('Cache-Control', 'private, max-age=3600');
        return sendBlob(reply, services.blobs, key, request.headers.range);
      },
    );

    app.post(
      '/videos/:video_id/remix',
      {
        preValidation: parseMultipartBody,
        schema: {
          summary: 'Remix a video',
          description:
            'A new video from a completed one and a new prompt, charged like a new video. 400 when the model serving the source cannot remix.',
          tags: ['videos'],
          consumes: ['application/json', 'multipart/form-data'],
          params: VideoId,
          body: RemixBody,
          response: { 200: VideoSchema, ...Errors },
        },
      },
      async (request, reply) => {
        const caller = callerOf(request);
        return idempotent(services, request, reply, {
          presentError: presentOpenAIError,
          run: async () => {
            const { job } = await services.videos.remix({
              tenantId: caller.tenant.tenantId,
              keyId: caller.key.keyId,
              sourceJobId: request.params.video_id,
              prompt: request.body.prompt,
            });
            return { statusCode: 200, body: sendVideo(reply, job) };
          },
        });
      },
    );
  };
}
