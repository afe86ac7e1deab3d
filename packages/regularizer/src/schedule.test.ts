import { describe, expect, it } from 'vitest';
import { ConfigError } from './errors.js';
import { resolveSchedule, schedules, validateSchedulable } from './schedule.js';

const at = (epoch: number, step = 0) => ({ epoch, step });

describe('schedules', () => {
  it('multiStep decays by the factor at each milestone (the paper recipe: 100, 150, 180)', () => {
    const lr = schedules.multiStep(0.1, [100, 150, 180]);
    expect(resolveSchedule(lr, at(0))).toBeCloseTo(0.1, 12);
    expect(resolveSchedule(lr, at(99.9))).toBeCloseTo(0.1, 12);
    expect(resolveSchedule(lr, at(100))).toBeCloseTo(0.01, 12);
    expect(resolveSchedule(lr, at(160))).toBeCloseTo(0.001, 12);
    expect(resolveSchedule(lr, at(199))).toBeCloseTo(0.0001, 12);
  });

  it('linear and cosine ramps interpolate between start and end', () => {
    const linear = schedules.linear(0, 1, 10, 20, 'step');
    expect(resolveSchedule(linear, at(0, 5))).toBe(0);
    expect(resolveSchedule(linear, at(0, 15))).toBeCloseTo(0.5, 12);
    expect(resolveSchedule(linear, at(0, 25))).toBe(1);
    const cosine = schedules.cosine(1, 0, 0, 10);
    expect(resolveSchedule(cosine, at(2.5))).toBeCloseTo((1 + Math.cos(Math.PI * 0.25)) / 2, 12);
    expect(resolveSchedule(cosine, at(5))).toBeCloseTo(0.5, 12);
  });

  it('accepts numbers and functions', () => {
    expect(resolveSchedule(0.3, at(5))).toBe(0.3);
    expect(resolveSchedule(({ epoch }) => epoch * 2, at(1.5))).toBe(3);
  });

  it('rejects malformed schedules naming the field', () => {
    expect(() => validateSchedulable('rcad.alpha', Number.NaN)).toThrow(ConfigError);
    expect(() => validateSchedulable('rcad.alpha', { type: 'step', values: [1], boundaries: [5] })).toThrow(/rcad\.alpha\.values/);
    expect(() => validateSchedulable('rcad.alpha', { type: 'wave' })).toThrow(/rcad\.alpha\.type/);
    expect(() => validateSchedulable('x', { type: 'linear', from: 0, to: 1, start: 5, end: 1 })).toThrow(/x\.end/);
  });
});

describe('validateSchedulable with a range', () => {
  it('checks every value a declared schedule can take', () => {
    const range = { min: 0, max: 1 };
    expect(validateSchedulable('ls.epsilon', 0.2, range)).toBe(0.2);
    expect(() => validateSchedulable('ls.epsilon', 1.5, range)).toThrow(/ls\.epsilon: must be ≤ 1/);
    expect(() => validateSchedulable('ls.epsilon', { type: 'step', values: [0.1, 2], boundaries: [5] }, range)).toThrow(/ls\.epsilon/);
    expect(() => validateSchedulable('ls.epsilon', schedules.linear(0, -1, 0, 5), range)).toThrow(/≥ 0/);
    expect(validateSchedulable('ls.epsilon', schedules.cosine(0, 1, 0, 5), range)).toMatchObject({ type: 'cosine' });
  });
});
