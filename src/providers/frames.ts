import type { InputReference } from '../core/ports.ts';

/** The frame shape an upstream is asked for: aspect ratio + resolution tier. */
export interface Frame {
  aspectRatio: '16:9' | '9:16';
  resolution: '720p' | '1080p';
}

/**
 * Our Sora-style sizes as the aspect-ratio + resolution pair today's upstreams take
 * (OpenRouter, fal, Replicate). 1792x1024 / 1024x1792 have no exact upstream size and
 * are served at the nearest tier, 1080p.
 */
export const FRAMES: Readonly<Record<string, Frame>> = {
  '1280x720': { aspectRatio: '16:9', resolution: '720p' },
  '720x1280': { aspectRatio: '9:16', resolution: '720p' },
  '1792x1024': { aspectRatio: '16:9', resolution: '1080p' },
  '1024x1792': { aspectRatio: '9:16', resolution: '1080p' },
};

/**
 * A reference image as the URL upstreams accept: the client's URL as given, uploaded
 * bytes as a `data:` URL; undefined when there are neither.
 */
export function referenceImageUrl(
  reference: InputReference | undefined,
  fallbackType = 'image/png',
): string | undefined {
  if (!reference) return undefined;
  if (reference.url) return reference.url;
  if (!reference.data) return undefined;
  return `data:${reference.contentType ?? fallbackType};base64,${reference.data.toString('base64')}`;
}
