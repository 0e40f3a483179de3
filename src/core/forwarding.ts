/**
 * An object that answers like `target`, with some methods replaced. Every other method
 * runs bound to `target` (adapters keep #private state, which another receiver cannot
 * reach); other properties read through, live. Built once as a plain object, so callers
 * pay an ordinary property read per method, where a Proxy trap cost several on every
 * request. Covers what `target` has when this is called: its own properties and its
 * prototypes' (classes: all their methods).
 */
export function forwarding<T extends object>(
  target: T,
  overrides: { [K in keyof T]?: T[K] } = {},
): T {
  const forward: Record<PropertyKey, unknown> = { ...overrides };
  for (
    let level: object | null = target;
    level !== null && level !== Object.prototype;
    level = Object.getPrototypeOf(level)
  ) {
    for (const key of Reflect.ownKeys(level)) {
      if (key === 'constructor' || Object.hasOwn(forward, key)) continue;
      const value = Reflect.getOwnPropertyDescriptor(level, key)?.value;
      if (typeof value === 'function') forward[key] = value.bind(target);
      else {
        Object.defineProperty(forward, key, {
          get: () => Reflect.get(target, key, target),
          enumerable: true,
        });
      }
    }
  }
  return forward as T;
}
