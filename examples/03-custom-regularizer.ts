/**
 * Write your own regularizer against the contract (`@regstack/regularizer`): here a consistency
 * term, λ·KL(p(x) ‖ p(x + σ·ε)), with Gaussian noise ε drawn in the prepare phase (outside the
 * weight tape, from the step's seeded generator) and the noisy pass in frozen-statistics mode so it
 * does not touch batch-norm running statistics. λ takes a schedule like every built-in plugin.
 *
 *   npx tsx examples/03-custom-regularizer.ts [--quick]
 */
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { normalization } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { labelSmoothing } from '@regstack/label-smoothing';
import { smallCnn } from '@regstack/models';
import {
  assertKnownOptions,
  assertNumber,
  schedules,
  validateSchedulable,
  type RegularizerPlugin,
  type Schedulable,
} from '@regstack/regularizer';
import { train } from '@regstack/trainer';

export interface NoiseConsistencyOptions {
  /** Weight of the KL term (a number or a schedule). Default 1. */
  lambda?: Schedulable;
  /** Standard deviation of the noise, in pixel units of the [0,1] inputs. Default 0.1. */
  sigma?: number;
}

/** λ·KL(p(x) ‖ p(x + σ·ε)): predictions should not change under small Gaussian noise. */
export function noiseConsistency(options: NoiseConsistencyOptions = {}): RegularizerPlugin<{ noisy: tf.Tensor }> {
  assertKnownOptions('noiseConsistency', options, ['lambda', 'sigma']);
  const lambda = validateSchedulable('noiseConsistency.lambda', options.lambda ?? 1, { min: 0 });
  const sigma = assertNumber('noiseConsistency.sigma', options.sigma ?? 0.1, { min: 0 });
  return {
    specificationVersion: 'v1', // the contract this plugin was written against
    name: 'noise-consistency',
    stage: 'loss-term',
    // loss() reads context.base: declared, so the stack never runs this term without the base pass.
    readsBase: true,
    // Outside the tape: the noisy inputs are constants of this step.
    prepare: ({ clean, random }) => ({
      noisy: tf.add(clean.inputs, tf.randomNormal(clean.inputs.shape, 0, sigma, 'float32', random.seed())),
    }),
    // Inside the tape: reuse the base pass's logits for p(x); one extra pass for the noisy inputs.
    loss: (context, { noisy }) => {
      const logP = tf.logSoftmax(context.base.logits);
      const logQ = tf.logSoftmax(context.forward(noisy, 'frozen-stats').logits);
      const kl = tf.mean(tf.sum(tf.mul(tf.exp(logP), tf.sub(logP, logQ)), -1));
      return { value: tf.mul(context.value(lambda), kl) as tf.Scalar };
    },
  };
}

export async function main({ quick = false } = {}) {
  await useBackend('wasm');
  const data = loadEmbeddedFashionMnist();
  const model = smallCnn({ inputShape: [28, 28, 1], numClasses: 10, width: 8, seed: 2, ...normalization.fashionMnist });
  const epochs = quick ? 1 : 8;
  const result = await train({
    model,
    train: quick ? data.train.subset(Int32Array.from({ length: 192 }, (_, i) => i)) : data.train,
    validation: data.validation,
    // Stacks with the built-in plugins like any other: a warm-up ramp for λ over the first two epochs.
    regularizers: [noiseConsistency({ lambda: schedules.linear(0, 1, 0, 2), sigma: 0.1 }), labelSmoothing({ epsilon: 0.1 })],
    epochs,
    batchSize: 64,
    learningRate: 0.05,
    onEpochEnd: (record) =>
      console.log(`epoch ${record.epoch}: base ${record.terms.base!.toFixed(3)}, noise-consistency ${record.terms['noise-consistency']!.toFixed(4)}, validation accuracy ${(100 * record.validation!.accuracy).toFixed(1)}%`),
  });
  model.dispose();
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main({ quick: process.argv.includes('--quick') });
