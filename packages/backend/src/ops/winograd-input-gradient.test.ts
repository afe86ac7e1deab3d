import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { setWinogradInputGradient, type ConvPadding } from './conv-gradients.js';
import { stopWorkerThreads, useBackend } from '../use-backend.js';
import { setMinimumParallelWork, setPieceCopyHook } from '../threads/parallel-conv.js';
import { inputGradientReference, randomValues } from '../test-values.js';

type Rank4 = [number, number, number, number];

interface Case {
  label: string;
  /** The forward input, NHWC. */
  input: Rank4;
  outChannels: number;
  pad: ConvPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  /** Whether the input gradient goes to the Winograd kernel directly (else it falls back to tf.conv2d). */
  direct: boolean;
}

const cases: Case[] = [
  // The recipe's four stride-1 3×3 layers (smaller batches): 4×4 and 7×7 (odd: half-empty last tiles).
  { label: '4×4×128 → 128, same', input: [2, 4, 4, 128], outChannels: 128, pad: 'same', direct: true },
  { label: '7×7×64 → 64, same', input: [3, 7, 7, 64], outChannels: 64, pad: 'same', direct: true },
  { label: '14×14×32 → 32, valid', input: [2, 14, 14, 32], outChannels: 32, pad: 'valid', direct: true },
  { label: '28×28×16 → 16, same', input: [1, 28, 28, 16], outChannels: 16, pad: 'same', direct: true },
  // Channel counts that differ (the transpose is not square), 4 to 12 and back, odd and even sides.
  { label: '5×6×4 → 12, numeric pad 1', input: [3, 5, 6, 4], outChannels: 12, pad: 1, direct: true },
  { label: '9×8×12 → 4, numeric pad 2 (no padding around dy)', input: [1, 9, 8, 12], outChannels: 4, pad: 2, direct: true },
  { label: '6×7×8 → 4, explicit [0,2]×[1,0]', input: [2, 6, 7, 8], outChannels: 4, pad: [[0, 0], [0, 2], [1, 0], [0, 0]], direct: true },
  { label: '8×8×4 → 16, same, NCHW', input: [2, 4, 8, 8], outChannels: 16, pad: 'same', dataFormat: 'NCHW', direct: true },
  // Falls back: forward padding 3 needs dy cropped; 6 channels of dy are not whole vectors of 4.
  { label: '6×6×8 → 8, numeric pad 3 (a crop: falls back)', input: [2, 6, 6, 8], outChannels: 8, pad: 3, direct: false },
  { label: '6×6×8 → 6, same (dy channels not whole vectors: falls back)', input: [2, 6, 6, 8], outChannels: 6, pad: 'same', direct: false },
];

/** The forward convolution's geometry in the reference's terms (NHWC). */
function forwardGeometry(testCase: Case) {
  const nhwc: Rank4 = testCase.dataFormat === 'NCHW' ? [testCase.input[0], testCase.input[2], testCase.input[3], testCase.input[1]] : testCase.input;
  const info = tf.backend_util.computeConv2DInfo(nhwc, [3, 3, nhwc[3], testCase.outChannels], 1, 1, testCase.pad);
  return { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
}

interface Inputs {
  dy: Float32Array;
  dyShape: Rank4;
  filter: Float32Array;
  filterShape: Rank4;
}

function inputsOf(testCase: Case, index: number): Inputs {
  const g = forwardGeometry(testCase);
  const dyShape: Rank4 =
    testCase.dataFormat === 'NCHW' ? [g.batchSize, g.outChannels, g.outHeight, g.outWidth] : [g.batchSize, g.outHeight, g.outWidth, g.outChannels];
  const filterShape: Rank4 = [3, 3, g.inChannels, g.outChannels];
  return { dy: randomValues(tf.util.sizeFromShape(dyShape), 301 + index), dyShape, filter: randomValues(tf.util.sizeFromShape(filterShape), 401 + index), filterShape };
}

/** dx by the registered `Conv2DBackpropInput`, with the direct route on or off, and the kernels it ran. */
async function inputGradient(testCase: Case, inputs: Inputs, direct: boolean): Promise<{ dx: Float32Array; kernels: string[] }> {
  const previous = setWinogradInputGradient(direct);
  try {
    let dx: Float32Array = new Float32Array(0);
    const profile = await tf.profile(() => {
      tf.tidy(() => {
        const dy = tf.tensor4d(inputs.dy, inputs.dyShape);
        const filter = tf.tensor4d(inputs.filter, inputs.filterShape);
        const attributes = { strides: 1, pad: testCase.pad, dataFormat: testCase.dataFormat ?? 'NHWC', inputShape: testCase.input };
        const gradient = tf.engine().runKernel(tf.Conv2DBackpropInput, { dy, filter }, attributes as unknown as tf.NamedAttrMap) as tf.Tensor;
        expect(gradient.shape).toEqual(testCase.input);
        dx = gradient.dataSync() as Float32Array;
      });
    });
    return { dx, kernels: profile.kernelNames };
  } finally {
    setWinogradInputGradient(previous);
  }
}

/** The float64 definition of dx, in the case's layout. */
function reference(testCase: Case, inputs: Inputs): Float64Array {
  const g = forwardGeometry(testCase);
  const toNhwc = (values: Float32Array, shape: Rank4) =>
    testCase.dataFormat === 'NCHW' ? (tf.tidy(() => tf.transpose(tf.tensor4d(values, shape), [0, 2, 3, 1]).dataSync()) as Float32Array) : values;
  const dx = inputGradientReference(toNhwc(inputs.dy, inputs.dyShape), inputs.filter, g);
  if (testCase.dataFormat !== 'NCHW') return dx;
  const [batch, height, width, channels] = [g.batchSize, g.inHeight, g.inWidth, g.inChannels];
  const nchw = new Float64Array(dx.length);
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      for (let i = 0; i < height * width; i++) nchw[(b * channels + c) * height * width + i] = dx[(b * height * width + i) * channels + c]!;
    }
  }
  return nchw;
}

describe("stride-1 input gradient: the forward filter straight into the Winograd kernel, on wasm", () => {
  /** dx per case at one thread, by the direct route. */
  const oneThread: Float32Array[] = [];
  let previousThreshold = 0;

  beforeAll(async () => {
    // Share every convolution, however small, so that the cases below exercise the workers.
    previousThreshold = setMinimumParallelWork(0);
    const info = await useBackend('wasm');
    expect(info.kernels).toEqual(expect.arrayContaining([tf.Conv2D, tf.Conv2DBackpropInput]));
  });

  afterAll(async () => {
    setMinimumParallelWork(previousThreshold);
    setWinogradInputGradient(true);
    await useBackend('wasm');
    await stopWorkerThreads();
  });

  it.each(cases.map((testCase, index) => ({ ...testCase, index })))(
    'one thread, $label: bit for bit what tf.conv2d with the flipped filter gives, and the float64 definition',
    async (testCase) => {
      const inputs = inputsOf(testCase, testCase.index);
      const before = tf.memory().numTensors;
      const direct = await inputGradient(testCase, inputs, true);
      const fallback = await inputGradient(testCase, inputs, false);
      expect(tf.memory().numTensors).toBe(before);
      // The direct route runs no Conv2D of its own; the fallback convolves with the flipped filter.
      expect(direct.kernels.includes(tf.Conv2D)).toBe(!testCase.direct);
      expect(fallback.kernels).toContain(tf.Conv2D);
      expect(Array.from(direct.dx)).toEqual(Array.from(fallback.dx));
      expect(relativeError(direct.dx, reference(testCase, inputs))).toBeLessThan(1e-6);
      oneThread[testCase.index] = direct.dx;
    },
  );

  it('a gradient through tf.conv2d (tf.grad) is the float64 definition, and bit for bit the route before', () => {
    const testCase = cases[1]!;
    const g = forwardGeometry(testCase);
    const x = randomValues(g.batchSize * g.inHeight * g.inWidth * g.inChannels, 501);
    const { dy: upstream, filter } = inputsOf(testCase, 1);
    const gradient = (direct: boolean) => {
      const previous = setWinogradInputGradient(direct);
      try {
        return tf.tidy(() => {
          const w = tf.tensor4d(filter, [3, 3, g.inChannels, g.outChannels]);
          const u = tf.tensor4d(upstream, [g.batchSize, g.outHeight, g.outWidth, g.outChannels]);
          const loss = (input: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(input as tf.Tensor4D, w, 1, testCase.pad as 'same'), u));
          return tf.grad(loss)(tf.tensor4d(x, testCase.input)).dataSync() as Float32Array;
        });
      } finally {
        setWinogradInputGradient(previous);
      }
    };
    const direct = gradient(true);
    expect(relativeError(direct, inputGradientReference(upstream, filter, g))).toBeLessThan(1e-6);
    expect(Array.from(direct)).toEqual(Array.from(gradient(false)));
  });

  it('with 2 worker threads: bit for bit the route before, and one thread', async () => {
    expect(oneThread.filter((values) => values !== undefined)).toHaveLength(cases.length);
    const info = await useBackend('wasm', { threads: 2 });
    expect(info.threads).toBe(2);
    for (const [index, testCase] of cases.entries()) {
      const inputs = inputsOf(testCase, index);
      // Pieces of a call shared with the workers (none for a batch of 1).
      let pieces = 0;
      setPieceCopyHook(() => {
        pieces += 1;
      });
      let direct: Awaited<ReturnType<typeof inputGradient>>;
      try {
        direct = await inputGradient(testCase, inputs, true);
      } finally {
        setPieceCopyHook(undefined);
      }
      // One piece per thread where the direct route shares its batch.
      if (testCase.direct && testCase.input[0] > 1) expect(pieces, testCase.label).toBe(2);
      const fallback = await inputGradient(testCase, inputs, false);
      expect(Array.from(direct.dx), testCase.label).toEqual(Array.from(fallback.dx));
      // Winograd computes each image alone, whichever thread runs it.
      if (testCase.direct) expect(Array.from(direct.dx), testCase.label).toEqual(Array.from(oneThread[index]!));
      else expect(relativeError(direct.dx, oneThread[index]!), testCase.label).toBeLessThan(1e-6);
    }
  });
});
