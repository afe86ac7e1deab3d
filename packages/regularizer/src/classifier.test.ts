import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { describe, expect, it } from 'vitest';
import { classifierFromLayersModel } from './classifier.js';

describe('classifierFromLayersModel', () => {
  it('runs three modes, and frozen-stats leaves batch-norm moving statistics untouched', () => {
    const model = tfl.sequential({
      layers: [tfl.layers.dense({ inputShape: [4], units: 6 }), tfl.layers.batchNormalization(), tfl.layers.dense({ units: 3 })],
    });
    const classifier = classifierFromLayersModel(model);
    expect(classifier.numClasses).toBe(3);
    expect(classifier.trainableVariables.length).toBe(6);
    const movingMean = () => Array.from(classifier.nonTrainableVariables[0]!.dataSync());
    const x = tf.randomNormal([8, 4], 2, 1, 'float32', 3);
    const before = movingMean();
    const frozen = classifier.apply(x, { mode: 'frozen-stats' }).logits;
    expect(movingMean()).toEqual(before);
    const train = classifier.apply(x, { mode: 'train' }).logits;
    expect(movingMean()).not.toEqual(before);
    // Both use the batch statistics of x, so the outputs agree.
    expect(Array.from(frozen.dataSync())).toEqual(Array.from(train.dataSync()));
    const evaluation = classifier.apply(x, { mode: 'eval' }).logits;
    expect(Array.from(evaluation.dataSync())).not.toEqual(Array.from(train.dataSync()));
    tf.dispose([x, frozen, train, evaluation]);
    model.dispose();
  });

  it('reads a two-output model as [features, logits]', () => {
    const input = tfl.input({ shape: [4] });
    const features = tfl.layers.dense({ units: 5, activation: 'relu' }).apply(input) as tfl.SymbolicTensor;
    const logits = tfl.layers.dense({ units: 3 }).apply(features) as tfl.SymbolicTensor;
    const classifier = classifierFromLayersModel(tfl.model({ inputs: input, outputs: [features, logits] }));
    const output = classifier.apply(tf.ones([2, 4]), { mode: 'eval' });
    expect(output.features!.shape).toEqual([2, 5]);
    expect(output.logits.shape).toEqual([2, 3]);
  });
});
