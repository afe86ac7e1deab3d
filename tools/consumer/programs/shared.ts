// Helpers every consumer program shares, written as a user would (only public, installed APIs).
import * as tf from '@tensorflow/tfjs';
import { randomSubset } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { Random } from '@regstack/regularizer';

/** A fixed batch of 32 embedded Fashion-MNIST images: training on it again and again must lower the loss. */
export function fixedBatch(seed: number): { inputs: tf.Tensor; labels: tf.Tensor1D } {
  const { train } = loadEmbeddedFashionMnist({ validationFraction: 0 });
  const subset = randomSubset(train, 32, new Random(seed));
  const { inputs, labels } = subset.batch(Array.from({ length: 32 }, (_, index) => index));
  return { inputs, labels };
}

/** A small convolutional net that ends in logits (no softmax), as the plugins' READMEs ask. */
export function convNet(): tf.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 4, kernelSize: 3, strides: 2, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.flatten(),
      tf.layers.dense({ units: 10, kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
}

/** Prints the program's result as the last line of its output, for the test to read. */
export function report(result: Record<string, unknown>): void {
  console.log(`RESULT ${JSON.stringify(result)}`);
}
