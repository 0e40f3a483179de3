import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { quotaPeriod } from './limits.ts';

describe('quotaPeriod', () => {
  it('names the UTC calendar month, across boundaries and back in time', () => {
    const lastMs = Date.UTC(2026, 11, 31, 23, 59, 59, 999);
    assert.equal(quotaPeriod(Date.UTC(2026, 11, 1)), '2026-12');
    assert.equal(quotaPeriod(lastMs), '2026-12');
    assert.equal(quotaPeriod(lastMs + 1), '2027-01');
    assert.equal(quotaPeriod(Date.UTC(2026, 1, 28, 12)), '2026-02');
    assert.equal(quotaPeriod(Date.UTC(2024, 1, 29, 12)), '2024-02');
    assert.equal(quotaPeriod(Date.UTC(2026, 11, 1) - 1), '2026-11');
    assert.equal(quotaPeriod(lastMs), '2026-12');
  });
});
