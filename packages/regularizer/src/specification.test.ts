import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import type { RegularizerPlugin } from './contract.js';
import { ConfigError } from './errors.js';
import { SPECIFICATION_VERSIONS } from './specification.js';
import { composeRegularizers } from './stack.js';

/** A loss-term plugin; `extra` may hold what the types forbid, as a plugin built against another contract would. */
const term = (extra: Record<string, unknown>): RegularizerPlugin =>
  ({ name: 'zero', stage: 'loss-term', loss: () => ({ value: tf.scalar(0) }), ...extra }) as RegularizerPlugin;

describe('the plugin contract version', () => {
  it('accepts v1 declared, and a plugin that declares none as v1', () => {
    expect(SPECIFICATION_VERSIONS).toEqual(['v1']);
    expect(composeRegularizers([term({ specificationVersion: 'v1' })]).plugins).toHaveLength(1);
    expect(composeRegularizers([term({})]).plugins).toHaveLength(1);
  });

  it('rejects an unknown version with a ConfigError naming the plugin, whatever its position', () => {
    const compose = () => composeRegularizers([term({ name: 'first' }), term({ name: 'from-the-future', specificationVersion: 'v2' })]);
    expect(compose).toThrow(ConfigError);
    expect(compose).toThrow(/^stack\[1\]\.specificationVersion: plugin 'from-the-future' implements regstack plugin contract v2, but this @regstack\/regularizer runs v1/);
    for (const version of [1, 'V1', null, '']) {
      expect(() => composeRegularizers([term({ specificationVersion: version })])).toThrow(/stack\[0\]\.specificationVersion: plugin 'zero'/);
    }
  });
});
