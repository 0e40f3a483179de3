import multipart from '@fastify/multipart';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Services } from '../../../services.ts';
import { authenticate } from '../../auth.ts';
import { catalogRoutes } from './catalog.ts';
import { MAX_REFERENCE_BYTES } from './input-reference.ts';
import { videosRoutes } from './videos.ts';
import { webhookRoutes } from './webhooks.ts';

/** Everything under `/v1`: Bearer (or x-api-key) auth, OpenAI shapes, multipart uploads. */
export function v1Routes(services: Services): FastifyPluginAsyncTypebox {
  return async (app) => {
    await app.register(multipart, {
      limits: { fileSize: MAX_REFERENCE_BYTES, files: 1, fields: 32, parts: 33 },
    });
    app.addHook('onRequest', authenticate(services));
    await app.register(webhookRoutes(services));
    await app.register(videosRoutes(services));
    await app.register(catalogRoutes(services));
  };
}
