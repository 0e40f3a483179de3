import type { RateDecision, RateLimitParams } from './ports.ts';

/**
 * Generic cell rate algorithm: the whole bucket state is one number, the theoretical
 * arrival time (TAT). Stores call this inside their atomic read-modify-write and
 * persist `tat` only when the request is allowed.
 */
export function gcra(
  storedTat: number | null,
  params: RateLimitParams,
  now: number,
): RateDecision & { tat: number } {
  const interval = 1000 / params.ratePerSecond;
  const capacity = interval * params.burst;
  const base = Math.max(storedTat ?? 0, now);
  const newTat = base + interval;
  const ahead = newTat - now;
  if (ahead > capacity) {
    return {
      allowed: false,
      limit: params.burst,
      remaining: 0,
      retryAfterMs: Math.ceil(ahead - capacity),
      resetMs: Math.ceil(base - now),
      tat: storedTat ?? 0,
    };
  }
  return {
    allowed: true,
    limit: params.burst,
    remaining: Math.floor((capacity - ahead) / interval),
    retryAfterMs: 0,
    resetMs: Math.ceil(ahead),
    tat: newTat,
  };
}

/** The last month computed and the instants it spans: every request asks. */
let month = { period: '', from: 0, until: 0 };

/** The calendar month (UTC) a quota counts against, e.g. `2026-12`. */
export function quotaPeriod(now: number): string {
  if (now < month.from || now >= month.until) {
    const date = new Date(now);
    const year = date.getUTCFullYear();
    const index = date.getUTCMonth();
    month = {
      period: date.toISOString().slice(0, 7),
      from: Date.UTC(year, index, 1),
      until: Date.UTC(year, index + 1, 1),
    };
  }
  return month.period;
}
