import type Database from 'better-sqlite3';
import { JOB_ENDPOINTS_MIGRATION, WEBHOOKS_MIGRATION } from './webhook-sql.ts';

/**
 * The schema as ordered steps: migration N (1-based) brings `PRAGMA user_version`
 * from N-1 to N. Append new steps; never edit one that has shipped, since existing
 * files have already run it.
 */
export const migrations: readonly string[] = [
  `
  CREATE TABLE tenants (
    tenant_id  TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    plan_id    TEXT NOT NULL,
    status     TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'cancelled')),
    created_at INTEGER NOT NULL
  ) STRICT;

  CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants (tenant_id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    hash         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
  ) STRICT;
  CREATE UNIQUE INDEX api_keys_hash ON api_keys (hash);
  CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at, key_id);

  -- The CHECK is a last line of defence: post() refuses overdrafts before writing.
  CREATE TABLE balances (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (tenant_id),
    balance   INTEGER NOT NULL CHECK (balance >= 0)
  ) STRICT;

  -- seq gives a total insertion order per file, which createdAt (caller-supplied,
  -- millisecond resolution) cannot.
  CREATE TABLE ledger_entries (
    seq           INTEGER PRIMARY KEY,
    entry_id      TEXT NOT NULL UNIQUE,
    tenant_id     TEXT NOT NULL REFERENCES tenants (tenant_id),
    kind          TEXT NOT NULL CHECK (kind IN ('grant', 'charge', 'refund', 'adjustment')),
    amount        INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    job_id        TEXT,
    created_at    INTEGER NOT NULL,
    balance_after INTEGER NOT NULL CHECK (balance_after >= 0)
  ) STRICT;
  CREATE INDEX ledger_entries_tenant ON ledger_entries (tenant_id, seq);

  -- Money history must be reconstructible, so the database itself refuses edits.
  CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
  BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;
  CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
  BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only'); END;

  CREATE TABLE jobs (
    job_id              TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL REFERENCES tenants (tenant_id),
    key_id              TEXT NOT NULL,
    model               TEXT NOT NULL,
    provider            TEXT NOT NULL,
    upstream_model      TEXT NOT NULL,
    provider_job_id     TEXT,
    prompt              TEXT NOT NULL,
    seconds             REAL NOT NULL,
    size                TEXT NOT NULL,
    state               TEXT NOT NULL
                        CHECK (state IN ('queued', 'in_progress', 'completed', 'failed')),
    progress            REAL NOT NULL,
    provider_status     TEXT NOT NULL,
    error               TEXT,
    cost                INTEGER NOT NULL,
    asset               TEXT,
    remixed_from_job_id TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    completed_at        INTEGER,
    next_check_at       INTEGER,
    check_failures      INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_until         INTEGER NOT NULL,
    version             INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX jobs_tenant_created ON jobs (tenant_id, created_at, job_id);
  CREATE INDEX jobs_created ON jobs (created_at, job_id);
  CREATE INDEX jobs_due ON jobs (next_check_at, job_id) WHERE next_check_at IS NOT NULL;

  CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat    REAL NOT NULL
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE quota_counters (
    bucket TEXT NOT NULL,
    period TEXT NOT NULL,
    used   INTEGER NOT NULL,
    PRIMARY KEY (bucket, period)
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE idempotency_records (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    status_code  INTEGER,
    body         TEXT,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK (state = 'in_progress' OR (status_code IS NOT NULL AND body IS NOT NULL))
  ) STRICT, WITHOUT ROWID;
  `,
  // Audit log of operator actions. Append-only, like the ledger.
  `
  CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    audit_id  TEXT NOT NULL UNIQUE,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    target    TEXT NOT NULL,
    details   TEXT NOT NULL
  ) STRICT;
  CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at, seq);
  CREATE INDEX audit_log_at ON audit_log (at, seq);
  CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
  CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
  BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
  `,
  // Webhook endpoints, the delivery outbox and batches.
  WEBHOOKS_MIGRATION,
  JOB_ENDPOINTS_MIGRATION,
];

/** The schema version a fully migrated file reports. */
export const schemaVersion = migrations.length;

/**
 * Applies every pending migration. The version is read inside the same BEGIN
 * IMMEDIATE transaction that writes the steps, so two processes opening a fresh file
 * at once cannot both run step 1.
 */
export function applyMigrations(db: Database.Database): void {
  db.transaction(() => {
    const current = db.pragma('user_version', { simple: true }) as number;
    if (current > schemaVersion) {
      throw new Error(
        `database schema version ${current} is newer than this build supports (${schemaVersion})`,
      );
    }
    for (const step of migrations.slice(current)) db.exec(step);
    if (current !== schemaVersion) db.pragma(`user_version = ${schemaVersion}`);
  }).immediate();
}
