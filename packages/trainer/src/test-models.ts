// Small models and data for the trainer's tests (not exported from the package).
import * as tf from '@tensorflow/tfjs-core';
import { Random, type Classifier } from '@regstack/regularizer';
import { linearClassifier } from '@regstack/regularizer/testing';

/** A linear softmax model on flattened inputs: N(0, 0.1) weights drawn from `seed`, a zero bias. */
export function linearModel(features: number, numClasses: number, seed = 1): Classifier & { dispose(): void } {
  return linearClassifier({ inputSize: features, numClasses, seed, scale: 0.1 });
}

/**
 * A learnable problem: each class has a prototype in [0,1]^features; examples are the prototype
 * plus uniform noise, clipped to [0,1].
 */
export function prototypeData(count: number, features: number, numClasses: number, seed: number, noise = 0.35) {
  const random = new Random(seed);
  const prototypes = Array.from({ length: numClasses }, () => Array.from({ length: features }, () => random.uniform()));
  const inputs = new Float32Array(count * features);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = random.int(numClasses);
    labels[i] = label;
    for (let j = 0; j < features; j++) {
      inputs[i * features + j] = Math.min(1, Math.max(0, prototypes[label]![j]! + noise * (2 * random.uniform() - 1)));
    }
  }
  return { inputs, labels };
}
