// Works with what every package exports today: each package imported from its installed tarball, the
// datasets' two browser-safe entries sharing one Dataset class, the wasm backend with this package's
// kernels (a conv net's filter gradient is missing on wasm without them), and a RCAD + label smoothing
// stack trained with `optimizer.minimize(step.loss)`.
import * as tf from '@tensorflow/tfjs';
import { adversarialTraining } from '@regstack/adversarial-training';
import { useBackend } from '@regstack/backend';
import { Dataset, decodeBase64 } from '@regstack/datasets';
import { embeddedFashionMnistSource, loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { entropyMin } from '@regstack/entropy-min';
import { labelSmoothing } from '@regstack/label-smoothing';
import { meAda } from '@regstack/me-ada';
import { mixup } from '@regstack/mixup';
import { smallCnn } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { ConfigError, Random, classifierFromLayersModel, composeRegularizers } from '@regstack/regularizer';
import { tensorData } from '@regstack/trainer';
import { convNet, fixedBatch, report } from './shared.js';

async function main(): Promise<void> {
  const backend = await useBackend('wasm');
  const loaded = loadEmbeddedFashionMnist();

  // Every plugin composes; a stack that makes no sense is a typed error naming the field.
  const names = [adversarialTraining(), entropyMin(), meAda(), mixup()].map((plugin) => composeRegularizers([plugin]).plugins.map((each) => each.name));
  let duplicateError = '';
  try {
    composeRegularizers([labelSmoothing(), labelSmoothing()]);
  } catch (error) {
    if (error instanceof ConfigError) duplicateError = error.field;
  }

  const layersModel = convNet();
  const model = classifierFromLayersModel(layersModel);
  const stack = composeRegularizers([rcad(), labelSmoothing({ epsilon: 0.1 })]);
  const optimizer = tf.train.adam(0.01);
  const batch = fixedBatch(0);
  const random = new Random(0);
  const losses: number[] = [];
  const tensorCounts: number[] = [];
  let terms: Record<string, number> = {};
  for (let step = 0; step < 8; step++) {
    const prepared = stack.prepare({ model, batch, random, step });
    optimizer.minimize(prepared.loss);
    terms = prepared.terms();
    prepared.dispose();
    losses.push(terms.total ?? NaN);
    tensorCounts.push(tf.memory().numTensors);
  }

  const ourModel = smallCnn({ numClasses: 10, inputShape: [28, 28, 1] });
  const data = tensorData(batch.inputs, batch.labels);
  report({
    backend: backend.name,
    tfBackend: tf.getBackend(),
    kernels: backend.kernels,
    embedded: { train: loaded.train.size, validation: loaded.validation.size, test: loaded.test.size, sameClass: loaded.train instanceof Dataset, trainPerClass: embeddedFashionMnistSource.trainPerClass },
    decoded: Array.from(decodeBase64('AQID')),
    names,
    duplicateError,
    losses,
    terms,
    tensorCounts,
    smallCnnVariables: ourModel.trainableVariables.length,
    tensorDataSize: data.size,
  });
}

void main();
