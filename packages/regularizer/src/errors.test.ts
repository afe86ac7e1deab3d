import { describe, expect, it, vi } from 'vitest';
import { ConfigError, DataError, DivergenceError, RegstackError, describeError } from './errors.js';

/** A second copy of the errors module, with classes of its own, as a duplicate package copy would have. */
async function otherCopy(): Promise<typeof import('./errors.js')> {
  vi.resetModules();
  const copy = await import('./errors.js');
  expect(copy.ConfigError).not.toBe(ConfigError); // else the test below proves nothing
  return copy;
}

describe('RegstackError.isInstance', () => {
  it('recognises errors of another copy of the package, where instanceof does not', async () => {
    const copy = await otherCopy();
    const foreign = new copy.ConfigError('rcad.alpha', 'must be ≥ 0, got -1');
    expect(foreign instanceof ConfigError).toBe(false);
    expect(ConfigError.isInstance(foreign)).toBe(true);
    expect(RegstackError.isInstance(foreign)).toBe(true);
    expect(DataError.isInstance(foreign)).toBe(false);
    expect(DivergenceError.isInstance(foreign)).toBe(false);
    expect(copy.DataError.isInstance(new DataError('batch.labels', 'out of range'))).toBe(true);
  });

  it('tells the kinds apart and says no to anything else', () => {
    const errors = [new ConfigError('a', 'b'), new DataError('a', 'b'), new DivergenceError('a', 'b')];
    expect(errors.map((error) => [ConfigError, DataError, DivergenceError].map((type) => type.isInstance(error)))).toEqual([
      [true, false, false],
      [false, true, false],
      [false, false, true],
    ]);
    expect(errors.every((error) => RegstackError.isInstance(error))).toBe(true);
    for (const other of [new Error('a: b'), Object.assign(new Error('x'), { name: 'ConfigError', field: 'a' }), null, undefined, 'ConfigError', {}]) {
      expect(RegstackError.isInstance(other)).toBe(false);
      expect(ConfigError.isInstance(other)).toBe(false);
    }
  });

  it('a subclass that declares its kind is recognised as itself and as its parents', () => {
    class ShapeError extends DataError {
      static override readonly kind = 'ShapeError';
    }
    const error = new ShapeError('batch.inputs', 'rank 3');
    expect([ShapeError.isInstance(error), DataError.isInstance(error), RegstackError.isInstance(error), ConfigError.isInstance(error)]).toEqual([true, true, true, false]);
    expect(ShapeError.isInstance(new DataError('batch.inputs', 'rank 3'))).toBe(false);
    expect(error.name).toBe('ShapeError');
  });
});

describe('cause', () => {
  it('is carried whole, not pasted into the message; describeError prints the chain on one line', () => {
    const low = Object.assign(new Error('getaddrinfo ENOTFOUND example.org'), { code: 'ENOTFOUND' });
    const fetchFailed = new TypeError('fetch failed', { cause: low });
    const error = new DataError('cifar10.download', 'cannot reach https://example.org/cifar.tar.gz', { cause: fetchFailed });
    expect(error.message).toBe('cifar10.download: cannot reach https://example.org/cifar.tar.gz');
    expect(error.cause).toBe(fetchFailed);
    expect(describeError(error)).toBe('cifar10.download: cannot reach https://example.org/cifar.tar.gz (cause: fetch failed; cause: getaddrinfo ENOTFOUND example.org)');
    expect(describeError(new ConfigError('a', 'b'))).toBe('a: b');
    expect('cause' in new ConfigError('a', 'b')).toBe(false);
    expect(describeError('plain text')).toBe('plain text');
  });

  it('stops at a cycle of causes', () => {
    const first = new Error('first');
    const second = new Error('second', { cause: first });
    Object.assign(first, { cause: second });
    expect(describeError(second)).toBe('second (cause: first)');
  });
});
