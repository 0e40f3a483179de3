import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { forwarding } from './forwarding.ts';

class Base {
  inherited(): string {
    return 'base';
  }
}

class Adapter extends Base {
  #count = 0;
  name = 'first';
  bump(): number {
    this.#count += 1;
    return this.#count;
  }
  get count(): number {
    return this.#count;
  }
  replaced(): string {
    return 'original';
  }
}

describe('forwarding', () => {
  it('runs other methods on the target (private state included), overrides as given', () => {
    const target = new Adapter();
    const forward = forwarding(target, { replaced: () => 'override' });
    assert.equal(forward.bump(), 1);
    const { bump } = forward;
    assert.equal(bump(), 2, 'methods stay bound when detached');
    assert.equal(target.bump(), 3, 'the target saw both calls');
    assert.equal(forward.replaced(), 'override');
    assert.equal(forward.inherited(), 'base', 'methods of every prototype level');
  });

  it('reads fields and getters through to the target, live', () => {
    const target = new Adapter();
    const forward = forwarding(target);
    target.name = 'renamed';
    target.bump();
    assert.equal(forward.name, 'renamed');
    assert.equal(forward.count, 1);
  });

  it('stacks: a forward of a forward reaches the same target', () => {
    const target = new Adapter();
    const inner = forwarding(target, { replaced: () => 'inner' });
    const outer = forwarding(inner);
    assert.equal(outer.bump(), 1);
    assert.equal(outer.replaced(), 'inner');
    assert.equal(target.count, 1);
  });
});
