import * as tf from '@tensorflow/tfjs-core';
import { Random } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { ParameterStore, convolve } from './layers.js';

describe('convolve', () => {
  it("pads both sides on stride-2 3×3 convolutions, as PyTorch's padding=1 does", () => {
    const store = new ParameterStore(new Random(0), { momentum: 0.1, epsilon: 1e-5 });
    const parameters = store.convolution('probe', { size: 3, inChannels: 1, outChannels: 1, stride: 2 }, 'pytorch');
    // A kernel that picks the top-left tap: output[i, j] = padded[2i, 2j] = x[2i − 1, 2j − 1].
    parameters.weight.assign(tf.tensor4d([1, 0, 0, 0, 0, 0, 0, 0, 0], [3, 3, 1, 1]));
    const x = tf.tensor4d(Array.from({ length: 16 }, (_, index) => index + 1), [1, 4, 4, 1]);
    const output = convolve(x, parameters);
    expect(output.shape).toEqual([1, 2, 2, 1]);
    // PyTorch: rows/cols −1 and 1 of the input → [0 (padding), 0, 0, x[1,1]] = [0, 0, 0, 6].
    expect(Array.from(output.dataSync())).toEqual([0, 0, 0, 6]);
    // TF.js 'same' would have padded bottom/right only and sampled x[0,0] first.
    const same = tf.conv2d(x, parameters.weight as tf.Tensor4D, 2, 'same');
    expect(Array.from(same.dataSync())).not.toEqual([0, 0, 0, 6]);
    tf.dispose([x, output, same]);
    for (const variable of store.named.values()) variable.dispose();
  });

  it('has input and filter gradients that agree with finite differences under explicit padding', () => {
    const store = new ParameterStore(new Random(1), { momentum: 0.1, epsilon: 1e-5 });
    const parameters = store.convolution('probe', { size: 3, inChannels: 2, outChannels: 2, stride: 2, bias: true }, 'pytorch');
    const x = tf.randomUniform([1, 5, 5, 2], -1, 1, 'float32', 7) as tf.Tensor4D;
    const weights = tf.randomUniform([1, 3, 3, 2], -1, 1, 'float32', 8);
    const loss = (input: tf.Tensor4D, filter: tf.Tensor) =>
      tf.sum(tf.mul(tf.square(convolve(input, { ...parameters, weight: filter as tf.Variable })), weights)) as tf.Scalar;
    const [inputGradient, filterGradient] = tf.grads((input, filter) => loss(input as tf.Tensor4D, filter!))([x, parameters.weight]);
    const numeric = (tensor: tf.Tensor, index: number, evaluate: (perturbed: tf.Tensor) => number) => {
      const step = 1e-2;
      const data = tensor.dataSync().slice();
      data[index]! += step;
      const plus = evaluate(tf.tensor(data, tensor.shape));
      data[index]! -= 2 * step;
      const minus = evaluate(tf.tensor(data, tensor.shape));
      return (plus - minus) / (2 * step);
    };
    const analyticInput = inputGradient!.dataSync();
    for (const index of [0, 7, 12, 24, 49]) {
      const expected = numeric(x, index, (perturbed) => tf.tidy(() => loss(perturbed as tf.Tensor4D, parameters.weight).dataSync()[0]!));
      expect(analyticInput[index]).toBeCloseTo(expected, 2);
    }
    const analyticFilter = filterGradient!.dataSync();
    for (const index of [0, 5, 17, 35]) {
      const expected = numeric(parameters.weight, index, (perturbed) => tf.tidy(() => loss(x, perturbed).dataSync()[0]!));
      expect(analyticFilter[index]).toBeCloseTo(expected, 2);
    }
    for (const variable of store.named.values()) variable.dispose();
  });
});
