import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { filterGradientReference, randomValues } from '../test-values.js';
import { enableRelaxedSimd, multiplyAddModes, withMultiplyAdd } from './test-multiply-add.js';
import { simdFilterGradient, simdFilterGradientAvailable, simdFilterGradientSupports, type FilterGradientGeometry } from './filter-gradient.js';
import { simdKernels } from './instance.js';
import { setSimdChunkBytes } from './memory.js';
import { setWinogradFilterGradient } from './winograd-filter-gradient.js';
import { FunctionBody, I32, encodeModule } from './wasm-module.js';

/** A geometry with 'same'-style padding (top/left = ⌊(window − 1)/2⌋) unless given. */
function geometry(
  [batchSize, inHeight, inWidth, inChannels]: number[],
  [filterHeight, filterWidth, , outChannels]: number[],
  [strideHeight, strideWidth]: number[],
  pads?: { top: number; left: number; outHeight: number; outWidth: number },
): FilterGradientGeometry {
  const outHeight = pads?.outHeight ?? Math.ceil(inHeight! / strideHeight!);
  const outWidth = pads?.outWidth ?? Math.ceil(inWidth! / strideWidth!);
  const padTop = pads?.top ?? Math.floor(Math.max(0, (outHeight - 1) * strideHeight! + filterHeight! - inHeight!) / 2);
  const padLeft = pads?.left ?? Math.floor(Math.max(0, (outWidth - 1) * strideWidth! + filterWidth! - inWidth!) / 2);
  return {
    batchSize: batchSize!, inHeight: inHeight!, inWidth: inWidth!, inChannels: inChannels!, outHeight, outWidth, outChannels: outChannels!,
    filterHeight: filterHeight!, filterWidth: filterWidth!, strideHeight: strideHeight!, strideWidth: strideWidth!, padTop, padLeft,
  };
}

function run(g: FilterGradientGeometry, seed: number): { got: Float32Array; want: Float64Array } {
  const x = randomValues(g.batchSize * g.inHeight * g.inWidth * g.inChannels, seed);
  const dy = randomValues(g.batchSize * g.outHeight * g.outWidth * g.outChannels, seed + 1);
  // Stale values in the output must not survive: every value is written.
  const got = new Float32Array(g.filterHeight * g.filterWidth * g.inChannels * g.outChannels).fill(Number.NaN);
  simdFilterGradient(x, dy, got, g);
  return { got, want: filterGradientReference(x, dy, g) };
}

const relaxedSimd = enableRelaxedSimd();

describe('simdFilterGradient', () => {
  // The direct loop's tests: stride-1 3 × 3 cases stay off Winograd (winograd-filter-gradient.test.ts) whatever its routing.
  beforeAll(() => {
    setWinogradFilterGradient(false);
  });
  afterAll(() => {
    setWinogradFilterGradient('auto');
  });

  it('runs here (Node has WebAssembly SIMD)', () => {
    expect(simdFilterGradientAvailable()).toBe(true);
  });

  it('has relaxed SIMD to test (Node ≥ 22, or Node 20 with its V8 flag)', () => {
    expect(relaxedSimd).toBe(true);
  });

  describe.each(multiplyAddModes(relaxedSimd))('with $mode', ({ fused }) => {
    withMultiplyAdd(fused);

    // Input channels 1-9 cover every remainder of the 4-channel blocks; output channels 4, 8, 12, 20 the
    // 8-wide blocks with and without a 4-wide remainder.
    it.each([
      { input: [2, 7, 6, 1], filter: [3, 3, 1, 4], strides: [1, 1] },
      { input: [2, 7, 6, 2], filter: [3, 3, 2, 8], strides: [2, 2] },
      { input: [3, 5, 9, 3], filter: [3, 3, 3, 12], strides: [1, 2] },
      { input: [1, 9, 9, 5], filter: [5, 5, 5, 20], strides: [2, 1] },
      { input: [2, 6, 6, 9], filter: [1, 1, 9, 12], strides: [2, 2] },
      { input: [2, 4, 4, 16], filter: [3, 3, 16, 8], strides: [1, 1] },
    ])('equals the definition for x $input, filter $filter, strides $strides', ({ input, filter, strides }) => {
      expect(simdKernels()!.fused).toBe(fused);
      const { got, want } = run(geometry(input, filter, strides), 7 + input[3]!);
      expect(relativeError(got, want)).toBeLessThan(1e-6);
    });
  });

  it('crops rows and columns that no window reaches (a valid convolution whose stride skips the last)', () => {
    // 8 = 3 + 2·2 + 1: with stride 2 and no padding the last row and column are never read.
    const { got, want } = run(geometry([2, 8, 8, 3], [3, 3, 3, 8], [2, 2], { top: 0, left: 0, outHeight: 3, outWidth: 3 }), 3);
    expect(relativeError(got, want)).toBeLessThan(1e-6);
  });

  it('pads more than the input where the windows reach past it (explicit padding)', () => {
    const { got, want } = run(geometry([2, 5, 6, 4], [3, 2, 4, 4], [2, 1], { top: 2, left: 1, outHeight: 3, outWidth: 9 }), 5);
    expect(relativeError(got, want)).toBeLessThan(1e-6);
  });

  it.each([
    ['one row per chunk', 1],
    ['whole images, several per chunk', 1 << 22],
  ])('gives the same sums with %s', (_, bytes) => {
    const g = geometry([5, 8, 8, 6], [3, 3, 6, 12], [1, 1]);
    const previous = setSimdChunkBytes(bytes);
    try {
      const { got, want } = run(g, 13);
      expect(relativeError(got, want)).toBeLessThan(1e-6);
    } finally {
      setSimdChunkBytes(previous);
    }
  });

  it('keeps float32 sums over 64k positions close to float64', () => {
    // 64 × 32 × 32 positions, as a ResNet's first block at batch 64, summed per chunk then across chunks.
    const { got, want } = run(geometry([64, 32, 32, 4], [3, 3, 4, 8], [1, 1]), 17);
    expect(relativeError(got, want)).toBeLessThan(1e-5);
  });

  it('grows its memory for large inputs and reuses it after', () => {
    const large = run(geometry([16, 32, 32, 16], [3, 3, 16, 16], [1, 1]), 19);
    expect(relativeError(large.got, large.want)).toBeLessThan(1e-5);
    const small = run(geometry([1, 3, 3, 2], [3, 3, 2, 4], [1, 1]), 23);
    expect(relativeError(small.got, small.want)).toBeLessThan(1e-6);
  });

  it('rejects output channels that are not a multiple of 4, and arrays of the wrong length, naming them', () => {
    const g = geometry([1, 4, 4, 2], [3, 3, 2, 4], [1, 1]);
    expect(simdFilterGradientSupports({ ...g, outChannels: 6 })).toBe(false);
    expect(() => simdFilterGradient(new Float32Array(32), new Float32Array(96), new Float32Array(108), { ...g, outChannels: 6 })).toThrow(
      /outChannels must be a multiple of 4, got 6/,
    );
    expect(() => simdFilterGradient(new Float32Array(31), new Float32Array(64), new Float32Array(72), g)).toThrow(/x has 31 values, expected 32/);
    expect(() => simdFilterGradient(new Float32Array(32), new Float32Array(63), new Float32Array(72), g)).toThrow(/dy has 63 values, expected 64/);
    expect(() => simdFilterGradient(new Float32Array(32), new Float32Array(64), new Float32Array(71), g)).toThrow(/dw has 71 values, expected 72/);
  });
});

describe('wasm-module', () => {
  it('encodes a function whose counted loop and arithmetic run as written', () => {
    // sum(n) = n + (n − 1) + … + 1, stored at address 0 as an i32 by way of a v128 store of 4 lanes.
    const f = new FunctionBody([I32]);
    const counter = f.local(I32);
    const total = f.local(I32);
    f.countedLoop(counter, { local: 0 }, () => {
      f.get(total).get(counter).add().set(total);
    });
    f.i32(0).get(total).i32(3).mul().i32(-5).sub();
    f.bytes.push(0x36, 0x02, 0x00); // i32.store: total·3 + 5 at address 0
    for (const shared of [false, true]) {
      const bytes = encodeModule([{ name: 'run', body: f }], { initial: 1, maximum: 2, shared });
      expect(WebAssembly.validate(bytes)).toBe(true);
      const memory = new WebAssembly.Memory({ initial: 1, maximum: 2, shared });
      const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports as { run: (n: number) => void };
      exports.run(300);
      expect(new Int32Array(memory.buffer)[0]).toBe(((300 * 301) / 2) * 3 + 5);
    }
  });
});
