import * as tf from '@tensorflow/tfjs-core';
import { linearClassifier } from '@regstack/regularizer/testing';
import { createModel } from '@regstack/models';
import { describe, expect, it } from 'vitest';
import { perturbationPreview, previewIndices } from './perturbation.js';

/** softmax in float64. */
function softmax(logits: number[]): number[] {
  const largest = Math.max(...logits);
  const exps = logits.map((value) => Math.exp(value - largest));
  const sum = exps.reduce((total, value) => total + value, 0);
  return exps.map((value) => value / sum);
}

describe('perturbationPreview', () => {
  // A linear model over 2×2×1 images: logits = flatten(x)·W, so ∂CE/∂x = W·(p − y) by hand.
  const weights = [
    [0.5, -0.3, 0.2],
    [-0.1, 0.4, 0.3],
    [0.7, 0.1, -0.6],
    [-0.2, -0.5, 0.4],
  ];
  const images = [
    [0.1, 0.9, 0.4, 0.3],
    [0.8, 0.2, 0.5, 0.6],
    [0.3, 0.3, 0.9, 0.1],
  ];
  const labels = [2, 0, 1];
  const alpha = 0.7;

  const linearModel = () => linearClassifier({ inputSize: 4, numClasses: 3, weights, bias: null });

  it('moves each image by α along the normalised gradient of the summed cross-entropy, as computed by hand', () => {
    const model = linearModel();
    const inputs = tf.tensor4d(images.flat(), [3, 2, 2, 1]);
    const labelTensor = tf.tensor1d(labels, 'int32');
    const preview = perturbationPreview(model, inputs, labelTensor, alpha);

    const expected = images.map((image, row) => {
      const logits = [0, 1, 2].map((k) => image.reduce((sum, value, i) => sum + value * weights[i]![k]!, 0));
      const probabilities = softmax(logits);
      const residual = probabilities.map((p, k) => p - (k === labels[row] ? 1 : 0));
      const gradient = weights.map((weightRow) => weightRow.reduce((sum, w, k) => sum + w * residual[k]!, 0));
      const norm = Math.sqrt(gradient.reduce((sum, g) => sum + g * g, 0)) + 1e-10;
      return image.map((value, i) => value + (alpha * gradient[i]!) / norm);
    });
    expect(Array.from(preview.perturbed)).toEqual(expected.flat().map((value) => expect.closeTo(value, 5)));
    expect(Array.from(preview.originals)).toEqual(images.flat().map((value) => expect.closeTo(value, 6)));
    preview.distances.forEach((distance) => expect(distance).toBeCloseTo(alpha, 5));
    expect(preview.labels).toEqual(labels);
    expect(preview.imageShape).toEqual([2, 2, 1]);

    // Predictions on x̃ in eval mode, from the hand-computed x̃.
    expected.forEach((image, row) => {
      const probabilities = softmax([0, 1, 2].map((k) => image.reduce((sum, value, i) => sum + value * weights[i]![k]!, 0)));
      const best = probabilities.indexOf(Math.max(...probabilities));
      expect(preview.perturbedPredictions[row]!.label).toBe(best);
      expect(preview.perturbedPredictions[row]!.probability).toBeCloseTo(probabilities[best]!, 5);
      expect(preview.trueClassProbabilities.perturbed[row]).toBeCloseTo(probabilities[labels[row]!]!, 5);
    });
    // The step raises the cross-entropy, so the true class loses probability on every example.
    preview.trueClassProbabilities.perturbed.forEach((probability, row) => {
      expect(probability).toBeLessThan(preview.trueClassProbabilities.original[row]!);
    });
    // The direction in the plugin's mode, predictions in eval mode.
    expect(model.calls).toEqual(['frozen-stats', 'eval', 'eval']);
    tf.dispose([inputs, labelTensor]);
    model.dispose();
  });

  it('leaves batch-norm running statistics untouched and disposes every tensor it makes', () => {
    const model = createModel('small-cnn', { inputShape: [8, 8, 1], numClasses: 4, width: 2, seed: 3 });
    const inputs = tf.randomUniform([4, 8, 8, 1], 0, 1, 'float32', 7) as tf.Tensor4D;
    const labelTensor = tf.tensor1d([0, 1, 2, 3], 'int32');
    const runningBefore = model.nonTrainableVariables.map((variable) => Array.from(variable.dataSync()));
    const before = tf.memory().numTensors;
    const preview = perturbationPreview(model, inputs, labelTensor, 0.5);
    expect(tf.memory().numTensors).toBe(before);
    expect(model.nonTrainableVariables.map((variable) => Array.from(variable.dataSync()))).toEqual(runningBefore);
    preview.distances.forEach((distance) => expect(distance).toBeCloseTo(0.5, 4));
    expect(preview.perturbed.length).toBe(4 * 64);
    tf.dispose([inputs, labelTensor]);
    model.dispose();
  });

  it('rejects labels that do not match the inputs, naming the field', () => {
    const model = linearModel();
    const inputs = tf.zeros([2, 2, 2, 1]) as tf.Tensor4D;
    const labelTensor = tf.tensor1d([0], 'int32');
    expect(() => perturbationPreview(model, inputs, labelTensor, 1)).toThrow(/^labels: has 1 labels for 2 inputs/);
    tf.dispose([inputs, labelTensor]);
    model.dispose();
  });
});

describe('previewIndices', () => {
  it('takes the first example of each class, ordered by class, then fills with unused examples', () => {
    expect(previewIndices([3, 1, 1, 0, 3, 2], 3)).toEqual([3, 1, 0]);
    expect(previewIndices([1, 1, 0, 1], 3)).toEqual([2, 0, 1]);
  });
});
