/**
 * RCAD in your own training loop. Form 1: `stack.prepare` computes the step's constants outside the
 * weight tape, then `optimizer.minimize` takes the loss closure. Form 2: `stack.gradients` returns
 * the loss and weight gradients so you can clip them and add weight decay yourself, as the paper's
 * recipe does (and it is the cheaper one for RCAD).
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
import { Random, addWeightDecay, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { evaluate } from '@regstack/trainer';

export async function main({ quick = false } = {}) {
  await useBackend('wasm'); // registers TF.js's gradients and our conv-gradient kernels
  const { train, test } = loadEmbeddedFashionMnist();
  const model = smallCnn({ inputShape: [28, 28, 1], numClasses: 10, width: 8, seed: 0, ...normalization.fashionMnist });
  const stack = composeRegularizers([rcad({ alpha: 0.5, lambda: 0.2 })]); // α ≈ 0.5 suits 28×28×1 inputs
  const optimizer = tf.train.momentum(0.05, 0.9, true);
  const random = new Random(0);
  const batchSize = 64;
  const steps = quick ? 24 : 150;
  const losses: number[] = [];
  const tensorCounts: number[] = [];

  for (let step = 0; step < steps; step++) {
    const indices = random.permutation(train.size).slice(0, batchSize);
    const batch = train.batch(indices);
    let terms: Record<string, number>;
    if (step % 2 === 0) {
      // Form 1: prepare outside the tape, then the closure for optimizer.minimize.
      const prepared = stack.prepare({ model, batch, random, step });
      optimizer.minimize(prepared.loss, false, model.trainableVariables as tf.Variable[]);
      terms = prepared.terms(); // { base, rcad, total }
      prepared.dispose();
    } else {
      // Form 2: gradients (RCAD's clean input gradient comes from the base pass here, one pass less),
      // clipped by global norm, then weight decay, then the update.
      const { value, grads, terms: stepTerms } = stack.gradients({ model, batch, random, step });
      const clipped = clipByGlobalNorm(grads, 1.0);
      const decayed = addWeightDecay(clipped.grads, model.trainableVariables, 5e-4);
      optimizer.applyGradients(decayed as Parameters<typeof optimizer.applyGradients>[0]);
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
