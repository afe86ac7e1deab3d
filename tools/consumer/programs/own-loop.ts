// The regularizer README's own-loop forms, word for word (needs `stack.minimize` and TF.js-compatible
// step types): `optimizer.minimize(step.loss, false, model.trainableVariables)`, `stack.gradients` +
// `optimizer.applyGradients`, and `stack.minimize(optimizer, input)`. The three update the same
// weights from the same start, so they must agree.
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '@regstack/backend';
import { labelSmoothing } from '@regstack/label-smoothing';
import { rcad } from '@regstack/rcad';
import { Random, classifierFromLayersModel, composeRegularizers } from '@regstack/regularizer';
import { convNet, fixedBatch, report } from './shared.js';

async function main(): Promise<void> {
  await useBackend('wasm');
  const batch = fixedBatch(1);
  const start = convNet();
  const initial = start.getWeights().map((weight) => weight.clone());
  const steps = 6;

  /** Trains a fresh copy of `start` with one of the loops; returns the totals and the final weights. */
  const run = (update: (model: ReturnType<typeof classifierFromLayersModel>, optimizer: tf.Optimizer, random: Random, step: number) => number) => {
    const layersModel = convNet();
    layersModel.setWeights(initial);
    const model = classifierFromLayersModel(layersModel);
    const optimizer = tf.train.sgd(0.05);
    const random = new Random(7);
    const totals: number[] = [];
    const counts: number[] = [];
    for (let step = 0; step < steps; step++) {
      totals.push(update(model, optimizer, random, step));
      counts.push(tf.memory().numTensors);
    }
    const weights = layersModel.getWeights().map((weight) => Array.from(weight.dataSync()));
    optimizer.dispose();
    layersModel.dispose();
    return { totals, counts, weights };
  };

  const stack = composeRegularizers([rcad(), labelSmoothing({ epsilon: 0.1 })]);
  const withMinimize = run((model, optimizer, random, step) => {
    const prepared = stack.prepare({ model, batch, random, step });
    optimizer.minimize(prepared.loss, false, model.trainableVariables);
    const total = prepared.terms().total ?? NaN;
    prepared.dispose();
    return total;
  });
  const withGradients = run((model, optimizer, random, step) => {
    const { value, grads, terms } = stack.gradients({ model, batch, random, step });
    optimizer.applyGradients(grads);
    tf.dispose([value, grads]);
    return terms.total ?? NaN;
  });
  const withStackMinimize = run((model, optimizer, random, step) => stack.minimize(optimizer, { model, batch, random, step }).total ?? NaN);

  const largestDifference = (a: number[][], b: number[][]) =>
    Math.max(...a.map((weight, index) => Math.max(...weight.map((value, position) => Math.abs(value - b[index]![position]!)))));
  report({
    minimize: withMinimize.totals,
    gradients: withGradients.totals,
    stackMinimize: withStackMinimize.totals,
    counts: [withMinimize.counts, withGradients.counts, withStackMinimize.counts],
    weightDifference: {
      gradients: largestDifference(withMinimize.weights, withGradients.weights),
      stackMinimize: largestDifference(withMinimize.weights, withStackMinimize.weights),
    },
  });
}

void main();
