import * as tf from '@tensorflow/tfjs-core';
import { DataError, lossInputGradient, oneHotTargets, type Classifier } from '@regstack/regularizer';
import { rcadPerturbation } from '@regstack/rcad';

/** A class and the probability the model gives it. */
export interface Prediction {
  label: number;
  probability: number;
}

/** RCAD's perturbed inputs x̃ next to the clean ones, ready to draw. */
export interface PerturbationPreview {
  /** Shape of one image, [height, width, channels]. */
  imageShape: [number, number, number];
  /** The clean images, example after example, in [0,1]. */
  originals: Float32Array;
  /** x̃ = x + α·g/(‖g‖₂ + 1e-10), NOT clipped (RCAD does not clip); clip only for display. */
  perturbed: Float32Array;
  /** True labels. */
  labels: number[];
  /** The step α used. */
  alpha: number;
  /** L2 distance ‖x̃ − x‖₂ of each example: α, or 0 where the gradient vanished. */
  distances: number[];
  /** Eval-mode prediction (arg max and its probability) on each clean image. */
  originalPredictions: Prediction[];
  /** Eval-mode prediction on each perturbed image. */
  perturbedPredictions: Prediction[];
  /** Eval-mode probability of the true class on clean and perturbed images. */
  trueClassProbabilities: { original: number[]; perturbed: number[] };
}

function predictions(probabilities: Float32Array, count: number, numClasses: number): Prediction[] {
  return Array.from({ length: count }, (_, row) => {
    let best = 0;
    for (let k = 1; k < numClasses; k++) if (probabilities[row * numClasses + k]! > probabilities[row * numClasses + best]!) best = k;
    return { label: best, probability: probabilities[row * numClasses + best]! };
  });
}

/**
 * Computes RCAD's perturbation of `inputs` exactly as the `rcad` plugin does in `prepare`: the
 * input gradient of the SUMMED plain cross-entropy with hard labels, the model in `frozen-stats`
 * mode (batch statistics, running statistics untouched), then {@link rcadPerturbation}. The batch
 * statistics come from these `inputs`, so a small preview batch sees slightly different
 * normalisation than a training batch would. Predictions are then taken in eval mode. Disposes
 * every tensor it makes; the caller keeps `inputs` and `labels`.
 */
export function perturbationPreview(model: Classifier, inputs: tf.Tensor4D, labels: tf.Tensor1D, alpha: number): PerturbationPreview {
  if (inputs.shape[0] !== labels.shape[0]) throw new DataError('labels', `has ${labels.shape[0]} labels for ${inputs.shape[0]} inputs`);
  const count = inputs.shape[0];
  const numClasses = model.numClasses;
  const tensors = tf.tidy(() => {
    const targets = oneHotTargets(labels, numClasses);
    const { gradient } = lossInputGradient(model, inputs, targets, { reduction: 'sum', mode: 'frozen-stats' });
    const shifted = rcadPerturbation(gradient, inputs, alpha);
    const distance = tf.sqrt(tf.sum(tf.square(tf.sub(shifted, inputs)), [1, 2, 3]));
    const probabilitiesOf = (x: tf.Tensor) => tf.softmax(model.apply(x, { mode: 'eval' }).logits);
    return [shifted, distance, probabilitiesOf(inputs), probabilitiesOf(shifted)];
  });
  const [perturbed, distances, clean, moved] = tensors.map((tensor) => tensor.dataSync() as Float32Array) as [Float32Array, Float32Array, Float32Array, Float32Array];
  tf.dispose(tensors);
  const originals = inputs.dataSync() as Float32Array;
  const labelValues = labels.dataSync();
  const labelList = Array.from(labelValues, Number);
  const trueClass = (probabilities: ArrayLike<number>) => labelList.map((label, row) => probabilities[row * numClasses + label]!);
  return {
    imageShape: [inputs.shape[1], inputs.shape[2], inputs.shape[3]],
    originals: Float32Array.from(originals),
    perturbed: Float32Array.from(perturbed),
    labels: labelList,
    alpha,
    distances: Array.from(distances),
    originalPredictions: predictions(clean, count, numClasses),
    perturbedPredictions: predictions(moved, count, numClasses),
    trueClassProbabilities: { original: trueClass(clean), perturbed: trueClass(moved) },
  };
}

/** Indices of the first example of each of the first `count` classes, so the preview shows distinct classes. */
export function previewIndices(labels: ArrayLike<number>, count: number): number[] {
  const chosen: number[] = [];
  const seen = new Set<number>();
  for (let index = 0; index < labels.length && chosen.length < count; index++) {
    const label = labels[index]!;
    if (!seen.has(label)) {
      seen.add(label);
      chosen.push(index);
    }
  }
  // Fewer classes than `count`: fill with the next unused examples.
  for (let index = 0; index < labels.length && chosen.length < count; index++) if (!chosen.includes(index)) chosen.push(index);
  return chosen.sort((left, right) => labels[left]! - labels[right]!);
}
