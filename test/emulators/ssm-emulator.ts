/**
 * Emulator of AWS Systems Manager Parameter Store's GetParametersByPath, the one call the
 * Lambda cold start makes. Follows the API reference
 * https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParametersByPath.html
 * and the wire format `@aws-sdk/client-ssm` (GetParametersByPathCommand) speaks: AWS JSON 1.1,
 * `POST /` with `X-Amz-Target: AmazonSSM.GetParametersByPath` and
 * `Content-Type: application/x-amz-json-1.1`; errors as `{ "__type", "message" }` with 400.
 * `Recursive: false` returns only the direct children of `Path`; MaxResults is 1..10 (default
 * 10) and NextToken is opaque; a SecureString read without WithDecryption stays encrypted.
 */
import { createServer, type Server } from 'node:http';

export interface SsmParameter {
  name: string;
  value: string;
  type?: 'String' | 'StringList' | 'SecureString';
}

export interface SsmEmulator {
  endpoint: string;
  /** Every request body received, in order (to count calls and check their arguments). */
  requests: Array<{ target: string; body: Record<string, unknown> }>;
  close(): Promise<void>;
}

const JSON_11 = 'application/x-amz-json-1.1';

export async function startSsmEmulator(parameters: SsmParameter[]): Promise<SsmEmulator> {
  const stored = [...parameters].sort((a, b) => a.name.localeCompare(b.name));
  const requests: SsmEmulator['requests'] = [];

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'content-type': JSON_11 });
        res.end(JSON.stringify(body));
      };
      const fail = (type: string, message: string) => {
        res.setHeader('x-amzn-errortype', type);
        send(400, { __type: type, message });
      };
      const target = String(req.headers['x-amz-target'] ?? '');
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
      } catch {
        return fail('SerializationException', 'Request body is not valid JSON');
      }
      requests.push({ target, body });
      if (req.method !== 'POST' || !String(req.headers['content-type']).startsWith(JSON_11)) {
        return fail('SerializationException', `Expected POST with ${JSON_11}`);
      }
      if (target !== 'AmazonSSM.GetParametersByPath') {
        return fail('UnknownOperationException', `Unsupported operation ${target}`);
      }

      const path = body.Path;
      if (typeof path !== 'string' || !path.startsWith('/')) {
        return fail('ValidationException', 'Path must be a hierarchy starting with /');
      }
      const maxResults = body.MaxResults === undefined ? 10 : Number(body.MaxResults);
      if (!Number.isInteger(maxResults) || maxResults < 1 || maxResults > 10) {
        return fail(
          'ValidationException',
          "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 10",
        );
      }
      let offset = 0;
      if (body.NextToken !== undefined) {
        offset = Number(Buffer.from(String(body.NextToken), 'base64url').toString('utf8'));
        if (!Number.isInteger(offset) || offset < 0) {
          return fail('InvalidNextToken', 'The specified token is not valid.');
        }
      }
      const prefix = path.endsWith('/') ? path : `${path}/`;
      const matching = stored.filter(
        (p) =>
          p.name.startsWith(prefix) &&
          (body.Recursive === true || !p.name.slice(prefix.length).includes('/')),
      );
      const page = matching.slice(offset, offset + maxResults);
      const next = offset + maxResults < matching.length ? offset + maxResults : null;
      send(200, {
        Parameters: page.map((p) => {
          const type = p.type ?? 'SecureString';
          const encrypted = type === 'SecureString' && body.WithDecryption !== true;
          return {
            Name: p.name,
            Type: type,
            Value: encrypted ? Buffer.from(`kms:${p.value}`).toString('base64') : p.value,
            Version: 1,
            LastModifiedDate: 1_764_849_600,
            ARN: `arn:aws:ssm:us-east-1:000000000000:parameter${p.name}`,
            DataType: 'text',
          };
        }),
        ...(next === null ? {} : { NextToken: Buffer.from(String(next)).toString('base64url') }),
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((error) => (error ? reject(error) : resolve()));
      }),
  };
}
