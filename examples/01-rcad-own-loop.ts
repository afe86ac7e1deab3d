/**
 * RCAD in your own training loop, in the three forms the stack offers, taking turns. Form 1:
 * `stack.minimize(optimizer, input)`, one update in one call. Form 2: `stack.prepare` computes the
 * step's constants outside the weight tape, then `optimizer.minimize` takes the loss closure. Form 3:
 * `stack.gradients` returns the loss and weight gradients so you can clip them and add weight decay
 * yourself, as the paper's recipe does. Forms 1 and 3 serve RCAD's clean input gradient from the
 * base pass (one pass less).
 *
 *   npx tsx examples/01-rcad-own-loop.ts [--quick]
 */
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { normalization } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { smallCnn } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { Random, addWeightDecay, applyGradients, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { evaluate } from '@regstack/trainer';

export async function main({ quick = false } = {}) {
  await useBackend('wasm'); // registers TF.js's gradients and our conv-gradient kernels
  const { train, test } = loadEmbeddedFashionMnist();
  const model = smallCnn({ inputShape: [28, 28, 1], numClasses: 10, width: 8, seed: 0, ...normalization.fashionMnist });
  const stack = composeRegularizers([rcad({ alpha: 0.5, lambda: 0.2 })]); // α ≈ 0.5 suits 28×28×1 inputs
  const optimizer = tf.train.momentum(0.05, 0.9, true);
  const random = new Random(0); // one generator for the run: batches and every step's draws
  const batchSize = 64;
  const steps = quick ? 24 : 150;
  const losses: number[] = [];
  const tensorCounts: number[] = [];

  for (let step = 0; step < steps; step++) {
    const indices = random.permutation(train.size).slice(0, batchSize);
    const batch = train.batch(indices);
    let terms: Record<string, number>;
    if (step % 3 === 0) {
      // Form 1: one call.
      terms = stack.minimize(optimizer, { model, batch, random, step }); // { base, rcad, total }
    } else if (step % 3 === 1) {
      // Form 2: prepare outside the tape, then the closure for optimizer.minimize.
      const prepared = stack.prepare({ model, batch, random, step });
      optimizer.minimize(prepared.loss, false, model.trainableVariables);
      terms = prepared.terms();
      prepared.dispose();
    } else {
      // Form 3: gradients, clipped by global norm, then weight decay, then the update
      // (applyGradients: TF.js declares Momentum's and Adam's for variables, not gradient maps).
      const { value, grads, terms: stepTerms } = stack.gradients({ model, batch, random, step });
      const clipped = clipByGlobalNorm(grads, 1.0);
      const decayed = addWeightDecay(clipped.grads, model.trainableVariables, 5e-4);
      applyGradients(optimizer, decayed);
      tf.dispose([value, ...Object.values(grads), ...Object.values(clipped.grads), ...Object.values(decayed)]);
      terms = stepTerms;
    }
    losses.push(terms.total!);
    if (step % 25 === 0 || step === steps - 1) console.log(`step ${step}: base ${terms.base!.toFixed(3)}  rcad ${terms.rcad!.toFixed(3)}  total ${terms.total!.toFixed(3)}`);
    tf.dispose([batch.inputs, batch.labels]);
    tensorCounts.push(tf.memory().numTensors); // the same after every step: nothing leaks
  }
  const metrics = evaluate(model, quick ? test.subset(Int32Array.from({ length: 200 }, (_, i) => i)) : test);
  console.log(`test accuracy ${(100 * metrics.accuracy).toFixed(2)}%, NLL ${metrics.nll.toFixed(3)}, ECE ${metrics.ece.toFixed(3)}`);
  model.dispose();
  optimizer.dispose();
  return { losses, metrics, tensorCounts };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main({ quick: process.argv.includes('--quick') });
