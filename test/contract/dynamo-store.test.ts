import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import { isAppError } from '../../src/core/errors.ts';
import type { Store } from '../../src/core/ports.ts';
import { createDynamoStore } from '../../src/stores/dynamodb/dynamo-store.ts';
import { INDEX, TTL_ATTRIBUTE } from '../../src/stores/dynamodb/table-definition.ts';
import { type DynamoDbLocal, startDynamoDbLocal } from '../support/dynamodb-local.ts';
import { chargeFor, makeJob } from '../support/fixtures.ts';
import { runStoreContract } from './store-contract.ts';

/** One DynamoDB Local per test file; started on first use. */
let local: Promise<DynamoDbLocal> | undefined;
function dynamoDbLocal(): Promise<DynamoDbLocal> {
  local ??= startDynamoDbLocal();
  return local;
}

after(async () => {
  if (local) await (await local).stop();
});

/** Every command name sent by a client built here, to prove no request path scans. */
const sentCommands: string[] = [];

async function newClient(options: { record?: boolean } = {}): Promise<DynamoDBClient> {
  const { endpoint } = await dynamoDbLocal();
  const client = new DynamoDBClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  if (options.record !== false) {
    client.middlewareStack.add(
      (next, context) => (args) => {
        sentCommands.push(String(context.commandName));
        return next(args);
      },
      { step: 'initialize', name: 'recordCommandNames' },
    );
  }
  return client;
}

function uniqueTableName(): string {
  return `reelpostly-test-${randomUUID()}`;
}

runStoreContract('DynamoStore', async () => {
  const tableName = uniqueTableName();
  const clients = [await newClient()];
  const opened: Store[] = [createDynamoStore({ tableName, client: clients[0] })];
  await (opened[0] as Store).migrate();
  return {
    store: opened[0] as Store,
    second: async () => {
      const client = await newClient();
      clients.push(client);
      const store = createDynamoStore({ tableName, client });
      opened.push(store);
      return store;
    },
    cleanup: async () => {
      for (const store of opened) await store.close();
      await (clients[0] as DynamoDBClient).send(new DeleteTableCommand({ TableName: tableName }));
      for (const client of clients) client.destroy();
    },
  };
});

describe('DynamoStore specifics', () => {
  let client: DynamoDBClient;

  before(async () => {
    client = await newClient({ record: false });
  });

  after(() => client.destroy());

  it('issued no Scan during the whole contract suite', () => {
    assert.ok(sentCommands.includes('TransactWriteItemsCommand'), 'the recorder saw nothing');
    assert.ok(sentCommands.includes('QueryCommand'));
    assert.deepEqual(
      sentCommands.filter((name) => name.startsWith('Scan')),
      [],
    );
  });

  it('migrate creates the table with its indexes and TTL, then is a no-op', async () => {
    const tableName = uniqueTableName();
    const commands: string[] = [];
    client.middlewareStack.add(
      (next, context) => (args) => {
        commands.push(String(context.commandName));
        return next(args);
      },
      { step: 'initialize', name: 'recordMigrate' },
    );
    const store = createDynamoStore({ tableName, client });
    try {
      await store.migrate();
      assert.ok(commands.includes('CreateTableCommand'));
      assert.ok(commands.includes('UpdateTimeToLiveCommand'));

      const { Table } = await client.send(new DescribeTableCommand({ TableName: tableName }));
      assert.equal(Table?.TableStatus, 'ACTIVE');
      assert.equal(Table?.BillingModeSummary?.BillingMode, 'PAY_PER_REQUEST');
      assert.deepEqual(
        Table?.GlobalSecondaryIndexes?.map((index) => index.IndexName).sort(),
        Object.values(INDEX).sort(),
      );
      const { TimeToLiveDescription } = await client.send(
        new DescribeTimeToLiveCommand({ TableName: tableName }),
      );
      assert.equal(TimeToLiveDescription?.TimeToLiveStatus, 'ENABLED');
      assert.equal(TimeToLiveDescription?.AttributeName, TTL_ATTRIBUTE);

      commands.length = 0;
      await store.migrate();
      await store.ping();
      assert.ok(commands.length > 0);
      assert.deepEqual(
        commands.filter((name) => !name.startsWith('Describe')),
        [],
        'migrate on an existing table changed something',
      );
    } finally {
      client.middlewareStack.remove('recordMigrate');
      await store.close();
      await client.send(new DeleteTableCommand({ TableName: tableName }));
    }
  });

  it('12 instances racing 240 createJob on 40 credits keep an exact running balance', async () => {
    // Separate instances share no in-process queue, so this drives the optimistic
    // retry path itself: every lost `seq` condition must re-read and try again.
    const tableName = uniqueTableName();
    const clients = await Promise.all(Array.from({ length: 12 }, () => newClient()));
    const stores = clients.map((each) => createDynamoStore({ tableName, client: each }));
    const first = stores[0] as Store;
    try {
      await first.migrate();
      await first.createTenant({
        tenantId: 't_race',
        email: 'race@example.com',
        planId: 'starter',
        status: 'active',
        createdAt: 0,
      });
      await first.post({
        entryId: 'grant:race',
        tenantId: 't_race',
        kind: 'grant',
        amount: 40,
        reason: 'test',
        jobId: null,
        createdAt: 0,
      });
      const results = await Promise.allSettled(
        Array.from({ length: 240 }, (_, index) => {
          const jobId = `video_${String(index).padStart(3, '0')}`;
          const job = makeJob(jobId, 't_race', { prompt: 'a race' }, index);
          return (stores[index % stores.length] as Store).createJob(job, chargeFor(job));
        }),
      );
      const refused = results.filter((result) => result.status === 'rejected');
      assert.equal(results.length - refused.length, 40);
      for (const result of refused) assert.ok(isAppError(result.reason, 'insufficient_credits'));

      const entries = await first.listEntries('t_race', { limit: 1000 });
      assert.equal(entries.items.length, 41);
      let running = 0;
      for (const entry of entries.items) {
        running += entry.amount;
        assert.equal(entry.balanceAfter, running, `balanceAfter of ${entry.entryId}`);
      }
      assert.equal(await first.getBalance('t_race'), 0);
      const jobs = await first.listJobs({ tenantId: 't_race', limit: 1000, order: 'asc' });
      assert.deepEqual(
        new Set(jobs.items.map((job) => job.jobId)),
        new Set(entries.items.map((entry) => entry.jobId).filter((id) => id !== null)),
      );
    } finally {
      await client.send(new DeleteTableCommand({ TableName: tableName }));
      for (const each of clients) each.destroy();
    }
  });

  it('close leaves a client it was given usable', async () => {
    const store = createDynamoStore({ tableName: uniqueTableName(), client });
    await store.close();
    await assert.rejects(
      store.ping(),
      (error: Error) => error.name === 'ResourceNotFoundException',
    );
  });
});
