import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { linearClassifier } from './testing.js';

describe('linearClassifier', () => {
  it('computes flatten(x)·W + b with the given weights, recording each pass by mode', () => {
    const model = linearClassifier({ inputSize: 4, numClasses: 2, weights: [[1, 0], [0, 1], [2, -1], [0.5, 0.5]], bias: [0.25, -0.5] });
    const inputs = tf.tensor4d([1, 2, 3, 4, 0, 0, 1, 0], [2, 2, 2, 1]);
    const logits = model.apply(inputs, { mode: 'train' }).logits;
    // Row 0: 1·1 + 3·2 + 4·0.5 + 0.25 and 2 − 3 + 2 − 0.5; row 1: 2 + 0.25 and −1 − 0.5.
    expect(Array.from(logits.dataSync())).toEqual([9.25, 0.5, 2.25, -1.5]);
    model.apply(inputs, { mode: 'eval' });
    expect(model.calls).toEqual(['train', 'eval']);
    expect(model.trainableVariables).toEqual([model.weight, model.bias]);
    expect(model.stochastic).toBeUndefined();
    tf.dispose([inputs, logits]);
    model.dispose();
  });

  it('draws N(0, scale) weights from its seed, with a zero bias or none', () => {
    const first = linearClassifier({ inputSize: 50, numClasses: 40, scale: 0.1, seed: 7 });
    const again = linearClassifier({ inputSize: 50, numClasses: 40, scale: 0.1, seed: 7 });
    const other = linearClassifier({ inputSize: 50, numClasses: 40, scale: 0.1, seed: 8, bias: null, stochastic: false });
    const weights = Array.from(first.weight.dataSync());
    expect(Array.from(again.weight.dataSync())).toEqual(weights);
    expect(Array.from(other.weight.dataSync())).not.toEqual(weights);
    const deviation = Math.sqrt(weights.reduce((sum, value) => sum + value * value, 0) / weights.length);
    expect(deviation).toBeGreaterThan(0.09);
    expect(deviation).toBeLessThan(0.11);
    expect(Array.from(first.bias!.dataSync())).toEqual(new Array(40).fill(0));
    expect([other.bias, other.trainableVariables.length, other.stochastic]).toEqual([undefined, 1, false]);
    const before = tf.memory().numTensors;
    [first, again, other].forEach((model) => model.dispose());
    expect(before - tf.memory().numTensors).toBe(5);
  });
});
