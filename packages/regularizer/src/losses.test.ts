import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { crossEntropy, meanEntropy, softCrossEntropy } from './losses.js';

describe('losses', () => {
  it('cross-entropy matches a hand computation', () => {
    const logits = tf.tensor2d([[1, 2, 3], [0, 0, 0]]);
    const labels = tf.tensor1d([2, 0], 'int32');
    const row0 = -(3 - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
    const row1 = Math.log(3);
    expect(crossEntropy(logits, labels).dataSync()[0]).toBeCloseTo((row0 + row1) / 2, 5);
    expect(crossEntropy(logits, labels, 'sum').dataSync()[0]).toBeCloseTo(row0 + row1, 5);
    const soft = tf.tensor2d([[0.2, 0.3, 0.5], [1, 0, 0]]);
    const logP0 = [1, 2, 3].map((z) => z - Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)));
    const expected = (-(0.2 * logP0[0]! + 0.3 * logP0[1]! + 0.5 * logP0[2]!) + Math.log(3)) / 2;
    expect(softCrossEntropy(logits, soft).dataSync()[0]).toBeCloseTo(expected, 5);
  });

  it('entropy is log K for uniform predictions and 0 for confident ones', () => {
    expect(meanEntropy(tf.zeros([4, 10]) as tf.Tensor2D).dataSync()[0]).toBeCloseTo(Math.log(10), 5);
    expect(meanEntropy(tf.tensor2d([[100, 0, 0]])).dataSync()[0]).toBeCloseTo(0, 5);
    const p = [0.7, 0.2, 0.1];
    const logits = tf.tensor2d([p.map(Math.log)]);
    expect(meanEntropy(logits).dataSync()[0]).toBeCloseTo(-p.reduce((s, v) => s + v * Math.log(v), 0), 5);
  });
});
