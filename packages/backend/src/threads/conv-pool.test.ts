import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convolutionThreads, setConvPool, setCopyOverlap, setMinimumParallelWork, setPieceCopyHook, setPiecesPerThread, simdPieces } from './parallel-conv.js';
import { relativeError } from '@regstack/regularizer/testing';
import { stopWorkerThreads, useBackend } from '../use-backend.js';
import { setWorkerTimeout } from './conv-pool.js';
import type { ConvPool } from './parallel-conv.js';
import { simdKernels } from '../simd/instance.js';
import { winogradChosen } from '../simd/winograd.js';
import { winogradFilterGradientChosen } from '../simd/winograd-filter-gradient.js';

function values(shape: number[], seed: number): Float32Array {
  let state = seed;
  return Float32Array.from({ length: tf.util.sizeFromShape(shape) }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  });
}

type Rank4 = [number, number, number, number];

/** Convolutions with every gradient: odd batches (uneven shares), stride 2, 'same', 'valid' and explicit padding. */
const cases: Array<{ label: string; x: Rank4; filter: Rank4; strides: number; pad: 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]] }> = [
  { label: 'batch 5, 3×3 stride 1 same', x: [5, 9, 8, 3], filter: [3, 3, 3, 4], strides: 1, pad: 'same' },
  { label: 'batch 4, 3×3 stride 2 same', x: [4, 10, 9, 4], filter: [3, 3, 4, 6], strides: 2, pad: 'same' },
  { label: 'batch 3, 1×1 stride 2 valid', x: [3, 8, 8, 4], filter: [1, 1, 4, 5], strides: 2, pad: 'valid' },
  { label: 'batch 7, 3×3 explicit padding', x: [7, 6, 7, 2], filter: [3, 3, 2, 3], strides: 1, pad: [[0, 0], [1, 1], [1, 1], [0, 0]] },
  // Channels in multiples of 4: the direct SIMD kernels (Winograd for the stride-1 3×3 ones with enough
  // tiles), sharing images on their shared memory.
  { label: 'batch 5, 3×3 stride 2 same, 8 → 12 channels', x: [5, 9, 9, 8], filter: [3, 3, 8, 12], strides: 2, pad: 'same' },
  { label: 'batch 3, 3×3 stride 1 same, 4 → 8 channels (Winograd)', x: [3, 7, 6, 4], filter: [3, 3, 4, 8], strides: 1, pad: 'same' },
  // Stride-1 3×3 with enough tiles: Winograd forward and for dx, each piece in its own scratch region.
  { label: 'batch 5, 3×3 stride 1 same, 8 → 12 channels (Winograd)', x: [5, 9, 9, 8], filter: [3, 3, 8, 12], strides: 1, pad: 'same' },
  { label: 'batch 4, 3×3 stride 1 valid, 16 → 4 channels (Winograd)', x: [4, 12, 11, 16], filter: [3, 3, 16, 4], strides: 1, pad: 'valid' },
  // Enough channel pairs and work: Winograd for dW too (odd sides: half-empty last tiles).
  { label: 'batch 5, 3×3 stride 1 same, 32 → 32 channels (Winograd, dW too)', x: [5, 15, 15, 32], filter: [3, 3, 32, 32], strides: 1, pad: 'same' },
];

/** Output, dL/dx and dL/dW of Σ conv(x, W)·u for each case. */
function convolutionsAndGradients(): Float32Array[][] {
  return cases.map(({ x, filter, strides, pad }, index) =>
    tf.tidy(() => {
      const input = tf.tensor4d(values(x, index + 1), x);
      const weights = tf.tensor4d(values(filter, index + 20), filter);
      const output = tf.conv2d(input, weights, strides, pad);
      const upstream = tf.tensor4d(values(output.shape, index + 40), output.shape as Rank4);
      const [dx, dw] = tf.grads((a: tf.Tensor, w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, w as tf.Tensor4D, strides, pad), upstream)))([input, weights]);
      return [output, dx!, dw!].map((tensor) => tensor.dataSync() as Float32Array);
    }),
  );
}

/** The active pool, its `start` wrapped to record each share's plan family (or job kind); `restore` unwraps it. */
function recordFamilies(): { pool: ConvPool; families: string[]; restore: () => void } {
  const pool = setConvPool(undefined)!;
  setConvPool(pool);
  const families: string[] = [];
  const start = pool.start.bind(pool);
  pool.start = (shares) => {
    for (const share of shares) families.push(share.kind === 'simd' ? share.plan.family : share.kind);
    start(shares);
  };
  return { pool, families, restore: () => (pool.start = start) };
}

describe('worker threads for convolutions on wasm (Node)', () => {
  let previousThreshold = 0;
  let oneThread: Float32Array[][];

  beforeAll(async () => {
    // Share every convolution, however small, so that these small cases exercise the workers.
    previousThreshold = setMinimumParallelWork(0);
    const info = await useBackend('wasm');
    expect(info.threads).toBe(1);
    oneThread = convolutionsAndGradients();
  });

  afterAll(async () => {
    setMinimumParallelWork(previousThreshold);
    await useBackend('wasm');
    await stopWorkerThreads();
  });

  it('has cases that the workers run by Winograd, forward and for dx, and for dW', () => {
    const geometries = cases.map(({ x, filter, strides, pad }) => {
      const info = tf.backend_util.computeConv2DInfo(x, filter, strides, 1, pad);
      return { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
    });
    expect(geometries.map(winogradChosen)).toEqual([false, false, false, false, false, true, true, true, true]);
    expect(geometries.map(winogradFilterGradientChosen)).toEqual([false, false, false, false, false, false, false, false, true]);
  });

  it.each([2, 3])('with %i threads: the same outputs and gradients as one thread, nothing leaked', async (threads) => {
    const info = await useBackend('wasm', { threads });
    expect(info.threads).toBe(threads);
    expect(convolutionThreads()).toBe(threads);
    expect(info.kernels).toContain('Conv2D');
    const tensors = tf.memory().numTensors;
    const data = (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
    const shared = convolutionsAndGradients();
    expect(tf.memory().numTensors).toBe(tensors);
    expect((tf.backend() as unknown as { numDataIds(): number }).numDataIds()).toBe(data);
    for (const [index, results] of shared.entries()) {
      for (const [which, result] of results.entries()) {
        expect(relativeError(result, oneThread[index]![which]!), `${cases[index]!.label}: ${['output', 'dx', 'dW'][which]}`).toBeLessThan(1e-6);
      }
    }
  });

  it('cuts a shared call into claimed pieces: the same results as one thread, and the same at every repeat', async () => {
    // Pieces in batch order, as even as integers allow; piece i writes region i.
    expect(simdPieces(5, 1)).toEqual([[0, 5]]);
    expect(simdPieces(5, 2)).toEqual([[0, 2], [2, 5]]);
    const previous = setPiecesPerThread(3);
    try {
      expect(simdPieces(32, 2)).toEqual([[0, 5], [5, 10], [10, 16], [16, 21], [21, 26], [26, 32]]);
      expect(simdPieces(4, 2)).toEqual([[0, 1], [1, 2], [2, 3], [3, 4]]);
      await useBackend('wasm', { threads: 2 });
      const first = convolutionsAndGradients();
      const second = convolutionsAndGradients();
      for (const [index, results] of first.entries()) {
        for (const [which, result] of results.entries()) {
          const label = `${cases[index]!.label}: ${['output', 'dx', 'dW'][which]}`;
          expect(relativeError(result, oneThread[index]![which]!), label).toBeLessThan(1e-6);
          // The filter gradient's partial sums are added in piece order, whichever thread ran which piece.
          expect(Array.from(second[index]![which]!), label).toEqual(Array.from(result));
        }
      }
    } finally {
      setPiecesPerThread(previous);
    }
    expect(() => setPiecesPerThread(0)).toThrow(RangeError);
  });

  describe('copying the images in while the workers run', () => {
    // 16 images in 8 pieces per thread: the workers run ahead of a copy slowed to 2 ms a piece.
    const x: Rank4 = [16, 10, 10, 8];
    const forward = (seed: number, filter: Rank4) =>
      tf.tidy(() => tf.conv2d(tf.tensor4d(values(x, seed), x), tf.tensor4d(values(filter, 99), filter), 1, 'same').dataSync() as Float32Array);
    const filterGradient = (seed: number, filter: Rank4) =>
      tf.tidy(() => {
        const input = tf.tensor4d(values(x, seed), x);
        const upstream = tf.tensor4d(values([...x.slice(0, 3), filter[3]], seed + 1), [...x.slice(0, 3), filter[3]] as Rank4);
        return tf.grad((w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(input, w as tf.Tensor4D, 1, 'same'), upstream)))(tf.tensor4d(values(filter, 99), filter)).dataSync() as Float32Array;
      });
    // A 3×3 filter (Winograd forward and dW) and a 5×5 one (the direct kernels).
    const filters: Rank4[] = [
      [3, 3, 8, 32],
      [5, 5, 8, 12],
    ];
    const slowCopy = (copied: number[]) => (piece: number) => {
      copied.push(piece);
      const until = performance.now() + 2;
      while (performance.now() < until);
    };
    let previousPieces = 1;
    let previousOverlap = true;

    beforeAll(() => {
      previousPieces = setPiecesPerThread(8);
      previousOverlap = setCopyOverlap(true);
    });

    afterAll(() => {
      setPiecesPerThread(previousPieces);
      setCopyOverlap(previousOverlap);
      setPieceCopyHook(undefined);
    });

    it('never lets a worker read a piece before it is copied: bit for bit what copying first gives, call after call', async () => {
      await useBackend('wasm', { threads: 2 });
      setCopyOverlap(false);
      const expected = filters.map((filter) => [1, 2].map((seed) => [forward(seed, filter), filterGradient(seed, filter)]));
      setCopyOverlap(true);
      const copied: number[] = [];
      setPieceCopyHook(slowCopy(copied));
      try {
        for (const [index, filter] of filters.entries()) {
          // Seed 2 after seed 1: a worker reading a piece not copied yet would read seed 1's images,
          // left in the memory by the call before (and the copied count must start over per call).
          for (const [seedIndex, seed] of [1, 2].entries()) {
            expect(Array.from(forward(seed, filter)), `${filter} forward, seed ${seed}`).toEqual(Array.from(expected[index]![seedIndex]![0]!));
            expect(Array.from(filterGradient(seed, filter)), `${filter} dW, seed ${seed}`).toEqual(Array.from(expected[index]![seedIndex]![1]!));
          }
        }
      } finally {
        setPieceCopyHook(undefined);
      }
      // Every shared call copied its 16 pieces in order, one at a time.
      expect(copied.length % 16).toBe(0);
      expect(copied.slice(0, 16)).toEqual(Array.from({ length: 16 }, (_, piece) => piece));
      // Close to one thread's results (the dW partial sums are grouped per piece, so not bit for bit).
      await useBackend('wasm');
      for (const [index, filter] of filters.entries()) {
        expect(Array.from(forward(2, filter))).toEqual(Array.from(expected[index]![1]![0]!));
        expect(relativeError(filterGradient(2, filter), expected[index]![1]![1]!)).toBeLessThan(1e-6);
      }
    });

    it('collects the workers waiting for a piece when the copy fails, reports the copy error, and keeps working', async () => {
      await useBackend('wasm', { threads: 2 });
      const pool = setConvPool(undefined)!;
      setConvPool(pool);
      const waited = { calls: 0 };
      const wait = pool.wait.bind(pool);
      pool.wait = () => {
        waited.calls += 1;
        return wait();
      };
      // A worker left waiting for piece 8 would not answer: the pool would give up on it after this long.
      const previousTimeout = setWorkerTimeout(5_000);
      // The same call once first, so that the worker has its job and memory and is ready within the
      // copy's first pieces (the first call of a plan posts it, which can take longer than the copy).
      forward(1, filters[1]!);
      const slow = slowCopy([]);
      setPieceCopyHook((piece) => {
        slow(piece);
        if (piece === 8) throw new Error('copy failed on piece 8');
      });
      try {
        expect(() => forward(1, filters[1]!)).toThrow('copy failed on piece 8');
        expect(waited.calls).toBe(2);
        setPieceCopyHook(undefined);
        // The workers are idle again, and the next calls are shared as before.
        for (const filter of filters) expect(relativeError(forward(3, filter), await oneThreadForward(3, filter))).toBeLessThan(1e-6);
        expect(waited.calls).toBeGreaterThan(2);
      } finally {
        setPieceCopyHook(undefined);
        setWorkerTimeout(previousTimeout);
        pool.wait = wait;
      }
    });

    async function oneThreadForward(seed: number, filter: Rank4): Promise<Float32Array> {
      await useBackend('wasm');
      const result = forward(seed, filter);
      await useBackend('wasm', { threads: 2 });
      return result;
    }
  });

  it('runs on one thread again when asked for one thread or another backend, and back on two', async () => {
    await useBackend('wasm', { threads: 2 });
    expect(convolutionThreads()).toBe(2);
    const info = await useBackend('wasm');
    expect(info.threads).toBe(1);
    expect(convolutionThreads()).toBe(1);
    // The parked workers come back, and still compute.
    await useBackend('wasm', { threads: 2 });
    expect(convolutionThreads()).toBe(2);
    const again = convolutionsAndGradients();
    expect(relativeError(again[0]![2]!, oneThread[0]![2]!)).toBeLessThan(1e-6);
    await useBackend('cpu');
    expect(convolutionThreads()).toBe(1);
    expect(tf.getBackend()).toBe('cpu');
    await useBackend('wasm', { threads: 3 });
    expect(convolutionThreads()).toBe(3);
    await stopWorkerThreads();
    expect(convolutionThreads()).toBe(1);
    const alone = convolutionsAndGradients();
    expect(relativeError(alone[4]![2]!, oneThread[4]![2]!)).toBeLessThan(1e-6);
  });

  it("reports a worker's failure to the caller with the worker's message, and keeps working", async () => {
    await useBackend('wasm', { threads: 2 });
    const pool = setConvPool(undefined)!;
    setConvPool(pool);
    const values = new Float32Array(4);
    pool.start([
      {
        kind: 'bogus' as never,
        inputs: [
          { values, shape: [1, 2, 2, 1] },
          { values, shape: [1, 2, 2, 1] },
        ],
        attributes: { strides: 1, pad: 'valid' },
        outputShape: [1, 1, 1, 1],
        outputSize: 1,
      },
    ]);
    expect(() => pool.wait()).toThrow(/a convolution worker failed: conv worker: unknown job kind 'bogus'/);
    const after = convolutionsAndGradients();
    expect(relativeError(after[1]![2]!, oneThread[1]![2]!)).toBeLessThan(1e-6);
  });

  it('gives up on a worker that died, names it, and starts new workers on the next useBackend', async () => {
    await useBackend('wasm', { threads: 2 });
    const pool = setConvPool(undefined)!;
    setConvPool(pool);
    // A worker gone without a word (killed from outside): its share can never come back. The first
    // convolution to wait for it is the first case's, a direct SIMD one (4 output channels); after
    // that the pool refuses every call.
    await (pool as unknown as { workers: Array<{ worker: { terminate(): Promise<number> } }> }).workers[0]!.worker.terminate();
    const previous = setWorkerTimeout(200);
    const memoryBefore = simdKernels()!.memory;
    try {
      expect(() => convolutionsAndGradients()).toThrow(/a convolution worker did not answer within 0.2 s; call useBackend again/);
      // The direct kernels leave the memory the dead worker had: the next call gets a new one.
      expect(simdKernels()!.memory).not.toBe(memoryBefore);
      expect(() => convolutionsAndGradients()).toThrow(/did not answer/);
    } finally {
      setWorkerTimeout(previous);
    }
    await useBackend('wasm');
    await useBackend('wasm', { threads: 2 });
    const after = convolutionsAndGradients();
    expect(relativeError(after[0]![2]!, oneThread[0]![2]!)).toBeLessThan(1e-6);
  });

  it('sends a worker each SIMD job once, then only its id; past the jobs it keeps, ids start over with results unchanged', async () => {
    const convolution = (width: number) =>
      tf.tidy(() => {
        const x = tf.tensor4d(values([2, 5, width, 4], width), [2, 5, width, 4]);
        const w = tf.tensor4d(values([3, 3, 4, 8], 7), [3, 3, 4, 8]);
        return tf.conv2d(x, w, 1, 'same').dataSync() as Float32Array;
      });
    // 300 widths: more distinct plans than a worker keeps (SIMD_JOB_CACHE), then the first ones again.
    const widths = [...Array.from({ length: 300 }, (_, index) => index + 1), 1, 2, 3, 6];
    await useBackend('wasm');
    const expected = widths.map(convolution);

    await useBackend('wasm', { threads: 2 });
    const pool = setConvPool(undefined)!;
    setConvPool(pool);
    const posted = () => (pool as unknown as { messagesPosted: number }).messagesPosted;
    convolution(6);
    const afterFirst = posted();
    for (let repeat = 0; repeat < 5; repeat++) expect(convolution(6)).toEqual(expected[5]);
    expect(posted()).toBe(afterFirst);
    for (const [index, width] of widths.entries()) expect(convolution(width), `width ${width}`).toEqual(expected[index]);
    // Every width but 6 (kept already) was posted once; the four at the end had been forgotten (the main
    // thread starts over once it has SIMD_JOB_CACHE ids) and were posted again.
    expect(posted() - afterFirst).toBe(299 + 4);
  });

  it("runs the Winograd filter gradient's pieces on the workers, sent once then by id", async () => {
    await useBackend('wasm', { threads: 2 });
    const { pool, families, restore } = recordFamilies();
    const posted = () => (pool as unknown as { messagesPosted: number }).messagesPosted;
    const index = cases.length - 1;
    const { x, filter } = cases[index]!;
    const gradient = () =>
      tf.tidy(() => {
        const input = tf.tensor4d(values(x, index + 1), x);
        const weights = tf.tensor4d(values(filter, index + 20), filter);
        const output = tf.conv2d(input, weights, 1, 'same');
        const upstream = tf.tensor4d(values(output.shape, index + 40), output.shape as Rank4);
        return tf.grad((w: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(input, w as tf.Tensor4D, 1, 'same'), upstream)))(weights).dataSync() as Float32Array;
      });
    try {
      const first = gradient();
      expect(families).toContain('winograd-filter');
      expect(relativeError(first, oneThread[index]![2]!)).toBeLessThan(1e-6);
      const afterFirst = posted();
      families.length = 0;
      // The same plan and pieces: only the job's id is sent, and the partial sums are added in piece order.
      expect(Array.from(gradient())).toEqual(Array.from(first));
      expect(families).toContain('winograd-filter');
      expect(posted()).toBe(afterFirst);
    } finally {
      restore();
    }
  });

  it("runs a strided input gradient's sub-pixel pieces on the workers: the values of one thread", async () => {
    await useBackend('wasm', { threads: 2 });
    const { families, restore } = recordFamilies();
    try {
      const shared = convolutionsAndGradients();
      expect(families).toContain('sub-pixel');
      // The stride-2 cases with 4 and 8 input channels (a 3 × 3 and a 1 × 1 filter, 'same' and 'valid'):
      // each image's dx is one thread's, its sums those of one thread.
      for (const index of [1, 2, 4]) expect(Array.from(shared[index]![1]!), cases[index]!.label).toEqual(Array.from(oneThread[index]![1]!));
    } finally {
      restore();
    }
  });

  it('refuses worker threads without our kernels, naming the field', async () => {
    await expect(useBackend('wasm', { threads: 2, registerKernels: false })).rejects.toMatchObject({ field: 'backend.threads' });
    await expect(useBackend('wasm', { threads: 0 })).rejects.toMatchObject({ field: 'backend.threads' });
  });
});
