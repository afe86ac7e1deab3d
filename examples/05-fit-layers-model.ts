/**
 * `model.fit` with regularizers: a `tf.sequential` with batch normalisation and dropout, trained by
 * `fit` with RCAD + mixup, early stopping and a validation split, then saved with `file://` and
 * reloaded with plain TF.js (no tfjs-node): the reloaded model predicts exactly the same.
 *
 *   npx tsx examples/05-fit-layers-model.ts [--quick]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { useBackend } from '@regstack/backend';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { fit } from '@regstack/trainer';
import '@regstack/trainer/node'; // file:// for model.save and tf.loadLayersModel

export async function main({ quick = false } = {}) {
  await useBackend('wasm');
  const data = loadEmbeddedFashionMnist(); // 1,800 train + 200 validation + 1,000 test images in [0, 1]
  const count = quick ? 640 : data.train.size;
  const { inputs: x, labels: y } = data.train.batch(Int32Array.from({ length: count }, (_, i) => i));
  const test = data.test.batch(Int32Array.from({ length: data.test.size }, (_, i) => i));

  const model = tfl.sequential({
    layers: [
      tfl.layers.flatten({ inputShape: [28, 28, 1] }),
      tfl.layers.dense({ units: 128, activation: 'relu', kernelInitializer: tfl.initializers.heNormal({ seed: 1 }) }),
      tfl.layers.batchNormalization(),
      tfl.layers.dropout({ rate: 0.2 }),
      tfl.layers.dense({ units: 10, kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 }) }), // logits
    ],
  });

  const history = await fit(model, x, y, {
    regularizers: [rcad({ alpha: 0.5, lambda: 0.2 }), mixup({ mixupAlpha: 0.4 })],
    optimizer: 'adam',
    epochs: quick ? 2 : 20,
    batchSize: 64,
    validationSplit: 0.1,
    callbacks: [
      tfl.callbacks.earlyStopping({ monitor: 'val_loss', patience: 3 }),
      {
        onEpochEnd: (epoch, logs) =>
          console.log(`epoch ${epoch + 1}: loss ${logs!.loss!.toFixed(3)} (rcad ${logs!.rcad!.toFixed(3)}) acc ${logs!.acc!.toFixed(3)} | val_loss ${logs!.val_loss!.toFixed(3)} val_acc ${logs!.val_acc!.toFixed(3)}`),
      },
    ],
    seed: 0,
  });

  // An ordinary LayersModel again: save, reload, compare.
  const directory = await mkdtemp(join(tmpdir(), 'regstack-fit-example-'));
  let maxDifference: number;
  let testAccuracy: number;
  try {
    await model.save(`file://${directory}`);
    const reloaded = await tfl.loadLayersModel(`file://${join(directory, 'model.json')}`);
    const [before, after] = [model.predict(test.inputs) as tf.Tensor2D, reloaded.predict(test.inputs) as tf.Tensor2D];
    maxDifference = tf.tidy(() => tf.max(tf.abs(tf.sub(before, after))).dataSync()[0]!);
    testAccuracy = tf.tidy(() => tf.mean(tf.cast(tf.equal(tf.argMax(after, 1), test.labels), 'float32')).dataSync()[0]!);
    tf.dispose([before, after]);
    reloaded.dispose();
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
  console.log(`saved and reloaded: largest prediction difference ${maxDifference}; test accuracy ${(100 * testAccuracy).toFixed(2)}%`);
  tf.dispose([x, y, test.inputs, test.labels]);
  model.dispose();
  return { history, maxDifference, testAccuracy };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main({ quick: process.argv.includes('--quick') });
