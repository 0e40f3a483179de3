import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Shelf } from './row-cache.ts';

describe('row cache shelf', () => {
  const weigh = (row: object) => (row as { w: number }).w;
  const ids = (shelf: Shelf, all: string[]) => all.filter((id) => shelf.get(id) !== undefined);

  it('keeps rows within its weight budget, the oldest going first', () => {
    const shelf = new Shelf(10, weigh);
    shelf.set('a', { w: 4 });
    shelf.set('b', { w: 4 });
    assert.deepEqual(ids(shelf, ['a', 'b']), ['a', 'b']);
    shelf.set('c', { w: 4 });
    assert.deepEqual(ids(shelf, ['a', 'b', 'c']), ['b', 'c']);
    shelf.set('d', { w: 9 });
    assert.deepEqual(ids(shelf, ['a', 'b', 'c', 'd']), ['d']);
  });

  it('gives back the weight of deleted and replaced rows; never keeps an oversized one', () => {
    const shelf = new Shelf(10, weigh);
    shelf.set('a', { w: 6 });
    shelf.delete('a');
    shelf.set('b', { w: 6 });
    shelf.set('b', { w: 4 });
    shelf.set('c', { w: 6 });
    assert.deepEqual(ids(shelf, ['a', 'b', 'c']), ['b', 'c']);
    shelf.set('huge', { w: 11 });
    assert.equal(shelf.get('huge'), undefined);
    assert.deepEqual(ids(shelf, ['b', 'c']), ['b', 'c'], 'an oversized row evicts nothing');
    shelf.clear();
    shelf.set('e', { w: 10 });
    assert.deepEqual(ids(shelf, ['b', 'c', 'e']), ['e']);
  });
});
