import { randomBytes, randomInt } from 'node:crypto';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** Uniform base62 string from the CSPRNG (randomInt rejects modulo bias). */
export function randomBase62(length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += BASE62[randomInt(62)];
  return out;
}

/** `video_` + 32 hex chars, the shape OpenAI's video ids had. */
export function newVideoId(): string {
  return `video_${randomBytes(16).toString('hex')}`;
}

export function newId(prefix: string): string {
  return `${prefix}_${randomBase62(16)}`;
}
