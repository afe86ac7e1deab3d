// The stacks the issue names, with the real plugins together (each plugin's own tests use toys).
import * as tf from '@tensorflow/tfjs-core';
import { adversarialTraining } from '@regstack/adversarial-training';
import { labelSmoothing } from '@regstack/label-smoothing';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { Random, classifierFromFunction, composeRegularizers, type ModelMode, type RegularizerPlugin } from '@regstack/regularizer';
import { minimizeSteps } from '@regstack/regularizer/testing';
import { describe, expect, it } from 'vitest';

const CLASSES = 4;

/** A two-layer tanh network on 3×3×2 images that counts its forward passes by mode. */
function countingModel() {
  const random = new Random(11);
  const values = (n: number, scale: number) => Array.from({ length: n }, () => scale * random.normal());
  const hidden = tf.variable(tf.tensor2d(values(18 * 8, 0.5), [18, 8]));
  const output = tf.variable(tf.tensor2d(values(8 * CLASSES, 0.5), [8, CLASSES]));
  const calls: ModelMode[] = [];
  const model = classifierFromFunction({
    numClasses: CLASSES,
    trainableVariables: [hidden, output],
    apply: (inputs, { mode }) => {
      calls.push(mode);
      return tf.tidy(() => {
        const features = tf.tanh(tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, 18]), hidden)) as tf.Tensor2D;
        return { features, logits: tf.matMul(features, output) as tf.Tensor2D };
      });
    },
  });
  return { model, calls, dispose: () => tf.dispose([hidden, output]) };
}

function batchOf(size = 8) {
  const random = new Random(3);
  return {
    inputs: tf.tensor4d(Array.from({ length: size * 18 }, () => random.uniform()), [size, 3, 3, 2]),
    labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % CLASSES), 'int32'),
  };
}

/** Runs one prepared step of `plugins` and returns its named terms and the base loss's targets. */
function stepOf(plugins: RegularizerPlugin[], model: ReturnType<typeof countingModel>['model'], batch: ReturnType<typeof batchOf>, seed = 1) {
  const step = composeRegularizers(plugins).prepare({ model, batch, random: new Random(seed) });
  const { value, grads } = step.gradients();
  const terms = step.terms();
  const targets = Array.from(step.batch.targets.dataSync());
  const inputs = Array.from(step.batch.inputs.dataSync());
  tf.dispose([value, ...Object.values(grads)]);
  step.dispose();
  return { terms, targets, inputs };
}

describe('stacks of the real plugins', () => {
  it('RCAD + label smoothing: RCAD keeps its plain-CE direction on the clean batch; the base loss sees smoothed targets', () => {
    const { model, dispose } = countingModel();
    const batch = batchOf();
    const alone = stepOf([rcad({ alpha: 0.7 })], model, batch);
    const stacked = stepOf([rcad({ alpha: 0.7 }), labelSmoothing({ epsilon: 0.2 })], model, batch);
    expect(stacked.terms.rcad).toBeCloseTo(alone.terms.rcad!, 6);
    expect(stacked.targets.slice(0, 4).map((v) => Number(v.toFixed(6)))).toEqual([0.85, 0.05, 0.05, 0.05]);
    expect(stacked.terms.base).not.toBeCloseTo(alone.terms.base!, 3);
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });

  it('RCAD + mixup: RCAD perturbs the clean batch, mixup only changes what the base loss sees', () => {
    const { model, dispose } = countingModel();
    const batch = batchOf();
    const alone = stepOf([rcad()], model, batch);
    const stacked = stepOf([rcad(), mixup({ mixupAlpha: 1 })], model, batch);
    expect(stacked.terms.rcad).toBeCloseTo(alone.terms.rcad!, 6);
    expect(stacked.inputs).not.toEqual(Array.from(batch.inputs.dataSync())); // mixed
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });

  it('RCAD + FGSM share one input gradient exactly when they ask for the same one', () => {
    const { model, calls, dispose } = countingModel();
    const batch = batchOf();
    const prepareCalls = (plugins: RegularizerPlugin[]) => {
      calls.length = 0;
      composeRegularizers(plugins).prepare({ model, batch, random: new Random(1) }).dispose();
      return [...calls];
    };
    // Same request (clean point, summed CE, frozen statistics): one pass serves both.
    expect(prepareCalls([rcad(), adversarialTraining({ attack: 'fgsm' })])).toEqual(['frozen-stats']);
    // FGSM attacking in eval mode asks for a different gradient: two passes.
    expect(prepareCalls([rcad(), adversarialTraining({ attack: 'fgsm', attackMode: 'eval' })]).sort()).toEqual(['eval', 'frozen-stats']);
    const { terms } = stepOf([rcad(), adversarialTraining({ attack: 'fgsm' })], model, batch);
    expect(Object.keys(terms).sort()).toEqual(['adversarial-training', 'base', 'rcad', 'total']);
    expect(terms.total).toBeCloseTo(0.5 * terms.base! + 0.5 * terms['adversarial-training']! + terms.rcad!, 5);
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });

  it('mixup + label smoothing: smoothing is applied once, after mixing', () => {
    const { model, dispose } = countingModel();
    const batch = batchOf();
    const mixedOnly = stepOf([mixup({ mixupAlpha: 1 })], model, batch, 4).targets;
    const both = stepOf([labelSmoothing({ epsilon: 0.1 }), mixup({ mixupAlpha: 1 })], model, batch, 4).targets;
    both.forEach((value, i) => expect(value).toBeCloseTo(0.9 * mixedOnly[i]! + 0.1 / CLASSES, 6));
    expect(() => composeRegularizers([labelSmoothing(), labelSmoothing()])).toThrow(/cannot be stacked/);
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });

  it('keeps the tensor count fixed over steps of a four-plugin stack', () => {
    const { model, dispose } = countingModel();
    const batch = batchOf();
    const stack = composeRegularizers([rcad(), labelSmoothing(), mixup(), adversarialTraining()]);
    const optimizer = tf.train.sgd(0.1);
    const { tensorCounts } = minimizeSteps(stack, { model, batch, random: new Random(2) }, 4, optimizer);
    expect(new Set(tensorCounts).size).toBe(1); // plain SGD keeps no state, so even the first step counts
    optimizer.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });
});
