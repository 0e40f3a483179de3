import { type Static, Type } from '@fastify/type-provider-typebox';
import type { Job, Page } from '../../../core/ports.ts';

/**
 * OpenAI's Video object, field for field (openai-node v6 `src/resources/videos.ts`,
 * `interface Video`). Timestamps are unix seconds.
 */
export const VideoSchema = Type.Object(
  {
    id: Type.String({ examples: ['video_68d7512d07848190b3e45da0ecbebcde'] }),
    object: Type.Literal('video'),
    model: Type.String({ examples: ['sora-2'] }),
    status: Type.Union([
      Type.Literal('queued'),
      Type.Literal('in_progress'),
      Type.Literal('completed'),
      Type.Literal('failed'),
    ]),
    progress: Type.Integer({ minimum: 0, maximum: 100, examples: [42] }),
    created_at: Type.Integer({ examples: [1796212800] }),
    completed_at: Type.Union([Type.Integer(), Type.Null()]),
    expires_at: Type.Union([Type.Integer(), Type.Null()], {
      description:
        'When the stored assets stop being downloadable. Always null here: assets are kept until the video is deleted.',
    }),
    prompt: Type.Union([Type.String(), Type.Null()]),
    size: Type.String({ examples: ['720x1280'] }),
    seconds: Type.String({ examples: ['4'] }),
    remixed_from_video_id: Type.Union([Type.String(), Type.Null()]),
    error: Type.Union([Type.Object({ code: Type.String(), message: Type.String() }), Type.Null()]),
    served_by: Type.Object(
      {
        provider: Type.String({ examples: ['fal'] }),
        model: Type.String({ examples: ['fal-ai/veo3.1'] }),
      },
      {
        description:
          'Extension: the upstream provider and model that serve this video (after any failover).',
      },
    ),
  },
  { description: "OpenAI's Video object, plus `served_by`" },
);

export type OpenAIVideo = Static<typeof VideoSchema>;

export const VideoListSchema = Type.Object({
  object: Type.Literal('list'),
  data: Type.Array(VideoSchema),
  first_id: Type.Union([Type.String(), Type.Null()]),
  last_id: Type.Union([Type.String(), Type.Null()]),
  has_more: Type.Boolean(),
});

const toSeconds = (ms: number) => Math.floor(ms / 1000);

export function presentVideo(job: Job): OpenAIVideo {
  return {
    id: job.jobId,
    object: 'video',
    model: job.model,
    status: job.state,
    progress: Math.round(job.progress),
    created_at: toSeconds(job.createdAt),
    completed_at: job.completedAt === null ? null : toSeconds(job.completedAt),
    expires_at: null,
    prompt: job.prompt,
    size: job.size,
    seconds: String(job.seconds),
    remixed_from_video_id: job.remixedFromJobId,
    error: job.error ? { code: job.error.code, message: job.error.message } : null,
    served_by: { provider: job.provider, model: job.upstreamModel },
  };
}

export function presentVideoList(page: Page<Job>): Static<typeof VideoListSchema> {
  const data = page.items.map(presentVideo);
  return {
    object: 'list',
    data,
    first_id: data[0]?.id ?? null,
    last_id: data.at(-1)?.id ?? null,
    has_more: page.next !== null,
  };
}
