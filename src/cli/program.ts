import { Command, InvalidArgumentError } from 'commander';
import { quotaPeriod } from '../core/limits.ts';
import type { ApiKey, AuditEntry, Job, LedgerEntry, Tenant, TenantStatus } from '../core/ports.ts';
import type { Services } from '../services.ts';
import { addWebhookCommands } from './webhooks.ts';

export interface CliIo {
  out(text: string): void;
}

type Row = Record<string, string | number | null | undefined>;

/** Aligned columns for people; `--json` prints the raw objects for scripts. */
export function formatTable(rows: Row[], columns: string[]): string {
  if (rows.length === 0) return '(none)';
  const cells = rows.map((row) => columns.map((c) => String(row[c] ?? '-')));
  const widths = columns.map((c, i) =>
    Math.max(c.length, ...cells.map((r) => (r[i] as string).length)),
  );
  const line = (values: string[]) =>
    values
      .map((v, i) => v.padEnd(widths[i] as number))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.toUpperCase())), ...cells.map(line)].join('\n');
}

function iso(ms: number | null): string | null {
  return ms === null ? null : new Date(ms).toISOString();
}

function integer(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number');
  return n;
}

function keyRow(key: ApiKey): Row {
  const state =
    key.revokedAt !== null
      ? 'revoked'
      : key.expiresAt !== null && key.expiresAt <= Date.now()
        ? 'expired'
        : 'active';
  return {
    keyId: key.keyId,
    name: key.name,
    prefix: `${key.prefix}…`,
    state,
    created: iso(key.createdAt),
    lastUsed: iso(key.lastUsedAt),
    expires: iso(key.expiresAt),
  };
}

function publicKey(key: ApiKey): Omit<ApiKey, 'hash'> {
  const { hash: _hash, ...rest } = key;
  return rest;
}

function tenantRow(t: Tenant): Row {
  return {
    tenantId: t.tenantId,
    email: t.email,
    plan: t.planId,
    status: t.status,
    created: iso(t.createdAt),
  };
}

function ledgerRow(e: LedgerEntry): Row {
  return {
    at: iso(e.createdAt),
    kind: e.kind,
    amount: e.amount,
    balance: e.balanceAfter,
    job: e.jobId,
    reason: e.reason,
  };
}

function auditRow(e: AuditEntry): Row {
  return {
    at: iso(e.at),
    actor: e.actor,
    action: e.action,
    tenant: e.tenantId,
    target: e.target,
    details: JSON.stringify(e.details),
  };
}

function jobRow(j: Job): Row {
  return {
    videoId: j.jobId,
    tenant: j.tenantId,
    model: j.model,
    servedBy: `${j.provider}:${j.upstreamModel}`,
    state: j.state,
    progress: j.progress,
    cost: j.cost,
    created: iso(j.createdAt),
    error: j.error?.code,
  };
}

/**
 * The operator CLI. `withServices` opens the configured store for one command and
 * closes it after, so commands are safe to run while the server is up.
 */
export function buildProgram(options: {
  io: CliIo;
  withServices: <T>(fn: (services: Services) => Promise<T>) => Promise<T>;
  serve: () => Promise<void>;
}): Command {
  const { io, withServices } = options;
  const print = (json: boolean | undefined, data: unknown, human: () => string) =>
    io.out(json ? JSON.stringify(data, null, 2) : human());

  const program = new Command('reelpostly')
    .description('ReelPostly video API gateway: server and operator commands')
    .showHelpAfterError();

  program
    .command('serve')
    .description('Run the gateway (HTTP API and job worker)')
    .action(options.serve);

  program
    .command('migrate')
    .description('Bring the configured store to the current schema')
    .action(() => withServices(async () => io.out('Store is at the current schema.')));

  const tenants = program.command('tenants').description('Manage tenants');
  tenants
    .command('create')
    .description('Create a tenant and its first API key (shown once)')
    .requiredOption('--email <email>', 'contact email')
    .option('--plan <plan>', 'plan id', 'starter')
    .option('--credits <n>', 'initial credits', integer, 0)
    .option('--id <tenantId>', 'tenant id (default: generated)')
    .option('--json', 'print JSON')
    .action((o: { email: string; plan: string; credits: number; id?: string; json?: boolean }) =>
      withServices(async (s) => {
        const { tenant, apiKey, balance } = await s.accounts.createTenant({
          email: o.email,
          planId: o.plan,
          credits: o.credits,
          ...(o.id ? { tenantId: o.id } : {}),
        });
        print(
          o.json,
          { ...tenant, credits: balance, apiKey: apiKey.plaintext, keyId: apiKey.key.keyId },
          () =>
            [
              `Tenant ${tenant.tenantId} (${tenant.email}, plan ${tenant.planId}) created with ${balance} credits.`,
              `API key: ${apiKey.plaintext}`,
              'Store it now: it is not shown again.',
            ].join('\n'),
        );
      }),
    );
  tenants
    .command('list')
    .description('List tenants')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) =>
      withServices(async (s) => {
        const all: Tenant[] = [];
        let after: string | undefined;
        do {
          const page = await s.accounts.listTenants({ limit: 500, ...(after ? { after } : {}) });
          all.push(...page.items);
          after = page.next ?? undefined;
        } while (after);
        print(o.json, all, () =>
          formatTable(all.map(tenantRow), ['tenantId', 'email', 'plan', 'status', 'created']),
        );
      }),
    );
  tenants
    .command('show <tenantId>')
    .description('Show a tenant with its balance, keys and this month’s usage')
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const tenant = await s.accounts.getTenant(tenantId);
        const credits = await s.accounts.balance(tenantId);
        const keys = await s.accounts.listKeys(tenantId);
        const period = quotaPeriod(s.clock.now());
        const plan = s.catalog.plan(tenant.planId);
        const usage = await Promise.all(
          keys.map(async (k) => ({
            keyId: k.keyId,
            requests: await s.store.getQuotaUsage(`key:${k.keyId}`, period),
          })),
        );
        print(o.json, { ...tenant, credits, plan, period, usage, keys: keys.map(publicKey) }, () =>
          [
            formatTable(
              [{ ...tenantRow(tenant), credits }],
              ['tenantId', 'email', 'plan', 'status', 'credits', 'created'],
            ),
            '',
            `Plan ${plan.planId}: ${plan.ratePerSecond} req/s, burst ${plan.burst}, ${plan.monthlyQuota} requests/month per key`,
            '',
            formatTable(
              keys.map((k) => ({
                ...keyRow(k),
                [`used ${period}`]: usage.find((u) => u.keyId === k.keyId)?.requests ?? 0,
              })),
              ['keyId', 'name', 'prefix', 'state', `used ${period}`, 'lastUsed'],
            ),
          ].join('\n'),
        );
      }),
    );
  const setStatus = (status: TenantStatus, verb: string) =>
    tenants
      .command(`${verb} <tenantId>`)
      .description(`Set a tenant ${status}`)
      .option('--json', 'print JSON')
      .action((tenantId: string, o: { json?: boolean }) =>
        withServices(async (s) => {
          const tenant = await s.accounts.setStatus(tenantId, status);
          print(o.json, tenant, () => `Tenant ${tenant.tenantId} is now ${tenant.status}.`);
        }),
      );
  setStatus('suspended', 'suspend');
  setStatus('active', 'activate');
  setStatus('cancelled', 'cancel');
  tenants
    .command('set-plan <tenantId> <plan>')
    .description('Move a tenant to another plan')
    .option('--json', 'print JSON')
    .action((tenantId: string, plan: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const tenant = await s.accounts.setPlan(tenantId, plan);
        print(o.json, tenant, () => `Tenant ${tenant.tenantId} is now on plan ${tenant.planId}.`);
      }),
    );

  addWebhookCommands(program, { withServices, print });

  const keys = program.command('keys').description('Manage API keys');
  keys
    .command('create <tenantId>')
    .description('Create an API key (shown once)')
    .option('--name <name>', 'label', 'default')
    .option('--expires-in-days <days>', 'expire after this many days', integer)
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { name: string; expiresInDays?: number; json?: boolean }) =>
      withServices(async (s) => {
        const expiresAt =
          o.expiresInDays === undefined ? null : s.clock.now() + o.expiresInDays * 86_400_000;
        const { key, plaintext } = await s.accounts.createKey(tenantId, {
          name: o.name,
          expiresAt,
        });
        print(o.json, { ...publicKey(key), apiKey: plaintext }, () =>
          [
            `Key ${key.keyId} (${key.name}) for ${tenantId}:`,
            `API key: ${plaintext}`,
            'Store it now: it is not shown again.',
          ].join('\n'),
        );
      }),
    );
  keys
    .command('list <tenantId>')
    .description('List a tenant’s keys (prefixes only)')
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const list = await s.accounts.listKeys(tenantId);
        print(o.json, list.map(publicKey), () =>
          formatTable(list.map(keyRow), [
            'keyId',
            'name',
            'prefix',
            'state',
            'created',
            'lastUsed',
            'expires',
          ]),
        );
      }),
    );
  keys
    .command('revoke <keyId>')
    .description('Revoke a key at once')
    .option('--json', 'print JSON')
    .action((keyId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const key = await s.accounts.revokeKey(keyId);
        print(o.json, publicKey(key), () => `Key ${key.keyId} revoked at ${iso(key.revokedAt)}.`);
      }),
    );

  const credits = program.command('credits').description('Manage credits');
  credits
    .command('add <tenantId> <amount>')
    .description('Grant credits (a negative amount records an adjustment)')
    .option('--reason <reason>', 'why, for the ledger')
    .option('--json', 'print JSON')
    .action((tenantId: string, amount: string, o: { reason?: string; json?: boolean }) =>
      withServices(async (s) => {
        const result = await s.accounts.addCredits(
          tenantId,
          integer(amount),
          o.reason ? { reason: o.reason } : {},
        );
        print(
          o.json,
          result,
          () =>
            `${tenantId}: ${result.entry.amount > 0 ? '+' : ''}${result.entry.amount} credits, balance ${result.balance}.`,
        );
      }),
    );
  credits
    .command('show <tenantId>')
    .description('Show the credit balance')
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const balance = await s.accounts.balance(tenantId);
        print(o.json, { tenantId, credits: balance }, () => `${tenantId}: ${balance} credits`);
      }),
    );
  credits
    .command('ledger <tenantId>')
    .description('Show the ledger, oldest first')
    .option('--limit <n>', 'entries to show', integer, 100)
    .option('--after <cursor>', 'continue after this cursor')
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { limit: number; after?: string; json?: boolean }) =>
      withServices(async (s) => {
        const page = await s.accounts.ledger(tenantId, {
          limit: o.limit,
          ...(o.after ? { after: o.after } : {}),
        });
        print(o.json, page, () =>
          [
            formatTable(page.items.map(ledgerRow), [
              'at',
              'kind',
              'amount',
              'balance',
              'job',
              'reason',
            ]),
            ...(page.next ? [`More: --after ${page.next}`] : []),
          ].join('\n'),
        );
      }),
    );

  program
    .command('audit')
    .description('Operator actions (credits, keys, tenant changes), newest first')
    .option('--tenant <tenantId>', 'only this tenant')
    .option('--limit <n>', 'entries to show', integer, 50)
    .option('--json', 'print JSON')
    .action((o: { tenant?: string; limit: number; json?: boolean }) =>
      withServices(async (s) => {
        const entries = await s.accounts.auditLog({
          limit: o.limit,
          ...(o.tenant ? { tenantId: o.tenant } : {}),
        });
        print(o.json, entries, () =>
          formatTable(entries.map(auditRow), [
            'at',
            'actor',
            'action',
            'tenant',
            'target',
            'details',
          ]),
        );
      }),
    );

  program
    .command('videos')
    .description('Video jobs')
    .command('list')
    .description('List video jobs, newest first')
    .option('--tenant <tenantId>', 'only this tenant')
    .option('--limit <n>', 'jobs to show', integer, 50)
    .option('--json', 'print JSON')
    .action((o: { tenant?: string; limit: number; json?: boolean }) =>
      withServices(async (s) => {
        const page = await s.store.listJobs({
          limit: o.limit,
          order: 'desc',
          ...(o.tenant ? { tenantId: o.tenant } : {}),
        });
        print(o.json, page.items, () =>
          formatTable(page.items.map(jobRow), [
            'videoId',
            'tenant',
            'model',
            'state',
            'progress',
            'cost',
            'created',
            'error',
          ]),
        );
      }),
    );

  program
    .command('models')
    .description('The model catalog: allowed values, prices, and the routes that serve each model')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) =>
      withServices(async (s) => {
        const models = [...s.catalog.models.values()].map((m) => ({
          ...m,
          routes: m.routes.map((r) => ({ ...r, configured: s.providers.has(r.provider) })),
        }));
        print(o.json, models, () =>
          formatTable(
            models.flatMap((m) =>
              m.routes.map((r, i) => ({
                model: i === 0 ? m.id : '',
                price: i === 0 ? `${m.price.credits}/${m.price.per}` : '',
                seconds: i === 0 ? m.seconds.join(',') : '',
                sizes: i === 0 ? m.sizes.join(',') : '',
                route: `${i + 1}. ${r.provider}:${r.upstreamModel}${r.params ? ` (${r.params})` : ''}`,
                configured: r.configured ? 'yes' : 'no',
              })),
            ),
            ['model', 'price', 'seconds', 'sizes', 'route', 'configured'],
          ),
        );
      }),
    );

  program
    .command('providers')
    .description('Upstream providers')
    .command('check')
    .description('For each configured provider: reachable, key accepted')
    .option('--json', 'print JSON')
    .action((o: { json?: boolean }) =>
      withServices(async (s) => {
        const results = await Promise.all(
          [...s.providers.values()].map(async (p) => {
            if (!p.check)
              return { provider: p.id, reachable: true, authenticated: true, detail: 'built in' };
            try {
              return { provider: p.id, ...(await p.check()) };
            } catch (error) {
              return {
                provider: p.id,
                reachable: false,
                authenticated: false,
                detail: (error as Error).message,
              };
            }
          }),
        );
        print(o.json, results, () =>
          formatTable(
            results.map((r) => ({
              ...r,
              reachable: r.reachable ? 'yes' : 'NO',
              authenticated: r.authenticated ? 'yes' : 'NO',
            })),
            ['provider', 'reachable', 'authenticated', 'detail'],
          ),
        );
        if (results.some((r) => !r.reachable || !r.authenticated)) process.exitCode = 1;
      }),
    );

  return program;
}
