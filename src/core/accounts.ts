import type { Catalog } from './catalog.ts';
import { AppError } from './errors.ts';
import { newId } from './ids.ts';
import { generateApiKey } from './keys.ts';
import type {
  ApiKey,
  AuditAction,
  AuditEntry,
  Clock,
  LedgerEntry,
  Page,
  Store,
  Tenant,
  TenantStatus,
} from './ports.ts';

export interface IssuedKey {
  key: ApiKey;
  /** The only time the plaintext exists outside the client. */
  plaintext: string;
}

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

const STATUS_ACTIONS: Record<TenantStatus, AuditAction> = {
  active: 'tenant.activated',
  suspended: 'tenant.suspended',
  cancelled: 'tenant.cancelled',
};

/**
 * Tenants, their keys and credits: what operators (CLI, later a dashboard) manage.
 * Every change is written to the audit log as done by `actor` (e.g. `cli:alice`).
 */
export class Accounts {
  constructor(
    private readonly store: Store,
    private readonly catalog: Catalog,
    private readonly clock: Clock,
    private readonly actor = 'system',
  ) {}

  async createTenant(input: {
    email: string;
    planId?: string;
    credits?: number;
    tenantId?: string;
    keyName?: string;
  }): Promise<{ tenant: Tenant; apiKey: IssuedKey; balance: number }> {
    if (!EMAIL.test(input.email)) {
      throw new AppError('validation_error', `Invalid email: ${input.email}`, { param: 'email' });
    }
    const planId = input.planId ?? 'starter';
    this.catalog.plan(planId);
    const credits = input.credits ?? 0;
    assertCredits(credits, 0);
    const tenant: Tenant = {
      tenantId: input.tenantId ?? newId('tenant'),
      email: input.email,
      planId,
      status: 'active',
      createdAt: this.clock.now(),
    };
    await this.store.createTenant(tenant);
    await this.audit('tenant.created', tenant.tenantId, tenant.tenantId, {
      email: tenant.email,
      planId,
    });
    const balance =
      credits > 0
        ? (await this.addCredits(tenant.tenantId, credits, { reason: 'initial grant' })).balance
        : 0;
    const apiKey = await this.createKey(tenant.tenantId, { name: input.keyName ?? 'default' });
    return { tenant, apiKey, balance };
  }

  async getTenant(tenantId: string): Promise<Tenant> {
    const tenant = await this.store.getTenant(tenantId);
    if (!tenant) throw new AppError('not_found', `No such tenant: ${tenantId}`);
    return tenant;
  }

  listTenants(options: { after?: string; limit: number }): Promise<Page<Tenant>> {
    return this.store.listTenants(options);
  }

  async setStatus(tenantId: string, status: TenantStatus): Promise<Tenant> {
    const before = await this.getTenant(tenantId);
    const tenant = await this.store.updateTenant(tenantId, { status });
    await this.audit(STATUS_ACTIONS[status], tenantId, tenantId, { from: before.status });
    return tenant;
  }

  async setPlan(tenantId: string, planId: string): Promise<Tenant> {
    this.catalog.plan(planId);
    const before = await this.getTenant(tenantId);
    const tenant = await this.store.updateTenant(tenantId, { planId });
    await this.audit('tenant.plan_changed', tenantId, tenantId, {
      from: before.planId,
      to: planId,
    });
    return tenant;
  }

  async createKey(
    tenantId: string,
    options: { name?: string; expiresAt?: number | null } = {},
  ): Promise<IssuedKey> {
    await this.getTenant(tenantId);
    const { plaintext, hash, prefix } = generateApiKey();
    const key: ApiKey = {
      keyId: newId('key'),
      tenantId,
      name: options.name ?? 'default',
      prefix,
      hash,
      createdAt: this.clock.now(),
      lastUsedAt: null,
      expiresAt: options.expiresAt ?? null,
      revokedAt: null,
    };
    await this.store.createKey(key);
    await this.audit('key.created', tenantId, key.keyId, {
      name: key.name,
      prefix: key.prefix,
      expiresAt: key.expiresAt,
    });
    return { key, plaintext };
  }

  async listKeys(tenantId: string): Promise<ApiKey[]> {
    await this.getTenant(tenantId);
    return this.store.listKeys(tenantId);
  }

  async revokeKey(keyId: string): Promise<ApiKey> {
    const key = await this.store.revokeKey(keyId, this.clock.now());
    await this.audit('key.revoked', key.tenantId, keyId, { prefix: key.prefix });
    return key;
  }

  /** Grants (positive) or adjusts (negative) credits through the ledger. */
  async addCredits(
    tenantId: string,
    amount: number,
    options: { reason?: string; entryId?: string } = {},
  ): Promise<{ balance: number; entry: LedgerEntry }> {
    assertCredits(amount);
    if (amount === 0) throw new AppError('validation_error', 'Amount must not be zero');
    await this.getTenant(tenantId);
    const { balance, entry } = await this.store.post({
      entryId: options.entryId ?? newId('entry'),
      tenantId,
      kind: amount > 0 ? 'grant' : 'adjustment',
      amount,
      reason: options.reason ?? (amount > 0 ? 'operator grant' : 'operator adjustment'),
      jobId: null,
      createdAt: this.clock.now(),
    });
    await this.audit('credits.added', tenantId, entry.entryId, {
      amount,
      reason: entry.reason,
      balance,
    });
    return { balance, entry };
  }

  async balance(tenantId: string): Promise<number> {
    await this.getTenant(tenantId);
    return this.store.getBalance(tenantId);
  }

  /** Operator actions, newest first; one tenant's or everyone's. */
  auditLog(options: { tenantId?: string; limit: number }): Promise<AuditEntry[]> {
    return this.store.listAudit(options);
  }

  /**
   * Written after the action succeeds, so the log never shows an action that did not
   * happen; a crash in between loses the entry, not the action.
   */
  private audit(
    action: AuditAction,
    tenantId: string,
    target: string,
    details: AuditEntry['details'],
  ): Promise<void> {
    return this.store.appendAudit({
      auditId: newId('audit'),
      at: this.clock.now(),
      actor: this.actor,
      action,
      tenantId,
      target,
      details,
    });
  }

  async ledger(
    tenantId: string,
    options: { after?: string; limit: number },
  ): Promise<Page<LedgerEntry>> {
    await this.getTenant(tenantId);
    return this.store.listEntries(tenantId, options);
  }
}

function assertCredits(value: number, minimum = Number.MIN_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new AppError('validation_error', `Credits must be a whole number, got ${value}`, {
      param: 'credits',
    });
  }
}
