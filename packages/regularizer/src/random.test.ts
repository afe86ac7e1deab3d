import { describe, expect, it } from 'vitest';
import { Random, holdOutIndices } from './random.js';

describe('Random', () => {
  it('is reproducible from its seed and from a saved state', () => {
    const a = new Random(42);
    const b = new Random(42);
    const drawsA = Array.from({ length: 5 }, () => a.uniform());
    expect(Array.from({ length: 5 }, () => b.uniform())).toEqual(drawsA);
    a.normal(); // leaves a spare normal in the state
    const restored = Random.fromState(JSON.parse(JSON.stringify(a.getState())));
    expect([restored.normal(), restored.uniform(), restored.int(1000)]).toEqual([a.normal(), a.uniform(), a.int(1000)]);
    expect(new Random(43).uniform()).not.toBe(new Random(42).uniform());
  });

  it('draws uniform integers, normals and Beta deviates with the right moments', () => {
    const random = new Random(7);
    const n = 20000;
    const counts = new Array(5).fill(0);
    for (let i = 0; i < n; i++) counts[random.int(5)]++;
    for (const count of counts) expect(Math.abs(count / n - 0.2)).toBeLessThan(0.015);
    const normals = Array.from({ length: n }, () => random.normal());
    const mean = normals.reduce((s, v) => s + v, 0) / n;
    const variance = normals.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.04);
    // Beta(0.4, 0.4) (mixup's usual alpha) has mean 1/2 and variance ab/((a+b)^2 (a+b+1)) = 0.1389.
    const betas = Array.from({ length: n }, () => random.beta(0.4, 0.4));
    const betaMean = betas.reduce((s, v) => s + v, 0) / n;
    const betaVariance = betas.reduce((s, v) => s + (v - betaMean) ** 2, 0) / n;
    expect(Math.abs(betaMean - 0.5)).toBeLessThan(0.01);
    expect(Math.abs(betaVariance - 0.4 * 0.4 / (0.64 * 1.8))).toBeLessThan(0.005);
    // Beta(2, 5): mean 2/7.
    const skewed = Array.from({ length: n }, () => random.beta(2, 5));
    expect(Math.abs(skewed.reduce((s, v) => s + v, 0) / n - 2 / 7)).toBeLessThan(0.01);
  });

  it('makes permutations that contain every index once', () => {
    const permutation = new Random(3).permutation(100);
    expect([...permutation].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect([...permutation]).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
  });

  it('starts nearby seeds at unrelated points of the stream', () => {
    const seeds = Array.from({ length: 200 }, (_, seed) => seed);
    const first = seeds.map((seed) => new Random(seed).uniform());
    const mean = first.reduce((s, v) => s + v, 0) / first.length;
    const std = Math.sqrt(first.reduce((s, v) => s + (v - mean) ** 2, 0) / first.length);
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.06);
    expect(Math.abs(std - Math.sqrt(1 / 12))).toBeLessThan(0.04);
    const firstBeta = seeds.map((seed) => new Random(seed).beta(1, 1));
    expect(firstBeta.filter((v) => v < 0.25).length).toBeGreaterThan(30); // Beta(1,1) is uniform
    expect(firstBeta.filter((v) => v > 0.75).length).toBeGreaterThan(30);
  });

  it('rejects a non-integer seed', () => {
    expect(() => new Random(1.5)).toThrow(/seed/);
  });
});

describe('holdOutIndices', () => {
  it('partitions the positions into sorted, disjoint parts of the rounded share, at least one when asked for', () => {
    const { train, validation } = holdOutIndices(50, 0.1, new Random(4));
    expect(validation).toHaveLength(5);
    expect(train).toHaveLength(45);
    expect([...train, ...validation].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    for (const part of [train, validation]) expect([...part]).toEqual([...part].sort((a, b) => a - b));
    expect(holdOutIndices(4, 0.1, new Random(4)).validation).toHaveLength(1); // round(0.4) = 0, but a share was asked for
    expect(holdOutIndices(50, 0, new Random(4)).validation).toHaveLength(0);
    // The same generator state gives the same split; another gives another.
    expect([...holdOutIndices(50, 0.1, new Random(4)).validation]).toEqual([...validation]);
    expect([...holdOutIndices(50, 0.1, new Random(5)).validation]).not.toEqual([...validation]);
  });
});
