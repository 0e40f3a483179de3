import type Database from 'better-sqlite3';
import type { Batch, Delivery, WebhookEndpoint } from '../../core/ports.ts';

/**
 * Rows and statements of the webhook endpoints, the delivery outbox and batches,
 * kept apart from the core statements of sqlite-store.ts.
 */

const ENDPOINT_COLUMNS = `endpoint_id AS endpointId, tenant_id AS tenantId, url, events, secret,
  previous_secret AS previousSecret, previous_secret_expires_at AS previousSecretExpiresAt,
  status, disabled_reason AS disabledReason, job_id AS jobId, created_at AS createdAt,
  updated_at AS updatedAt`;

const DELIVERY_COLUMNS = `delivery_id AS deliveryId, event_id AS eventId, event_type AS eventType,
  tenant_id AS tenantId, endpoint_id AS endpointId, payload, status, attempts,
  next_attempt_at AS nextAttemptAt, created_at AS createdAt, updated_at AS updatedAt, version`;

const BATCH_COLUMNS = `batch_id AS batchId, tenant_id AS tenantId, job_ids AS jobIds, cost, status,
  created_at AS createdAt, updated_at AS updatedAt, completed_at AS completedAt,
  next_check_at AS nextCheckAt, version`;

export type EndpointRow = Omit<WebhookEndpoint, 'events'> & { events: string };
export type DeliveryRow = Omit<Delivery, 'attempts'> & { attempts: string };
export type BatchRow = Omit<Batch, 'jobIds'> & { jobIds: string };

export const toEndpoint = (row: EndpointRow): WebhookEndpoint => ({
  ...row,
  events: JSON.parse(row.events),
});
export const endpointRow = (endpoint: WebhookEndpoint): EndpointRow => ({
  ...endpoint,
  events: JSON.stringify(endpoint.events),
});
export const toDelivery = (row: DeliveryRow): Delivery => ({
  ...row,
  attempts: JSON.parse(row.attempts),
});
export const deliveryRow = (delivery: Delivery): DeliveryRow => ({
  ...delivery,
  attempts: JSON.stringify(delivery.attempts),
});
export const toBatch = (row: BatchRow): Batch => ({ ...row, jobIds: JSON.parse(row.jobIds) });
export const batchRow = (batch: Batch): BatchRow => ({
  ...batch,
  jobIds: JSON.stringify(batch.jobIds),
});

export function prepareWebhookStatements(db: Database.Database) {
  return {
    insertEndpoint: db.prepare<EndpointRow>(
      `INSERT INTO webhook_endpoints (endpoint_id, tenant_id, url, events, secret,
         previous_secret, previous_secret_expires_at, status, disabled_reason, job_id,
         created_at, updated_at)
       VALUES (@endpointId, @tenantId, @url, @events, @secret, @previousSecret,
         @previousSecretExpiresAt, @status, @disabledReason, @jobId, @createdAt, @updatedAt)`,
    ),
    getEndpoint: db.prepare<{ endpointId: string }, EndpointRow>(
      `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = @endpointId`,
    ),
    listEndpoints: db.prepare<{ tenantId: string }, EndpointRow>(
      `SELECT ${ENDPOINT_COLUMNS} FROM webhook_endpoints
       WHERE tenant_id = @tenantId AND job_id IS NULL
       ORDER BY created_at, endpoint_id`,
    ),
    updateEndpoint: db.prepare<EndpointRow>(
      `UPDATE webhook_endpoints SET secret = @secret, previous_secret = @previousSecret,
         previous_secret_expires_at = @previousSecretExpiresAt, status = @status,
         disabled_reason = @disabledReason, updated_at = @updatedAt
       WHERE endpoint_id = @endpointId`,
    ),
    deleteEndpoint: db.prepare<{ endpointId: string }>(
      'DELETE FROM webhook_endpoints WHERE endpoint_id = @endpointId',
    ),

    insertDelivery: db.prepare<DeliveryRow>(
      `INSERT INTO webhook_deliveries (delivery_id, event_id, event_type, tenant_id, endpoint_id,
         payload, status, attempts, next_attempt_at, created_at, updated_at, version)
       VALUES (@deliveryId, @eventId, @eventType, @tenantId, @endpointId, @payload, @status,
         @attempts, @nextAttemptAt, @createdAt, @updatedAt, @version)
       ON CONFLICT (delivery_id) DO NOTHING`,
    ),
    getDelivery: db.prepare<{ deliveryId: string }, DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = @deliveryId`,
    ),
    listDueDeliveries: db.prepare<{ now: number; limit: number }, DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries
       WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= @now AND status = 'pending'
       ORDER BY next_attempt_at, delivery_id LIMIT @limit`,
    ),
    listDeliveries: db.prepare<{ endpointId: string; limit: number }, DeliveryRow>(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = @endpointId
       ORDER BY created_at DESC, delivery_id DESC LIMIT @limit`,
    ),
    listDeliveriesAfter: db.prepare<
      { endpointId: string; limit: number; createdAt: number; deliveryId: string },
      DeliveryRow
    >(
      `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = @endpointId
         AND (created_at, delivery_id) < (@createdAt, @deliveryId)
       ORDER BY created_at DESC, delivery_id DESC LIMIT @limit`,
    ),
    updateDelivery: db.prepare<DeliveryRow>(
      `UPDATE webhook_deliveries SET status = @status, attempts = @attempts,
         next_attempt_at = @nextAttemptAt, updated_at = @updatedAt, version = @version
       WHERE delivery_id = @deliveryId`,
    ),

    insertBatch: db.prepare<BatchRow>(
      `INSERT INTO batches (batch_id, tenant_id, job_ids, cost, status, created_at, updated_at,
         completed_at, next_check_at, version)
       VALUES (@batchId, @tenantId, @jobIds, @cost, @status, @createdAt, @updatedAt,
         @completedAt, @nextCheckAt, @version)`,
    ),
    getBatch: db.prepare<{ batchId: string }, BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM batches WHERE batch_id = @batchId`,
    ),
    listDueBatches: db.prepare<{ now: number; limit: number }, BatchRow>(
      `SELECT ${BATCH_COLUMNS} FROM batches
       WHERE next_check_at IS NOT NULL AND next_check_at <= @now AND status = 'running'
       ORDER BY next_check_at, batch_id LIMIT @limit`,
    ),
    updateBatch: db.prepare<BatchRow>(
      `UPDATE batches SET status = @status, completed_at = @completedAt,
         next_check_at = @nextCheckAt, updated_at = @updatedAt, version = @version
       WHERE batch_id = @batchId`,
    ),
  };
}

/** Migration step for webhooks, the outbox and batches (appended to `migrations`). */
export const WEBHOOKS_MIGRATION = `
  CREATE TABLE webhook_endpoints (
    endpoint_id                TEXT PRIMARY KEY,
    tenant_id                  TEXT NOT NULL REFERENCES tenants (tenant_id),
    url                        TEXT NOT NULL,
    events                     TEXT NOT NULL,
    secret                     TEXT NOT NULL,
    previous_secret            TEXT,
    previous_secret_expires_at INTEGER,
    status                     TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    disabled_reason            TEXT,
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at, endpoint_id);

  -- The outbox: one row per (event, endpoint), written in the transaction that caused it.
  CREATE TABLE webhook_deliveries (
    delivery_id     TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    tenant_id       TEXT NOT NULL,
    endpoint_id     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        TEXT NOT NULL,
    next_attempt_at INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL
  ) STRICT, WITHOUT ROWID;
  CREATE INDEX webhook_deliveries_endpoint
    ON webhook_deliveries (endpoint_id, created_at, delivery_id);
  CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, delivery_id)
    WHERE next_attempt_at IS NOT NULL;

  CREATE TABLE batches (
    batch_id      TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants (tenant_id),
    job_ids       TEXT NOT NULL,
    cost          INTEGER NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('running', 'completed')),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    next_check_at INTEGER,
    version       INTEGER NOT NULL
  ) STRICT;
  CREATE INDEX batches_due ON batches (next_check_at, batch_id) WHERE next_check_at IS NOT NULL;
`;

/** A generate request's `webhook_url` is a one-off endpoint of its job, kept out of listings. */
export const JOB_ENDPOINTS_MIGRATION = `
  ALTER TABLE webhook_endpoints ADD COLUMN job_id TEXT;
  DROP INDEX webhook_endpoints_tenant;
  CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at, endpoint_id)
    WHERE job_id IS NULL;
`;
