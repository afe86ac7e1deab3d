import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError } from '@regstack/regularizer';
import { relativeError } from '@regstack/regularizer/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { BATCH_NORM_GRAD_KERNEL, BATCH_NORM_KERNEL, type BatchNormAttributes } from './batch-norm.js';
import { registerKernels } from '../kernels/register-kernels.js';
import { batchNormSimd } from '../simd/batch-norm.js';

/** Values with a channel-dependent offset and scale, so that a channel mix-up or a lost row shows. */
function values(length: number, channels: number, seed: number, offset = 0): Float32Array {
  let state = seed;
  return Float32Array.from({ length }, (_, index) => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    const channel = index % channels;
    return offset + (channel % 3 - 1) * 0.5 + (1 + channel / 4) * (state / 2 ** 32 - 0.5);
  });
}

interface Case {
  x: Float32Array;
  dy: Float32Array;
  gamma: Float32Array;
  beta: Float32Array;
  runningMean: Float32Array;
  runningVariance: Float32Array;
  residual: Float32Array;
}

/**
 * The layer and its gradient in float64, the textbook way (centred variance, x̂ explicitly), with the
 * residual added before the ReLU where `attributes.residual`.
 */
function reference(data: Case, channels: number, attributes: BatchNormAttributes) {
  const { x, dy, gamma, beta, runningMean, runningVariance } = data;
  const residual = attributes.residual ? data.residual : new Float32Array(x.length);
  const count = x.length / channels;
  const batch = attributes.mode !== 'eval';
  const mean = new Float64Array(channels);
  const variance = new Float64Array(channels);
  for (let index = 0; index < x.length; index++) mean[index % channels]! += x[index]! / count;
  for (let index = 0; index < x.length; index++) variance[index % channels]! += (x[index]! - mean[index % channels]!) ** 2 / count;
  const usedMean = batch ? mean : Float64Array.from(runningMean);
  const inverseStd = (batch ? variance : Float64Array.from(runningVariance)).map((value) => 1 / Math.sqrt(value + attributes.epsilon));
  const y = new Float64Array(x.length);
  const normalized = new Float64Array(x.length);
  const g = new Float64Array(x.length);
  const dBeta = new Float64Array(channels);
  const dGamma = new Float64Array(channels);
  for (let index = 0; index < x.length; index++) {
    const channel = index % channels;
    normalized[index] = (x[index]! - usedMean[channel]!) * inverseStd[channel]!;
    const z = gamma[channel]! * normalized[index]! + beta[channel]! + residual[index]!;
    y[index] = attributes.relu ? Math.max(0, z) : z;
    g[index] = attributes.relu && z <= 0 ? 0 : dy[index]!;
    dBeta[channel]! += g[index]!;
    dGamma[channel]! += g[index]! * normalized[index]!;
  }
  const dx = new Float64Array(x.length);
  for (let index = 0; index < x.length; index++) {
    const channel = index % channels;
    const scale = gamma[channel]! * inverseStd[channel]!;
    dx[index] = batch
      ? (scale / count) * (count * g[index]! - dBeta[channel]! - normalized[index]! * dGamma[channel]!)
      : scale * g[index]!;
  }
  const { momentum } = attributes;
  const newRunningMean = runningMean.map((value, channel) => (1 - momentum) * value + momentum * mean[channel]!);
  const newRunningVariance = runningVariance.map((value, channel) => (1 - momentum) * value + momentum * (count / (count - 1)) * variance[channel]!);
  return { y, mean: usedMean, inverseStd, dx, dGamma, dBeta, dResidual: g, newRunningMean, newRunningVariance };
}

// Channels that are and are not a multiple of the 4-channel unrolling (on wasm: the SIMD passes and the
// JavaScript loops); rows beyond one 64-row block.
const shapes = [
  [3, 7, 5, 8],
  [4, 9, 9, 32],
  [2, 9, 11, 6],
  [130, 3],
  [1, 1, 70, 1],
];

function caseOf(shape: number[]): Case {
  const channels = shape.at(-1)!;
  const size = tf.util.sizeFromShape(shape);
  return {
    x: values(size, channels, 3, 0.4),
    dy: values(size, channels, 5),
    gamma: values(channels, channels, 7, 1),
    beta: values(channels, channels, 9, 0.8),
    runningMean: values(channels, channels, 11, 0.5),
    runningVariance: values(channels, channels, 13).map((value) => 0.5 + Math.abs(value)),
    residual: values(size, channels, 15, 0.2),
  };
}

describe.each(['wasm', 'cpu'])('RegstackBatchNorm and its gradient on %s', (backendName) => {
  beforeAll(async () => {
    await tf.setBackend(backendName);
    registerKernels(backendName as 'wasm' | 'cpu', [BATCH_NORM_KERNEL, BATCH_NORM_GRAD_KERNEL]);
  });

  describe.each(['train', 'frozen-stats', 'eval'] as const)('in mode %s', (mode) => {
    it.each(shapes)('values and every gradient of [%i, %i, …] equal a float64 reference, with and without ReLU and residual', (...shape) => {
      const channels = shape.at(-1)!;
      const data = caseOf(shape);
      for (const [relu, withResidual] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const attributes: BatchNormAttributes = { mode, epsilon: 1e-5, momentum: 0.1, relu, residual: withResidual };
        const expected = reference(data, channels, attributes);
        const [x, dy, residual] = [tf.tensor(data.x, shape), tf.tensor(data.dy, shape), tf.tensor(data.residual, shape)];
        const [gamma, beta, runningMean, runningVariance] = [data.gamma, data.beta, data.runningMean, data.runningVariance].map((value) => tf.tensor1d(value)) as [tf.Tensor1D, tf.Tensor1D, tf.Tensor1D, tf.Tensor1D];
        const residualInput: tf.NamedTensorMap = withResidual ? { residual } : {};
        const before = tf.memory().numTensors;
        const outputs = tf.engine().runKernel(BATCH_NORM_KERNEL, { x, gamma, beta, runningMean, runningVariance, ...residualInput }, { ...attributes }) as tf.Tensor[];
        expect(outputs).toHaveLength(mode === 'train' ? 5 : 3);
        const [y, mean, inverseStd, newRunningMean, newRunningVariance] = outputs;
        expect(y!.shape).toEqual(shape);
        expect(relativeError(y!.dataSync(), expected.y)).toBeLessThan(1e-6);
        expect(relativeError(mean!.dataSync(), expected.mean)).toBeLessThan(1e-6);
        expect(relativeError(inverseStd!.dataSync(), expected.inverseStd)).toBeLessThan(1e-6);
        if (mode === 'train') {
          expect(relativeError(newRunningMean!.dataSync(), expected.newRunningMean)).toBeLessThan(1e-6);
          expect(relativeError(newRunningVariance!.dataSync(), expected.newRunningVariance)).toBeLessThan(1e-6);
        }
        if (relu) expect(Math.min(...y!.dataSync())).toBe(0);
        // The registered gradient, through the tape: d/dinputs of Σ y·dy.
        const gradients = tf.grads((input: tf.Tensor, scale: tf.Tensor, shift: tf.Tensor, added: tf.Tensor) => {
          const inputs = { x: input, gamma: scale, beta: shift, runningMean, runningVariance, ...(withResidual ? { residual: added } : {}) };
          const [output] = tf.engine().runKernel(BATCH_NORM_KERNEL, inputs, { ...attributes }) as tf.Tensor[];
          // Without a residual input, `added` enters as 0·added (its gradient then 0).
          return tf.sum(tf.mul(withResidual ? output! : tf.add(output!, tf.mul(added, 0)), dy));
        })([x, gamma, beta, residual]);
        const [dx, dGamma, dBeta, dResidual] = gradients.map((gradient) => gradient.dataSync());
        expect(relativeError(dx!, expected.dx), 'dx').toBeLessThan(1e-5);
        expect(relativeError(dGamma!, expected.dGamma), 'dGamma').toBeLessThan(1e-5);
        expect(relativeError(dBeta!, expected.dBeta), 'dBeta').toBeLessThan(1e-5);
        if (withResidual) {
          expect(relativeError(dResidual!, expected.dResidual), 'dResidual').toBe(0);
          if (relu) expect(dResidual!.filter((value) => value === 0).length, 'masked').toBeGreaterThan(dResidual!.length / 10);
        }
        tf.dispose([...outputs, ...gradients]);
        expect(tf.memory().numTensors, 'tensors left').toBe(before);
        tf.dispose([x, dy, residual, gamma, beta, runningMean, runningVariance]);
      }
    });
  });

  it('runs the elementwise passes as SIMD on wasm only', () => {
    expect(batchNormSimd(tf.backend()) !== null).toBe(backendName === 'wasm');
  });

  it.each([2, 4])('a ReLU passes the gradient only where its output is positive, and keeps NaN (%i channels)', (channels) => {
    // Rows [-1, 0], [1, 2], [3, NaN], each value repeated over `channels / 2` channel pairs.
    const rows = [[-1, 0], [1, 2], [3, Number.NaN]].map((row) => Array.from({ length: channels }, (_, channel) => row[channel % 2]!));
    const x = tf.tensor2d(rows);
    const ones = tf.ones([channels]);
    const zeros = tf.zeros([channels]);
    const attributes = { mode: 'eval', epsilon: 0, momentum: 0.1, relu: true };
    const [y] = tf.engine().runKernel(BATCH_NORM_KERNEL, { x, gamma: ones, beta: zeros, runningMean: zeros, runningVariance: ones }, attributes) as tf.Tensor[];
    const expectedY = [0, 0, 1, 2, 3, Number.NaN];
    expect(Array.from(y!.dataSync())).toEqual(Array.from({ length: 3 * channels }, (_, index) => expectedY[Math.floor(index / channels) * 2 + (index % 2)]));
    const [dx] = tf.engine().runKernel(BATCH_NORM_GRAD_KERNEL, { dy: tf.onesLike(x), x, y: y!, gamma: ones, mean: zeros, inverseStd: ones }, { relu: true, batchStatistics: false }) as tf.Tensor[];
    // The NaN input stays NaN in dx too (its mask is 0, but x·b is NaN·0).
    const expectedDx = [0, 0, 1, 1, 1, Number.NaN];
    expect(Array.from(dx!.dataSync())).toEqual(Array.from({ length: 3 * channels }, (_, index) => expectedDx[Math.floor(index / channels) * 2 + (index % 2)]));
    tf.dispose([x, ones, zeros, y!, dx!]);
  });

  it.each([2, 4])('a residual added before the ReLU moves its mask, and its gradient is that masked dy (%i channels)', (channels) => {
    const spread = (pairs: number[][]) => pairs.map((row) => Array.from({ length: channels }, (_, channel) => row[channel % 2]!));
    const expand = (pairs: number[]) => Array.from({ length: 3 * channels }, (_, index) => pairs[Math.floor(index / channels) * 2 + (index % 2)]);
    const x = tf.tensor2d(spread([[-1, 0], [1, 2], [3, Number.NaN]]));
    const residual = tf.tensor2d(spread([[1.5, -0.5], [-2, 0], [0, 1]]));
    const ones = tf.ones([channels]);
    const zeros = tf.zeros([channels]);
    const attributes = { mode: 'eval', epsilon: 0, momentum: 0.1, relu: true, residual: true };
    const [y] = tf.engine().runKernel(BATCH_NORM_KERNEL, { x, gamma: ones, beta: zeros, runningMean: zeros, runningVariance: ones, residual }, attributes) as tf.Tensor[];
    expect(Array.from(y!.dataSync())).toEqual(expand([0.5, 0, 0, 2, 3, Number.NaN]));
    const gradients = tf.engine().runKernel(
      BATCH_NORM_GRAD_KERNEL,
      { dy: tf.mul(tf.onesLike(x), 2), x, y: y!, gamma: ones, mean: zeros, inverseStd: ones },
      { relu: true, batchStatistics: false, residual: true },
    ) as tf.Tensor[];
    expect(gradients).toHaveLength(4);
    expect(Array.from(gradients[0]!.dataSync())).toEqual(expand([2, 0, 0, 2, 2, Number.NaN]));
    expect(Array.from(gradients[3]!.dataSync())).toEqual(expand([2, 0, 0, 2, 2, 0]));
    tf.dispose([x, residual, ones, zeros, y!, ...gradients]);
  });

  it('names the input or attribute at fault', () => {
    const x = tf.zeros([4, 3]);
    const perChannel = tf.ones([3]);
    const inputs = { x, gamma: perChannel, beta: perChannel, runningMean: perChannel, runningVariance: perChannel };
    const attributes = { mode: 'train', epsilon: 1e-5, momentum: 0.1, relu: false };
    const forward = (changedInputs: Record<string, unknown>, changedAttributes: Record<string, unknown> = {}) => () =>
      tf.engine().runKernel(BATCH_NORM_KERNEL, { ...inputs, ...changedInputs } as unknown as tf.NamedTensorMap, { ...attributes, ...changedAttributes } as tf.NamedAttrMap);
    expect(forward({ beta: tf.ones([4]) })).toThrow(expect.objectContaining({ field: 'beta', message: expect.stringMatching(/shape \[3\], got \[4\]/) }));
    expect(forward({ beta: tf.ones([4]) })).toThrow(DataError);
    expect(forward({ gamma: undefined })).toThrow(expect.objectContaining({ field: 'gamma' }));
    expect(forward({ x: tf.zeros([4, 3], 'int32') })).toThrow(expect.objectContaining({ field: 'x', message: expect.stringMatching(/float32, got int32/) }));
    expect(forward({ x: tf.zeros([3]) })).toThrow(expect.objectContaining({ field: 'x', message: expect.stringMatching(/rank ≥ 2/) }));
    expect(forward({ x: tf.zeros([1, 3]) })).toThrow(expect.objectContaining({ field: 'x', message: expect.stringMatching(/more than 1 value per channel/) }));
    expect(forward({}, { mode: 'test' })).toThrow(ConfigError);
    expect(forward({}, { mode: 'test' })).toThrow(expect.objectContaining({ field: 'mode' }));
    expect(forward({}, { momentum: 2 })).toThrow(expect.objectContaining({ field: 'momentum' }));
    expect(forward({}, { epsilon: -1 })).toThrow(expect.objectContaining({ field: 'epsilon' }));
    expect(forward({}, { relu: 'yes' })).toThrow(expect.objectContaining({ field: 'relu' }));
    expect(forward({}, { residual: 1 })).toThrow(expect.objectContaining({ field: 'residual' }));
    expect(forward({}, { residual: true })).toThrow(expect.objectContaining({ field: 'residual', message: expect.stringMatching(/needs input 'residual'/) }));
    expect(forward({}, { residual: true })).toThrow(DataError);
    expect(forward({ residual: tf.zeros([4, 2]) }, { residual: true })).toThrow(expect.objectContaining({ field: 'residual', message: expect.stringMatching(/shape \[4,3\], got \[4,2\]/) }));
    expect(forward({ residual: tf.zeros([4, 3], 'int32') }, { residual: true })).toThrow(expect.objectContaining({ field: 'residual', message: expect.stringMatching(/float32/) }));
    // A residual input without the attribute would lose its gradient.
    expect(forward({ residual: x })).toThrow(ConfigError);
    expect(forward({ residual: x })).toThrow(expect.objectContaining({ field: 'residual' }));
    expect(forward({ residual: x }, { residual: true })).not.toThrow();
    const gradient = (changedInputs: Record<string, unknown>, changedAttributes: Record<string, unknown> = {}) => () =>
      tf.engine().runKernel(
        BATCH_NORM_GRAD_KERNEL,
        { dy: x, x, y: x, gamma: perChannel, mean: perChannel, inverseStd: perChannel, ...changedInputs } as unknown as tf.NamedTensorMap,
        { relu: false, batchStatistics: true, ...changedAttributes } as tf.NamedAttrMap,
      );
    expect(gradient({ y: tf.zeros([4, 2]) })).toThrow(expect.objectContaining({ field: 'y', message: expect.stringMatching(/shape \[4,3\]/) }));
    expect(gradient({ inverseStd: tf.zeros([2]) })).toThrow(expect.objectContaining({ field: 'inverseStd' }));
    expect(gradient({ dy: tf.zeros([3]) })).toThrow(expect.objectContaining({ field: 'dy' }));
    expect(gradient({}, { batchStatistics: undefined })).toThrow(expect.objectContaining({ field: 'batchStatistics' }));
    expect(gradient({}, { residual: 'yes' })).toThrow(expect.objectContaining({ field: 'residual' }));
    expect(gradient({})).not.toThrow();
    expect(gradient({}, { residual: true })()).toHaveLength(4);
  });
});
