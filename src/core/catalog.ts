import { readFileSync } from 'node:fs';
import { type Static, Type } from 'typebox';
import { Value } from 'typebox/value';
import { AppError } from './errors.ts';

const PlanSchema = Type.Object({
  ratePerSecond: Type.Number({ exclusiveMinimum: 0 }),
  burst: Type.Integer({ minimum: 1 }),
  monthlyQuota: Type.Integer({ minimum: 0 }),
});

const RouteSchema = Type.Object({
  provider: Type.String({ minLength: 1 }),
  upstreamModel: Type.String({ minLength: 1 }),
  /** Parameter style the provider adapter maps to (e.g. `veo`, `kling`); adapter-defined. */
  params: Type.Optional(Type.String({ minLength: 1 })),
});

const ModelSchema = Type.Object({
  description: Type.Optional(Type.String()),
  seconds: Type.Array(Type.Integer({ minimum: 1 }), { minItems: 1 }),
  sizes: Type.Array(Type.String({ pattern: '^[0-9]+x[0-9]+$' }), { minItems: 1 }),
  price: Type.Object({
    credits: Type.Integer({ minimum: 0 }),
    per: Type.Union([Type.Literal('video'), Type.Literal('second')]),
  }),
  routes: Type.Array(RouteSchema, { minItems: 1 }),
});

const CatalogSchema = Type.Object({
  plans: Type.Record(Type.String(), PlanSchema),
  models: Type.Record(Type.String(), ModelSchema),
  defaults: Type.Object({
    model: Type.String(),
    seconds: Type.Integer({ minimum: 1 }),
    size: Type.String(),
  }),
});

export type Plan = Static<typeof PlanSchema> & { planId: string };
export type ModelEntry = Static<typeof ModelSchema> & { id: string };
export type CatalogData = Static<typeof CatalogSchema>;

/** A request after it was checked against the catalog: safe to price and charge. */
export interface ResolvedRequest {
  model: ModelEntry;
  seconds: number;
  size: string;
  cost: number;
}

export const DEFAULT_CATALOG_PATH = new URL('../../config/catalog.json', import.meta.url).pathname;

/** Plans and models as data: what a tenant may call, at what price, served by whom. */
export class Catalog {
  readonly plans: ReadonlyMap<string, Plan>;
  readonly models: ReadonlyMap<string, ModelEntry>;
  readonly defaults: CatalogData['defaults'];

  constructor(data: unknown) {
    if (!Value.Check(CatalogSchema, data)) {
      const first = Value.Errors(CatalogSchema, data)[0];
      throw new Error(
        `Invalid catalog: ${first ? `${first.instancePath || '/'} ${first.message}` : 'bad shape'}`,
      );
    }
    this.plans = new Map(
      Object.entries(data.plans).map(([planId, p]) => [planId, { ...p, planId }]),
    );
    this.models = new Map(Object.entries(data.models).map(([id, m]) => [id, { ...m, id }]));
    this.defaults = data.defaults;
    if (!this.models.has(data.defaults.model)) {
      throw new Error(`Invalid catalog: default model ${data.defaults.model} is not listed`);
    }
  }

  static load(path: string): Catalog {
    let raw: string;
    try {
      raw = readFileSync(path, 'utf8');
    } catch (error) {
      throw new Error(`Cannot read catalog ${path}: ${(error as Error).message}`);
    }
    return new Catalog(JSON.parse(raw));
  }

  plan(planId: string): Plan {
    const plan = this.plans.get(planId);
    if (!plan) {
      throw new AppError('validation_error', `Unknown plan: ${planId}`, {
        param: 'plan',
        details: { allowed: [...this.plans.keys()] },
      });
    }
    return plan;
  }

  /**
   * Validates model/seconds/size and prices the request. Runs before any charge, so
   * every rejection here costs the customer nothing.
   */
  resolve(request: { model?: string; seconds?: number; size?: string }): ResolvedRequest {
    const modelId = request.model ?? this.defaults.model;
    const model = this.models.get(modelId);
    if (!model) {
      throw new AppError(
        'validation_error',
        `Unsupported model: ${modelId}. Allowed: ${[...this.models.keys()].join(', ')}`,
        { param: 'model' },
      );
    }
    const seconds = request.seconds ?? pickDefault(model.seconds, this.defaults.seconds);
    if (!model.seconds.includes(seconds)) {
      throw new AppError(
        'validation_error',
        `Invalid seconds for ${model.id}: ${seconds}. Allowed: ${model.seconds.join(', ')}`,
        { param: 'seconds' },
      );
    }
    const size = request.size ?? pickDefault(model.sizes, this.defaults.size);
    if (!model.sizes.includes(size)) {
      throw new AppError(
        'validation_error',
        `Invalid size for ${model.id}: ${size}. Allowed: ${model.sizes.join(', ')}`,
        { param: 'size' },
      );
    }
    const cost = model.price.per === 'video' ? model.price.credits : model.price.credits * seconds;
    return { model, seconds, size, cost };
  }
}

function pickDefault<T>(allowed: T[], preferred: T): T {
  return allowed.includes(preferred) ? preferred : (allowed[0] as T);
}
