import type { CreateTableCommandInput } from '@aws-sdk/client-dynamodb';

/**
 * The one table `DynamoStore` lives in. Key layout and access patterns are
 * documented at the top of dynamo-store.ts; infra code and `migrate()` both build
 * the table from this definition so they cannot drift apart.
 */
export const INDEX = {
  /** Per-tenant collections: a tenant's keys, jobs and webhook endpoints, by creation time; an endpoint's deliveries. */
  byTenant: 'GSI1',
  /** Global collections: all tenants by id, all jobs by creation time. */
  global: 'GSI2',
  /** Sparse, sharded, by due time: unfinished jobs, pending webhook deliveries, running batches. */
  due: 'GSI3',
} as const;

/** Attribute DynamoDB TTL reads: expiry in epoch SECONDS. */
export const TTL_ATTRIBUTE = 'ttl';

const stringKeys = ['PK', 'SK', 'GSI1PK', 'GSI1SK', 'GSI2PK', 'GSI2SK', 'GSI3PK', 'GSI3SK'];

function gsi(name: string, prefix: string) {
  return {
    IndexName: name,
    KeySchema: [
      { AttributeName: `${prefix}PK`, KeyType: 'HASH' as const },
      { AttributeName: `${prefix}SK`, KeyType: 'RANGE' as const },
    ],
    Projection: { ProjectionType: 'ALL' as const },
  };
}

export function tableDefinition(tableName: string): CreateTableCommandInput {
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: stringKeys.map((name) => ({
      AttributeName: name,
      AttributeType: 'S' as const,
    })),
    KeySchema: [
      { AttributeName: 'PK', KeyType: 'HASH' },
      { AttributeName: 'SK', KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: [
      gsi(INDEX.byTenant, 'GSI1'),
      gsi(INDEX.global, 'GSI2'),
      gsi(INDEX.due, 'GSI3'),
    ],
  };
}
