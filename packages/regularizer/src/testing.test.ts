import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import type { RegularizerPlugin } from './contract.js';
import { Random } from './random.js';
import { composeRegularizers } from './stack.js';
import { capturePrepared, linearClassifier } from './testing.js';

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

describe('capturePrepared', () => {
  it("hands each step's prepared state to read, and leaves the plugin's behaviour as it was", () => {
    const doubling: RegularizerPlugin<{ doubled: tf.Tensor }> = {
      name: 'doubling',
      stage: 'loss-term',
      prepare: (context) => ({ doubled: tf.mul(context.clean.inputs, 2) }),
      loss: (context, state) => ({ value: tf.mean(state.doubled) as tf.Scalar }),
    };
    const { plugin, captured } = capturePrepared(doubling, (state) => Array.from(state.doubled.dataSync()));
    const model = linearClassifier({ inputSize: 2, numClasses: 2 });
    const stack = composeRegularizers([plugin]);
    const terms: number[] = [];
    for (const rows of [[[0.1, 0.2]], [[0.5, 0.25]]]) {
      const batch = { inputs: tf.tensor2d(rows), labels: tf.tensor1d([1], 'int32') };
      const step = stack.prepare({ model, batch, random: new Random(0) });
      tf.dispose(step.loss());
      terms.push(step.terms()['doubling']!);
      step.dispose();
      tf.dispose([batch.inputs, batch.labels]);
    }
    expect(captured.map((values) => values.map((value) => Number(value.toFixed(6))))).toEqual([[0.2, 0.4], [1, 0.5]]);
    expect(terms.map((value) => Number(value.toFixed(6)))).toEqual([0.3, 0.75]);
    const transform: RegularizerPlugin = { name: 'none', stage: 'target-transform', transformTargets: (targets) => targets };
    expect(capturePrepared(transform, () => 1).plugin).toBe(transform);
    model.dispose();
  });
});
