import { describe, expect, it } from 'vitest';
import { randomValues } from '../test-values.js';
import { simdKernels } from './instance.js';
import { reserve, sumRegions } from './memory.js';

describe('sumRegions', () => {
  it("adds the pieces' partial sums in piece order, rounded to float32 after each addition, into dW", () => {
    const kernels = simdKernels()!;
    const floats = 4 * 37;
    const regionFloats = floats + 12;
    const start = 8;
    const heap = reserve(kernels, (start + 3 * regionFloats) * 4)!;
    // Values of very different sizes, so that another order of the additions rounds differently.
    const regions = [0, 1, 2].map((region) => randomValues(floats, 5 + region).map((value, index) => value * 10 ** ((index + region) % 8)));
    for (const [region, values] of regions.entries()) heap.set(values, start + region * regionFloats);
    const dw = new Float32Array(floats).fill(Number.NaN);
    sumRegions(kernels, dw, start, regionFloats, 3);
    const inOrder = regions[0]!.map((value, index) => Math.fround(Math.fround(value + regions[1]![index]!) + regions[2]![index]!));
    expect(Array.from(dw)).toEqual(Array.from(inOrder));
    const otherOrder = regions[2]!.map((value, index) => Math.fround(Math.fround(value + regions[1]![index]!) + regions[0]![index]!));
    expect(Array.from(dw)).not.toEqual(Array.from(otherOrder));
  });

  it('copies a single region as it is, and refuses a dW that is not whole vectors', () => {
    const kernels = simdKernels()!;
    const heap = reserve(kernels, 4096)!;
    const values = randomValues(8, 3);
    heap.set(values, 4);
    const dw = new Float32Array(8);
    sumRegions(kernels, dw, 4, 100, 1);
    expect(Array.from(dw)).toEqual(Array.from(values));
    expect(() => sumRegions(kernels, new Float32Array(6), 4, 100, 2)).toThrow(/whole vectors of 4 floats, got 6/);
  });
});
