import type Database from 'better-sqlite3';

/** The rows every authenticated request reads: API keys by hash, tenants, jobs. */
export type CachedTable = 'key' | 'tenant' | 'job';

const EVICT_FUNCTION = 'reelpostly_evict';

/**
 * Each table's SQL name and id column (TEMP triggers belong to this connection only, so
 * they see exactly its own writes), and how much of it is kept: `budget` in units of
 * `weigh`, oldest rows going first. A job weighs its prompt (up to 32,000 characters),
 * so the cache stays a few MB whatever the prompts.
 */
const TABLES: Array<{
  table: CachedTable;
  on: string;
  id: string;
  budget: number;
  weigh: (row: object) => number;
}> = [
  { table: 'key', on: 'api_keys', id: 'hash', budget: 10_000, weigh: () => 1 },
  { table: 'tenant', on: 'tenants', id: 'tenant_id', budget: 10_000, weigh: () => 1 },
  {
    table: 'job',
    on: 'jobs',
    id: 'job_id',
    budget: 4_000_000,
    weigh: (row) => 1_000 + ((row as { prompt?: string }).prompt?.length ?? 0),
  },
];

/**
 * Other connections' commits are looked for at most this often (ms). Writes by other
 * connections in this process are seen at once (see `#ownProcessWrites`); a commit by
 * another process is seen by reads that start after this window.
 */
const CROSS_PROCESS_STALENESS_MS = 1;

/** Evictions by any connection of this process, so sibling connections notice them. */
let processWrites = 0;

/**
 * A read-through cache in front of one SQLite connection for the rows read on every
 * request, so polling a job's status does not cost three SQLite reads. It never serves
 * a row older than the database as this connection could see it, except for the bounded
 * window above for other processes' commits:
 *
 * - this connection's writes evict the rows they change, through TEMP triggers that
 *   fire inside SQLite for every UPDATE or DELETE of a cached table, whichever
 *   statement makes it (misses are never cached, so inserts need no eviction);
 * - other connections' commits change `PRAGMA data_version`, which clears the cache;
 *   it is read again when the window has passed or when another connection in this
 *   process has written since.
 *
 * Cached rows are frozen: a caller that changed one would change it for everybody.
 * Callers read through it only outside transactions (a transaction that rolls back
 * must not leave its rows behind).
 */
export class RowCache {
  readonly #shelves = new Map<CachedTable, Shelf>(
    TABLES.map(({ table, budget, weigh }) => [table, new Shelf(budget, weigh)]),
  );
  readonly #dataVersion: Database.Statement<[], number>;
  #version: number;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #ownProcessWrites = processWrites;

  constructor(db: Database.Database) {
    db.function(EVICT_FUNCTION, { deterministic: false }, (table: unknown, id: unknown) => {
      processWrites += 1;
      this.#shelves.get(table as CachedTable)?.delete(String(id));
      return null;
    });
    for (const { table, on, id } of TABLES) {
      for (const event of ['UPDATE', 'DELETE']) {
        db.exec(
          `CREATE TEMP TRIGGER IF NOT EXISTS evict_${on}_${event.toLowerCase()}
           AFTER ${event} ON main.${on}
           BEGIN SELECT ${EVICT_FUNCTION}('${table}', OLD.${id}); END`,
        );
      }
    }
    this.#dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck();
    this.#version = this.#dataVersion.get() as number;
  }

  /** The cached row, or `load()`'s (cached when found). */
  read<T extends object>(table: CachedTable, id: string, load: () => T | undefined): T | null {
    this.#revalidate();
    const shelf = this.#shelves.get(table) as Shelf;
    const cached = shelf.get(id);
    if (cached) return cached as T;
    const row = load();
    if (!row) return null;
    shelf.set(id, deepFreeze(row));
    return row;
  }

  #revalidate(): void {
    const now = performance.now();
    if (
      now - this.#checkedAt < CROSS_PROCESS_STALENESS_MS &&
      processWrites === this.#ownProcessWrites
    ) {
      return;
    }
    // Counted before the read: an eviction by a sibling after it forces another look.
    this.#ownProcessWrites = processWrites;
    const version = this.#dataVersion.get() as number;
    if (version !== this.#version) {
      this.#version = version;
      for (const shelf of this.#shelves.values()) shelf.clear();
    }
    this.#checkedAt = now;
  }
}

/** One table's rows, within a weight budget, oldest out first. */
export class Shelf {
  readonly #rows = new Map<string, { row: object; weight: number }>();
  #weight = 0;

  constructor(
    private readonly budget: number,
    private readonly weigh: (row: object) => number,
  ) {}

  get(id: string): object | undefined {
    return this.#rows.get(id)?.row;
  }

  set(id: string, row: object): void {
    this.delete(id);
    const weight = this.weigh(row);
    if (weight > this.budget) return;
    for (const oldest of this.#rows.keys()) {
      if (this.#weight + weight <= this.budget) break;
      this.delete(oldest);
    }
    this.#rows.set(id, { row, weight });
    this.#weight += weight;
  }

  delete(id: string): void {
    const entry = this.#rows.get(id);
    if (!entry) return;
    this.#rows.delete(id);
    this.#weight -= entry.weight;
  }

  clear(): void {
    this.#rows.clear();
    this.#weight = 0;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
