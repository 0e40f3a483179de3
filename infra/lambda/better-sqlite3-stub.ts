/**
 * Bundled in place of `better-sqlite3` (a native module built for the machine that ran
 * `npm ci`, not for Lambda's arm64 image). `services.ts` imports the SQLite store
 * statically, so an ESM bundle that left the package external would fail at load with
 * ERR_MODULE_NOT_FOUND even though Lambda only ever runs `REELPOSTLY_STORE=dynamodb`.
 */
export default class Database {
  static SqliteError = class SqliteError extends Error {};

  constructor() {
    throw new Error('SQLite is not available on AWS Lambda: set REELPOSTLY_STORE=dynamodb');
  }
}
