// Small models and data for the trainer's tests (not exported from the package).
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import * as tf from '@tensorflow/tfjs-core';
import { Random, classifierFromFunction, type Classifier } from '@regstack/regularizer';

/** A linear softmax model on flattened inputs, initialised from `seed`. */
export function linearModel(features: number, numClasses: number, seed = 1): Classifier & { dispose(): void } {
  const weight = tf.variable(tf.randomNormal([features, numClasses], 0, 0.1, 'float32', seed));
  const bias = tf.variable(tf.zeros([numClasses]));
  const model = classifierFromFunction({
    numClasses,
    trainableVariables: [weight, bias],
    apply: (inputs) => tf.tidy(() => tf.add(tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, -1]), weight), bias) as tf.Tensor2D),
  });
  return Object.assign(model, { dispose: () => tf.dispose([weight, bias]) });
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
