/**
 * The DynamoDB SDK, imported on first use. `@aws-sdk/client-dynamodb` and `lib-dynamodb`
 * take ~20 MB of memory loaded on their own, which a gateway on the embedded SQLite store
 * must not pay just because `services.ts` links this store in to choose between the two.
 *
 * The store still writes `this.#doc.send(new PutCommand(input))`: the commands below carry
 * only their input, and {@link DynamoConnection} builds the SDK's own command from it once
 * the SDK is loaded. Results and errors are the SDK's, unchanged.
 */
import type {
  CreateTableCommandInput,
  CreateTableCommandOutput,
  DescribeTableCommandInput,
  DescribeTableCommandOutput,
  DescribeTimeToLiveCommandInput,
  DescribeTimeToLiveCommandOutput,
  DynamoDBClient,
  DynamoDBClientConfig,
  UpdateTimeToLiveCommandInput,
  UpdateTimeToLiveCommandOutput,
} from '@aws-sdk/client-dynamodb';
import type {
  DeleteCommandInput,
  DeleteCommandOutput,
  DynamoDBDocumentClient,
  GetCommandInput,
  GetCommandOutput,
  PutCommandInput,
  PutCommandOutput,
  QueryCommandInput,
  QueryCommandOutput,
  TransactWriteCommandInput,
  TransactWriteCommandOutput,
  TranslateConfig,
  UpdateCommandInput,
  UpdateCommandOutput,
} from '@aws-sdk/lib-dynamodb';
import { lazily } from '../../core/lazily.ts';

async function importSdk() {
  const [client, lib] = await Promise.all([
    import('@aws-sdk/client-dynamodb'),
    import('@aws-sdk/lib-dynamodb'),
  ]);
  return { client, lib };
}

export type DynamoSdk = Awaited<ReturnType<typeof importSdk>>;

export const loadDynamoSdk = lazily(importSdk);

/** A command's input, and how to make the SDK's command of it; `send` resolves to `Output`. */
abstract class LazyCommand<Input, Output> {
  /** Never assigned: it only carries the output type to `send`. */
  declare readonly output: Output;
  constructor(readonly input: Input) {}
  abstract build(sdk: DynamoSdk): object;
}

/** Items, through the document client (native JS values in and out). */
abstract class ItemCommand<Input, Output> extends LazyCommand<Input, Output> {
  readonly target = 'doc';
}

/** The table itself, through the low-level client. */
abstract class TableCommand<Input, Output> extends LazyCommand<Input, Output> {
  readonly target = 'client';
}

export class GetCommand extends ItemCommand<GetCommandInput, GetCommandOutput> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.GetCommand(this.input);
  }
}

export class PutCommand extends ItemCommand<PutCommandInput, PutCommandOutput> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.PutCommand(this.input);
  }
}

export class UpdateCommand extends ItemCommand<UpdateCommandInput, UpdateCommandOutput> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.UpdateCommand(this.input);
  }
}

export class DeleteCommand extends ItemCommand<DeleteCommandInput, DeleteCommandOutput> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.DeleteCommand(this.input);
  }
}

export class QueryCommand extends ItemCommand<QueryCommandInput, QueryCommandOutput> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.QueryCommand(this.input);
  }
}

export class TransactWriteCommand extends ItemCommand<
  TransactWriteCommandInput,
  TransactWriteCommandOutput
> {
  build(sdk: DynamoSdk) {
    return new sdk.lib.TransactWriteCommand(this.input);
  }
}

export class CreateTableCommand extends TableCommand<
  CreateTableCommandInput,
  CreateTableCommandOutput
> {
  build(sdk: DynamoSdk) {
    return new sdk.client.CreateTableCommand(this.input);
  }
}

export class DescribeTableCommand extends TableCommand<
  DescribeTableCommandInput,
  DescribeTableCommandOutput
> {
  build(sdk: DynamoSdk) {
    return new sdk.client.DescribeTableCommand(this.input);
  }
}

export class DescribeTimeToLiveCommand extends TableCommand<
  DescribeTimeToLiveCommandInput,
  DescribeTimeToLiveCommandOutput
> {
  build(sdk: DynamoSdk) {
    return new sdk.client.DescribeTimeToLiveCommand(this.input);
  }
}

export class UpdateTimeToLiveCommand extends TableCommand<
  UpdateTimeToLiveCommandInput,
  UpdateTimeToLiveCommandOutput
> {
  build(sdk: DynamoSdk) {
    return new sdk.client.UpdateTimeToLiveCommand(this.input);
  }
}

interface Connected {
  sdk: DynamoSdk;
  client: DynamoDBClient;
  doc: DynamoDBDocumentClient;
}

/** Sends commands of one kind; what the store holds as `#client` and `#doc`. */
export interface LazySender<Kind> {
  send<Output>(command: Kind & { readonly output: Output }): Promise<Output>;
}

/**
 * The low-level client and its document client, made when the first command is sent:
 * the given client, or one made from `config` (then owned, and destroyed by `close`).
 */
export class DynamoConnection {
  readonly client: LazySender<TableCommand<unknown, unknown>>;
  readonly doc: LazySender<ItemCommand<unknown, unknown>>;
  readonly #given: DynamoDBClient | undefined;
  readonly #config: DynamoDBClientConfig;
  readonly #translate: TranslateConfig;
  #connected: Promise<Connected> | undefined;

  constructor(options: {
    client?: DynamoDBClient;
    config: DynamoDBClientConfig;
    translate: TranslateConfig;
  }) {
    this.#given = options.client;
    this.#config = options.config;
    this.#translate = options.translate;
    this.client = { send: (command) => this.#send(command) };
    this.doc = { send: (command) => this.#send(command) };
  }

  /** The loaded SDK and the low-level client, e.g. for the SDK's waiters. */
  connect(): Promise<Connected> {
    this.#connected ??= loadDynamoSdk().then((sdk) => {
      const client = this.#given ?? new sdk.client.DynamoDBClient(this.#config);
      return { sdk, client, doc: sdk.lib.DynamoDBDocumentClient.from(client, this.#translate) };
    });
    return this.#connected;
  }

  /** Destroys the client if this connection made it; a given client stays the caller's. */
  async close(): Promise<void> {
    if (this.#given || !this.#connected) return;
    const connected = await this.#connected.catch(() => null);
    connected?.client.destroy();
  }

  async #send<Output>(
    command: (ItemCommand<unknown, unknown> | TableCommand<unknown, unknown>) & {
      readonly output: Output;
    },
  ): Promise<Output> {
    const { sdk, client, doc } = await this.connect();
    // The SDK's `send` is typed per command class; the one built here answers `Output`.
    const sender: { send(built: object): Promise<unknown> } =
      command.target === 'doc' ? doc : client;
    return (await sender.send(command.build(sdk))) as Output;
  }
}
