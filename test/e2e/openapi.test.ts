import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { compileErrors, validate } from '@readme/openapi-parser';
import type { RouteOptions } from 'fastify';
import { buildApp } from '../../src/http/app.ts';
import { startGateway, type TestGateway } from '../support/gateway.ts';

type Doc = {
  openapi: string;
  paths: Record<string, Record<string, { summary?: string; responses?: object }>>;
};

/** Fastify's `/a/:id` and `/files/*` as OpenAPI templates. */
function openApiPath(url: string): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, '{$1}').replace(/\*$/, '{*}');
}

describe('OpenAPI document and docs UI', () => {
  let gw: TestGateway;
  let doc: Doc;
  before(async () => {
    gw = await startGateway({ worker: false });
    const res = await fetch(`${gw.baseUrl}/openapi.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    doc = (await res.json()) as Doc;
  });
  after(() => gw.close());

  it('is a valid OpenAPI 3.1 document', async () => {
    assert.equal(doc.openapi, '3.1.0');
    // validate() dereferences in place: give it a copy.
    const result = await validate(structuredClone(doc) as never);
    assert.ok(result.valid, compileErrors(result));
  });

  it('documents every route the server answers, both surfaces, with summaries', async () => {
    const routes: RouteOptions[] = [];
    const app = await buildApp(gw.services, { onRoute: (route) => routes.push(route) });
    await app.ready();
    await app.close();
    const expected = routes
      .filter((route) => !(route.schema as { hide?: boolean } | undefined)?.hide)
      .flatMap((route) => [route.method].flat().map((method) => ({ method, url: route.url })))
      .filter(({ method }) => method !== 'HEAD');
    assert.ok(expected.length >= 12, `only ${expected.length} routes seen`);
    for (const { method, url } of expected) {
      const operation = doc.paths[openApiPath(url)]?.[method.toLowerCase()];
      assert.ok(operation, `${method} ${url} is missing from /openapi.json`);
      assert.ok(operation.summary, `${method} ${url} has no summary`);
    }
    for (const required of [
      'post /v1/videos',
      'get /v1/videos',
      'get /v1/videos/{video_id}',
      'delete /v1/videos/{video_id}',
      'get /v1/videos/{video_id}/content',
      'post /v1/videos/{video_id}/remix',
      'get /v1/models',
      'get /v1/account',
      'post /video/generate',
      'get /video/status/{id}',
    ]) {
      const [method = '', path = ''] = required.split(' ');
      assert.ok(doc.paths[path]?.[method], `${required} not documented`);
    }
    const create = doc.paths['/v1/videos']?.post as unknown as {
      requestBody: { content: Record<string, { schema: { properties: object } }> };
    };
    assert.deepEqual(Object.keys(create.requestBody.content).sort(), [
      'application/json',
      'multipart/form-data',
    ]);
    assert.match(JSON.stringify(create), /examples/);
  });

  it('serves the interactive docs from its own files', async () => {
    const res = await fetch(`${gw.baseUrl}/docs`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    const html = await res.text();
    assert.match(html, /swagger-ui/i);
    assert.doesNotMatch(html, /https?:\/\/(?!127\.0\.0\.1)[^"']*\.(js|css)/);
    const bundle = await fetch(`${gw.baseUrl}/docs/static/swagger-ui-bundle.js`);
    assert.equal(bundle.status, 200);
    assert.ok((await bundle.arrayBuffer()).byteLength > 100_000);
    const spec = await fetch(`${gw.baseUrl}/docs/json`);
    assert.equal(spec.status, 200);
    assert.deepEqual(Object.keys(((await spec.json()) as Doc).paths), Object.keys(doc.paths));
  });
});
