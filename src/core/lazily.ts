/**
 * `load` run at the first call only; every call gets that first promise. For SDKs an
 * adapter imports on first use, so a gateway that never configures it never loads it.
 */
export function lazily<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => {
    loaded ??= load();
    return loaded;
  };
}
