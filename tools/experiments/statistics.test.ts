import { describe, expect, it } from 'vitest';
import {
  bootstrapInterval,
  dedupeRuns,
  pairedDifferences,
  seededUniform,
  studentTCumulative,
  studentTQuantile,
  summarize,
  tInterval,
} from './statistics.mjs';

describe('summarize', () => {
  it('gives the mean, the sample (n − 1) standard deviation and the range', () => {
    const summary = summarize([1, 2, 3, 4]);
    expect(summary.mean).toBe(2.5);
    expect(summary.standardDeviation).toBeCloseTo(Math.sqrt(5 / 3), 12); // Σ(x − 2.5)² = 5, over n − 1 = 3
    expect(summary).toMatchObject({ count: 4, minimum: 1, maximum: 4 });
  });

  it('has no standard deviation for one value, and refuses none or a non-number', () => {
    expect(summarize([0.87]).standardDeviation).toBeNaN();
    expect(() => summarize([])).toThrow(/no values/);
    expect(() => summarize([1, Number.NaN])).toThrow(/not a finite number/);
  });
});

describe('Student t', () => {
  // Two-sided 95 % (and other) critical values as printed in any t table.
  it.each([
    [0.975, 1, 12.7062],
    [0.975, 2, 4.3027],
    [0.975, 4, 2.7764],
    [0.975, 9, 2.2622],
    [0.975, 30, 2.0423],
    [0.995, 10, 3.1693],
    [0.9, 3, 1.6377],
  ])('quantile(%f, %i) = %f', (probability, degreesOfFreedom, expected) => {
    expect(studentTQuantile(probability, degreesOfFreedom)).toBeCloseTo(expected, 4);
  });

  it('approaches the normal quantile for many degrees of freedom, and is symmetric', () => {
    expect(studentTQuantile(0.975, 1e6)).toBeCloseTo(1.959964, 4);
    expect(studentTQuantile(0.025, 2)).toBeCloseTo(-4.3027, 4);
    expect(studentTQuantile(0.5, 7)).toBe(0);
  });

  it('inverts its distribution function', () => {
    for (const degreesOfFreedom of [1, 2.5, 6, 40]) {
      for (const probability of [0.6, 0.9, 0.99, 0.999]) {
        expect(studentTCumulative(studentTQuantile(probability, degreesOfFreedom), degreesOfFreedom)).toBeCloseTo(probability, 10);
      }
    }
    expect(studentTCumulative(0, 3)).toBeCloseTo(0.5, 12);
    expect(studentTCumulative(1, 1)).toBeCloseTo(0.75, 12); // Cauchy: 1/2 + atan(1)/π
  });

  it('refuses a probability outside (0, 1) or non-positive degrees of freedom', () => {
    expect(() => studentTQuantile(1, 3)).toThrow(/probability/);
    expect(() => studentTQuantile(0.975, 0)).toThrow(/degreesOfFreedom/);
  });
});

describe('tInterval', () => {
  it('is mean ± t(0.975, n − 1) · sd / √n', () => {
    // mean 4, sd √12.5 = 3.5355, t(0.975, 4) = 2.7764: half-width 4.38995
    const interval = tInterval([1, 2, 3, 4, 10]);
    expect(interval.mean).toBe(4);
    expect(interval.degreesOfFreedom).toBe(4);
    expect(interval.lower).toBeCloseTo(-0.38995, 4);
    expect(interval.upper).toBeCloseTo(8.38995, 4);
    // two values: t(0.975, 1) · |a − b| / 2
    const two = tInterval([1.5, -0.5]);
    expect(two.upper - two.mean).toBeCloseTo(12.7062, 4);
  });

  it('needs two values', () => {
    expect(() => tInterval([1])).toThrow(/at least 2 values, got 1/);
  });
});

describe('pairedDifferences', () => {
  it('pairs the seeds both sides have, in seed order', () => {
    const treatment = new Map([[2, 88.5], [0, 87.5], [3, 90]]);
    const baseline = new Map([[0, 87], [1, 86], [2, 89]]);
    expect(pairedDifferences(treatment, baseline)).toEqual([
      { seed: 0, treatment: 87.5, baseline: 87, difference: 0.5 },
      { seed: 2, treatment: 88.5, baseline: 89, difference: -0.5 },
    ]);
    expect(pairedDifferences(new Map([[4, 1]]), baseline)).toEqual([]);
  });
});

describe('bootstrapInterval', () => {
  it('is the same for the same seed and differs for another', () => {
    const values = [0.4, -1.2, 2.5, 0.9, 1.1, -0.3];
    const first = bootstrapInterval(values, { seed: 16 });
    expect(bootstrapInterval(values, { seed: 16 })).toEqual(first);
    expect(bootstrapInterval(values, { seed: 17 })).not.toEqual(first);
    expect(first.mean).toBeCloseTo(0.5667, 4);
    expect(first.lower).toBeLessThan(first.mean);
    expect(first.upper).toBeGreaterThan(first.mean);
    expect(first.lower).toBeGreaterThanOrEqual(-1.2);
    expect(first.upper).toBeLessThanOrEqual(2.5);
  });

  it('with two values spans exactly the two (resampled means are a, (a+b)/2 or b)', () => {
    expect(bootstrapInterval([1.5, -0.5])).toMatchObject({ lower: -0.5, upper: 1.5, mean: 0.5 });
    expect(bootstrapInterval([2, 2, 2])).toMatchObject({ lower: 2, upper: 2 });
  });

  it('agrees with the t interval for many values', () => {
    const uniform = seededUniform(3);
    // 200 draws of a symmetric distribution: both intervals are ≈ mean ± 1.97 · sd / √200
    const values = Array.from({ length: 200 }, () => uniform() + uniform() + uniform());
    const bootstrap = bootstrapInterval(values, { seed: 5, resamples: 20_000 });
    const t = tInterval(values);
    const width = t.upper - t.lower;
    expect(Math.abs(bootstrap.lower - t.lower)).toBeLessThan(0.05 * width);
    expect(Math.abs(bootstrap.upper - t.upper)).toBeLessThan(0.05 * width);
  });

  it('needs two values', () => {
    expect(() => bootstrapInterval([3])).toThrow(/at least 2 values, got 1/);
  });

  it('draws from a reproducible uniform generator in [0, 1)', () => {
    const a = seededUniform(42);
    const b = seededUniform(42);
    const draws = Array.from({ length: 10_000 }, () => a());
    expect(Array.from({ length: 10_000 }, () => b())).toEqual(draws);
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThan(1);
    expect(draws.reduce((sum, value) => sum + value, 0) / draws.length).toBeCloseTo(0.5, 1);
  });
});

describe('dedupeRuns', () => {
  const run = (stack: string, seed: number, trainSize: number, accuracy: number) => ({ stack, seed, data: { trainSize }, test: { accuracy } });

  it('keeps one run per (training size, stack, seed), the last line', () => {
    const { runs, duplicates } = dedupeRuns([
      run('erm', 0, 2000, 0.86),
      run('erm', 1, 2000, 0.87),
      run('erm', 0, 2000, 0.861),
      run('erm', 0, 1000, 0.8),
      run('label-smoothing:epsilon=0.1', 0, 2000, 0.88),
    ]);
    expect(duplicates).toBe(1);
    expect(runs).toHaveLength(4);
    expect(runs.filter((r) => r.stack === 'erm' && r.seed === 0 && r.data.trainSize === 2000)).toEqual([run('erm', 0, 2000, 0.861)]);
    expect(runs.find((r) => r.data.trainSize === 1000)?.test.accuracy).toBe(0.8);
  });
});
