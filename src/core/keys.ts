import { hash } from 'node:crypto';
import { randomBase62 } from './ids.ts';

export const KEY_PREFIX = 'rp_live_';
const KEY_BODY_LENGTH = 40;
const DISPLAY_LENGTH = KEY_PREFIX.length + 6;

/** A fresh API key: the plaintext (shown once), its hash and its display prefix. */
export function generateApiKey(): { plaintext: string; hash: string; prefix: string } {
  const plaintext = KEY_PREFIX + randomBase62(KEY_BODY_LENGTH);
  return { plaintext, hash: hashApiKey(plaintext), prefix: plaintext.slice(0, DISPLAY_LENGTH) };
}

/** Every authenticated request hashes its key: the one-shot `hash` is ~2x `createHash` here. */
export function hashApiKey(plaintext: string): string {
  return hash('sha256', plaintext, 'hex');
}

/** Cheap shape check so garbage never reaches the store. */
export function looksLikeApiKey(value: string): boolean {
  return /^rp_live_[0-9A-Za-z]{32,128}$/.test(value);
}
