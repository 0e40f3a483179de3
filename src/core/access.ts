import type { Catalog, Plan } from './catalog.ts';
import { AppError } from './errors.ts';
import { hashApiKey, looksLikeApiKey } from './keys.ts';
import { quotaPeriod } from './limits.ts';
import type { ApiKey, Clock, QuotaDecision, RateDecision, Store, Tenant } from './ports.ts';

export interface Caller {
  tenant: Tenant;
  key: ApiKey;
  plan: Plan;
  rate: RateDecision;
  quota: QuotaDecision;
}

/** How stale `lastUsedAt` may get before a request records it again (spares writes). */
const TOUCH_EVERY_MS = 60_000;

/**
 * The gate every authenticated request passes: key, tenant status, then the plan's
 * rate (GCRA burst) and monthly quota, counted per key in one store call so every
 * process sharing the store enforces one limit.
 */
export class Access {
  constructor(
    private readonly store: Store,
    private readonly catalog: Catalog,
    private readonly clock: Clock,
  ) {}

  async authenticate(plaintext: string | undefined): Promise<Caller> {
    if (!plaintext) throw new AppError('missing_api_key', 'Missing API key');
    const now = this.clock.now();
    const key = looksLikeApiKey(plaintext)
      ? await this.store.findKeyByHash(hashApiKey(plaintext))
      : null;
    if (!key) throw new AppError('invalid_api_key', 'Invalid API key');
    if (key.revokedAt !== null) throw new AppError('invalid_api_key', 'API key revoked');
    if (key.expiresAt !== null && key.expiresAt <= now) {
      throw new AppError('invalid_api_key', 'API key expired');
    }
    const tenant = await this.store.getTenant(key.tenantId);
    if (!tenant) throw new AppError('invalid_api_key', 'Invalid API key');
    if (tenant.status !== 'active') {
      throw new AppError('tenant_suspended', `Tenant ${tenant.status}`);
    }
    const plan = this.catalog.plan(tenant.planId);

    const { rate, quota } = await this.store.consumeLimits(
      `key:${key.keyId}`,
      {
        rate: { ratePerSecond: plan.ratePerSecond, burst: plan.burst },
        quota: { period: quotaPeriod(now), limit: plan.monthlyQuota },
      },
      now,
    );
    if (!rate.allowed || !quota) {
      throw new AppError(
        'rate_limited',
        `Rate limit exceeded: ${plan.ratePerSecond} requests per second, burst ${plan.burst}`,
        { details: { rate, retryAfterMs: rate.retryAfterMs } },
      );
    }
    if (!quota.allowed) {
      throw new AppError(
        'quota_exceeded',
        `Monthly quota exceeded: ${plan.monthlyQuota} requests per month`,
        { details: { rate, quota, retryAfterMs: msUntilNextMonth(now) } },
      );
    }
    if (key.lastUsedAt === null || now - key.lastUsedAt >= TOUCH_EVERY_MS) {
      await this.store.touchKey(key.keyId, now);
    }
    return { tenant, key, plan, rate, quota };
  }
}

function msUntilNextMonth(now: number): number {
  const d = new Date(now);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) - now;
}
