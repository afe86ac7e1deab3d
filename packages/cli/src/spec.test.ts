import { describe, expect, it } from 'vitest';
import { formatStackSpec, parseRegularizerSpec, parseStackSpec } from './spec.js';

describe('stack syntax', () => {
  it('parses regularizers with typed options', () => {
    expect(parseRegularizerSpec('rcad:alpha=1,lambda=0.2')).toEqual({ name: 'rcad', options: { alpha: 1, lambda: 0.2 } });
    expect(parseRegularizerSpec('adversarial-training:attack=pgd,epsilon=8/255,randomStart=true,clip=null')).toEqual({
      name: 'adversarial-training',
      options: { attack: 'pgd', epsilon: 8 / 255, randomStart: true, clip: null },
    });
    expect(parseRegularizerSpec('label-smoothing')).toEqual({ name: 'label-smoothing', options: {} });
  });

  it('parses stacks joined by + and writes them back', () => {
    const stack = parseStackSpec('rcad:alpha=0.5 + label-smoothing:epsilon=0.1');
    expect(stack.regularizers.map((r) => r.name)).toEqual(['rcad', 'label-smoothing']);
    expect(formatStackSpec(stack.regularizers)).toBe('rcad:alpha=0.5+label-smoothing:epsilon=0.1');
    expect(parseStackSpec('erm')).toEqual({ label: 'erm', regularizers: [] });
  });

  it('rejects malformed text naming the argument', () => {
    expect(() => parseRegularizerSpec('rcad:alpha')).toThrow(/--reg rcad: expected key=value, got 'alpha'/);
    expect(() => parseRegularizerSpec('rcad:alpha=1,alpha=2')).toThrow(/given twice/);
    expect(() => parseRegularizerSpec(':alpha=1')).toThrow(/--reg/);
  });
});
