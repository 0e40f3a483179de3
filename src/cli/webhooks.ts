import type { Command } from 'commander';
import type { WebhookEndpoint } from '../core/ports.ts';
import type { Services } from '../services.ts';
import { formatTable } from './program.ts';

type Print = (json: boolean | undefined, data: unknown, human: () => string) => void;

function publicEndpoint(endpoint: WebhookEndpoint) {
  const { secret: _secret, previousSecret: _previous, ...rest } = endpoint;
  return rest;
}

/** `reelpostly webhooks add|list|remove TENANT`. */
export function addWebhookCommands(
  program: Command,
  options: {
    withServices: <T>(fn: (services: Services) => Promise<T>) => Promise<T>;
    print: Print;
  },
): void {
  const { withServices, print } = options;
  const webhooks = program.command('webhooks').description('Manage tenant webhook endpoints');
  webhooks
    .command('add <tenantId> <url>')
    .description('Add a webhook endpoint (its signing secret is shown once)')
    .option('--events <list>', 'comma-separated event types (default: all)')
    .option('--json', 'print JSON')
    .action((tenantId: string, url: string, o: { events?: string; json?: boolean }) =>
      withServices(async (s) => {
        await s.accounts.getTenant(tenantId);
        const { endpoint, secret } = await s.webhooks.createEndpoint({
          tenantId,
          url,
          ...(o.events ? { events: o.events.split(',').map((e) => e.trim()) } : {}),
        });
        print(o.json, { ...publicEndpoint(endpoint), secret }, () =>
          [
            `Endpoint ${endpoint.endpointId} for ${tenantId}: ${endpoint.url}`,
            `Events: ${endpoint.events.join(', ')}`,
            `Signing secret: ${secret}`,
            'Store it now: it is not shown again.',
          ].join('\n'),
        );
      }),
    );
  webhooks
    .command('list <tenantId>')
    .description('List a tenant’s webhook endpoints')
    .option('--json', 'print JSON')
    .action((tenantId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        await s.accounts.getTenant(tenantId);
        const list = await s.webhooks.listEndpoints(tenantId);
        print(o.json, list.map(publicEndpoint), () =>
          formatTable(
            list.map((e) => ({
              endpointId: e.endpointId,
              url: e.url,
              events: e.events.join(','),
              status: e.status,
            })),
            ['endpointId', 'url', 'events', 'status'],
          ),
        );
      }),
    );
  webhooks
    .command('remove <tenantId> <endpointId>')
    .description('Remove a webhook endpoint')
    .option('--json', 'print JSON')
    .action((tenantId: string, endpointId: string, o: { json?: boolean }) =>
      withServices(async (s) => {
        const endpoint = await s.webhooks.deleteEndpoint(tenantId, endpointId);
        print(o.json, publicEndpoint(endpoint), () => `Endpoint ${endpointId} removed.`);
      }),
    );
}
