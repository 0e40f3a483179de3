import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import type { Services } from '../services.ts';

const DESCRIPTION = `A multi-tenant video generation API with two surfaces over one core: a video
created on either is visible on both.

- **OpenAI-compatible** \`/v1\`: point the official \`openai\` SDK (v6) at \`<host>/v1\` with
  your key. \`/v1/videos\` follows OpenAI's Videos API; \`/v1/models\` and \`/v1/account\`
  add the catalog and your balance, usage and limits. Errors are
  \`{"error": {"message", "type", "param", "code"}}\`.
- **Original** \`/video/generate\`, \`/video/status/{id}\`: the Sora-style API this gateway
  replaced, byte-for-byte. Errors are \`{"error": "..."}\`.

Authenticate with \`Authorization: Bearer rp_live_...\` or \`x-api-key: rp_live_...\`.
Credits are charged when a video is created and refunded if it fails. Limits: 402 when
credits run out, 429 with \`Retry-After\` and \`RateLimit-*\` headers for the plan's rate
and monthly quota. POSTs accept an \`Idempotency-Key\` header.`;

/**
 * The OpenAPI 3.1 document, generated from the route schemas, at `/openapi.json`, and
 * Swagger UI at `/docs`, served from the package's own files (no CDN). Must be
 * registered before the routes it documents.
 */
export async function registerOpenApi(app: FastifyInstance, services: Services): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'ReelPostly Video API', version: '1', description: DESCRIPTION },
      servers: [{ url: services.config.publicUrl }],
      tags: [
        { name: 'videos', description: 'OpenAI-compatible videos (/v1/videos)' },
        { name: 'catalog', description: 'Models, prices and your account (/v1)' },
        { name: 'original', description: 'The original Sora-style API' },
        { name: 'files', description: 'Signed download links' },
      ],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'Your rp_live_ key' },
          apiKey: { type: 'apiKey', in: 'header', name: 'x-api-key' },
        },
      },
      security: [{ bearer: [] }, { apiKey: [] }],
    },
    // Signed file links authenticate by their signature, not by key.
    transform: ({ schema, url }) => ({
      schema: url.startsWith('/files/') ? { ...schema, security: [] } : schema,
      url,
    }),
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    uiConfig: { deepLinking: true, tryItOutEnabled: true },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
