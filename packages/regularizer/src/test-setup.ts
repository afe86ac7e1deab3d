// Test helpers shared by this package's tests (not exported from the package).
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import * as tf from '@tensorflow/tfjs-core';
import { classifierFromFunction } from './classifier.js';
import type { Classifier, ForwardOptions } from './contract.js';

export async function useCpu(): Promise<void> {
  await tf.setBackend('cpu');
  await tf.ready();
}

/** A linear softmax classifier on flattened inputs that counts its forward passes by mode. */
export function countingLinearModel(inputSize: number, numClasses: number, seed = 1): Classifier & { calls: ForwardOptions['mode'][]; dispose(): void } {
  const weight = tf.variable(tf.randomNormal([inputSize, numClasses], 0, 0.5, 'float32', seed), true, `w${seed}`);
  const bias = tf.variable(tf.randomNormal([numClasses], 0, 0.1, 'float32', seed + 1), true, `b${seed}`);
  const calls: ForwardOptions['mode'][] = [];
  const classifier = classifierFromFunction({
    numClasses,
    trainableVariables: [weight, bias],
    apply: (inputs, options) => {
      calls.push(options.mode);
      return tf.tidy(() => tf.add(tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, -1]), weight), bias) as tf.Tensor2D);
    },
  });
  return Object.assign(classifier, { calls, dispose: () => tf.dispose([weight, bias]) });
}
