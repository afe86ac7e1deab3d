import * as tf from '@tensorflow/tfjs-core';
import { DataError } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { batchNormalization, type BatchNormParameters } from './batch-norm.js';

// Two channels, four values each (batch 2, 1×2 spatial): small enough to compute by hand.
const channel0 = [1, 2, 4, 9];
const channel1 = [-1, 0, 3, 2];
const inputValues = channel0.flatMap((value, index) => [value, channel1[index]!]);

function parameters(): BatchNormParameters {
  return {
    gamma: tf.variable(tf.tensor1d([2, 0.5])),
    beta: tf.variable(tf.tensor1d([1, -1])),
    runningMean: tf.variable(tf.tensor1d([0.5, -0.25]), false),
    runningVariance: tf.variable(tf.tensor1d([4, 0.25]), false),
    momentum: 0.1,
    epsilon: 1e-5,
  };
}

function disposeParameters(p: BatchNormParameters): void {
  for (const variable of [p.gamma, p.beta, p.runningMean, p.runningVariance]) variable.dispose();
}

const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
const biasedVariance = (values: number[]) => mean(values.map((value) => (value - mean(values)) ** 2));

function byHand(values: number[], center: number, variance: number, gamma: number, beta: number): number[] {
  return values.map((value) => ((value - center) / Math.sqrt(variance + 1e-5)) * gamma + beta);
}

function channels(output: tf.Tensor): [number[], number[]] {
  const flat = Array.from(output.dataSync());
  return [flat.filter((_, index) => index % 2 === 0), flat.filter((_, index) => index % 2 === 1)];
}

describe('batchNormalization', () => {
  it("'train' normalises with the biased batch variance and updates running stats with PyTorch's rule", () => {
    const p = parameters();
    const x = tf.tensor4d(inputValues, [2, 1, 2, 2]);
    const output = batchNormalization(x, p, 'train');
    const [out0, out1] = channels(output);
    expect(mean(channel0)).toBe(4);
    expect(biasedVariance(channel0)).toBe(9.5);
    for (const [actual, expected] of [
      [out0, byHand(channel0, 4, 9.5, 2, 1)],
      [out1, byHand(channel1, 1, 2.5, 0.5, -1)],
    ] as const) {
      actual.forEach((value, index) => expect(value).toBeCloseTo(expected[index]!, 5));
    }
    // running = 0.9·running + 0.1·batch; running_var uses the unbiased variance (n = 4: ×4/3).
    const runningMean = p.runningMean.dataSync();
    const runningVariance = p.runningVariance.dataSync();
    expect(runningMean[0]).toBeCloseTo(0.9 * 0.5 + 0.1 * 4, 6);
    expect(runningMean[1]).toBeCloseTo(0.9 * -0.25 + 0.1 * 1, 6);
    expect(runningVariance[0]).toBeCloseTo(0.9 * 4 + 0.1 * 9.5 * (4 / 3), 5);
    expect(runningVariance[1]).toBeCloseTo(0.9 * 0.25 + 0.1 * 2.5 * (4 / 3), 5);
    tf.dispose([x, output]);
    disposeParameters(p);
  });

  it("'frozen-stats' gives the output of 'train' and leaves the running statistics alone", () => {
    const frozen = parameters();
    const trained = parameters();
    const x = tf.tensor4d(inputValues, [2, 1, 2, 2]);
    const frozenOutput = batchNormalization(x, frozen, 'frozen-stats');
    const trainOutput = batchNormalization(x, trained, 'train');
    expect(Array.from(frozenOutput.dataSync())).toEqual(Array.from(trainOutput.dataSync()));
    expect(Array.from(frozen.runningMean.dataSync())).toEqual([0.5, -0.25]);
    expect(Array.from(frozen.runningVariance.dataSync())).toEqual([4, 0.25]);
    expect(trained.runningMean.dataSync()[0]).not.toBe(0.5);
    tf.dispose([x, frozenOutput, trainOutput]);
    disposeParameters(frozen);
    disposeParameters(trained);
  });

  it("'eval' normalises with the running statistics", () => {
    const p = parameters();
    const x = tf.tensor4d(inputValues, [2, 1, 2, 2]);
    const [out0, out1] = channels(batchNormalization(x, p, 'eval'));
    byHand(channel0, 0.5, 4, 2, 1).forEach((expected, index) => expect(out0[index]).toBeCloseTo(expected, 5));
    byHand(channel1, -0.25, 0.25, 0.5, -1).forEach((expected, index) => expect(out1[index]).toBeCloseTo(expected, 5));
    expect(Array.from(p.runningMean.dataSync())).toEqual([0.5, -0.25]);
    tf.dispose(x);
    disposeParameters(p);
  });

  it('works on [batch, features] inputs and rejects a single value per channel in batch mode', () => {
    const p = parameters();
    const x = tf.tensor2d(inputValues, [4, 2]);
    const [out0] = channels(batchNormalization(x, p, 'frozen-stats'));
    byHand(channel0, 4, 9.5, 2, 1).forEach((expected, index) => expect(out0[index]).toBeCloseTo(expected, 5));
    const single = tf.tensor2d([1, 2], [1, 2]);
    expect(() => batchNormalization(single, p, 'train')).toThrow(DataError);
    expect(() => batchNormalization(single, p, 'eval')).not.toThrow();
    tf.dispose([x, single]);
    disposeParameters(p);
  });

  it('has the analytic batch-norm gradient and agrees with finite differences', () => {
    const p = parameters();
    const x = tf.tensor4d(inputValues, [2, 1, 2, 2]);
    // A loss with distinct weights per element, so that no gradient vanishes by symmetry.
    const weights = tf.tensor4d([0.3, -1.2, 0.7, 0.4, -0.5, 2.0, 1.1, -0.8], [2, 1, 2, 2]);
    const loss = (input: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor) =>
      tf.sum(tf.mul(tf.square(batchNormalization(input, { ...p, gamma: gamma as tf.Variable, beta: beta as tf.Variable }, 'frozen-stats')), weights));
    const [dx, dGamma, dBeta] = tf.grads(loss)([x, p.gamma, p.beta]);

    // Analytic: with x̂ = (x − μ)/σ and g = ∂L/∂y, ∂L/∂x = γ/(nσ)·(n·g − Σg − x̂·Σ(g·x̂)).
    const xValues = [channel0, channel1];
    const gammas = [2, 0.5];
    const betas = [1, -1];
    const weightValues = Array.from(weights.dataSync());
    const dxValues = Array.from(dx!.dataSync());
    xValues.forEach((values, channel) => {
      const center = mean(values);
      const sigma = Math.sqrt(biasedVariance(values) + 1e-5);
      const normalized = values.map((value) => (value - center) / sigma);
      const upstream = normalized.map((value, index) => 2 * (value * gammas[channel]! + betas[channel]!) * weightValues[index * 2 + channel]!);
      const sumUpstream = upstream.reduce((a, b) => a + b, 0);
      const sumProduct = upstream.reduce((a, g, index) => a + g * normalized[index]!, 0);
      const n = values.length;
      values.forEach((_, index) => {
        const expected = (gammas[channel]! / (n * sigma)) * (n * upstream[index]! - sumUpstream - normalized[index]! * sumProduct);
        expect(dxValues[index * 2 + channel]).toBeCloseTo(expected, 4);
      });
      expect(dGamma!.dataSync()[channel]).toBeCloseTo(sumProduct, 4);
      expect(dBeta!.dataSync()[channel]).toBeCloseTo(sumUpstream, 4);
    });

    // Central differences, evaluated in float32: hence the loose tolerance.
    const step = 1e-2;
    const reference = (values: number[]) =>
      tf.tidy(() => loss(tf.tensor4d(values, [2, 1, 2, 2]), p.gamma, p.beta).dataSync()[0]!);
    inputValues.forEach((_, index) => {
      const plus = [...inputValues];
      const minus = [...inputValues];
      plus[index]! += step;
      minus[index]! -= step;
      const numeric = (reference(plus) - reference(minus)) / (2 * step);
      expect(Math.abs(dxValues[index]! - numeric)).toBeLessThan(2e-2 * Math.max(1, Math.abs(numeric)));
    });
    tf.dispose([x, weights, dx!, dGamma!, dBeta!]);
    disposeParameters(p);
  });

  it('keeps no gradient path through the running statistics and leaks no tensors inside variableGrads', () => {
    const p = parameters();
    const x = tf.tensor4d(inputValues, [2, 1, 2, 2]);
    const before = tf.memory().numTensors;
    for (let repeat = 0; repeat < 3; repeat++) {
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.square(batchNormalization(x, p, 'train'))) as tf.Scalar);
      expect(Object.keys(grads).sort()).toEqual([p.gamma.name, p.beta.name].sort());
      tf.dispose([value, ...Object.values(grads)]);
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose(x);
    disposeParameters(p);
  });
});
