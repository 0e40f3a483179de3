import type { SSMClient } from '@aws-sdk/client-ssm';

/**
 * Copies every SecureString/String parameter directly under `path` (not below it) into
 * `env`, named by its last path segment: `/reelpostly/OPENAI_API_KEY` -> `OPENAI_API_KEY`.
 * A variable already set wins, so an operator can override a secret in the function's
 * own environment. Returns the names it set.
 */
export async function loadSsmParameters(options: {
  path: string;
  env: Record<string, string | undefined>;
  /** Region, credentials and AWS_ENDPOINT_URL_SSM come from the SDK's own chain. */
  client?: SSMClient;
}): Promise<string[]> {
  // Imported here, not at the top: only a Lambda configured with a prefix needs it, and
  // every other process would pay its memory for nothing.
  const { GetParametersByPathCommand, SSMClient } = await import('@aws-sdk/client-ssm');
  const client = options.client ?? new SSMClient({});
  const path = options.path.endsWith('/') ? options.path : `${options.path}/`;
  const loaded: string[] = [];
  let nextToken: string | undefined;
  do {
    const page = await client.send(
      new GetParametersByPathCommand({
        Path: path === '/' ? path : path.slice(0, -1),
        Recursive: false,
        WithDecryption: true,
        MaxResults: 10,
        NextToken: nextToken,
      }),
    );
    for (const parameter of page.Parameters ?? []) {
      const name = parameter.Name?.split('/').pop();
      if (!name || parameter.Value === undefined) continue;
      if (options.env[name] !== undefined) continue;
      options.env[name] = parameter.Value;
      loaded.push(name);
    }
    nextToken = page.NextToken;
  } while (nextToken);
  return loaded;
}
