// The stacks the issue names, with the real plugins together (each plugin's own tests use toys).
import * as tf from '@tensorflow/tfjs-core';
import { adversarialTraining } from '@regstack/adversarial-training';
import { labelSmoothing } from '@regstack/label-smoothing';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { Random, classifierFromFunction, composeRegularizers, type ModelMode, type RegularizerPlugin, type StepGradients } from '@regstack/regularizer';
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

/** A batch-normalised network (running mean updated in train mode only), deterministic or of unknown stochasticity. */
function batchNormModel(stochastic: false | undefined) {
  const random = new Random(13);
  const values = (n: number, scale: number) => Array.from({ length: n }, () => scale * random.normal());
  const hidden = tf.variable(tf.tensor2d(values(18 * 8, 0.5), [18, 8]));
  const output = tf.variable(tf.tensor2d(values(8 * CLASSES, 0.5), [8, CLASSES]));
  const runningMean = tf.variable(tf.zeros([8]), false);
  const model = classifierFromFunction({
    numClasses: CLASSES,
    trainableVariables: [hidden, output],
    nonTrainableVariables: [runningMean],
    ...(stochastic === false ? { stochastic } : {}),
    apply: (inputs, { mode }) =>
      tf.tidy(() => {
        const pre = tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, 18]), hidden);
        let centred: tf.Tensor;
        if (mode === 'eval') centred = tf.sub(pre, runningMean);
        else {
          const { mean, variance } = tf.moments(pre, 0);
          if (mode === 'train') runningMean.assign(tf.add(tf.mul(runningMean, 0.9), tf.mul(mean, 0.1)));
          centred = tf.div(tf.sub(pre, mean), tf.sqrt(tf.add(variance, 1e-5)));
        }
        return tf.matMul(tf.tanh(centred), output) as tf.Tensor2D;
      }),
  });
  return { model, runningMean, dispose: () => tf.dispose([hidden, output, runningMean]) };
}

/**
 * The plain path's step (`slow`, on `plain`) and the fused one's (`fast`, on `fused`, the same weights)
 * agree: terms within 1e-6, each weight gradient within 1e-6 relative, running statistics to the bit.
 * Then frees both steps, the batch and both models.
 */
function expectSameStepAndDispose(
  slow: StepGradients,
  fast: StepGradients,
  plain: ReturnType<typeof batchNormModel>,
  fused: ReturnType<typeof batchNormModel>,
  batch: { inputs: tf.Tensor; labels: tf.Tensor },
): void {
  for (const [term, value] of Object.entries(slow.terms)) expect(Math.abs(fast.terms[term]! - value), term).toBeLessThan(1e-6);
  plain.model.trainableVariables.forEach((variable, i) => {
    const [a, b] = [slow.grads[variable.name]!, fast.grads[fused.model.trainableVariables[i]!.name]!];
    expect(tf.tidy(() => tf.norm(tf.sub(a, b)).dataSync()[0]! / tf.norm(a).dataSync()[0]!)).toBeLessThan(1e-6);
  });
  expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
  tf.dispose([slow.value, fast.value, ...Object.values(slow.grads), ...Object.values(fast.grads), batch.inputs, batch.labels]);
  plain.dispose();
  fused.dispose();
}

describe('the two-view base loss, fused with the real plugins', () => {
  // The reference recipe's second view: a horizontal flip and a shift drawn from the step's generator.
  const augment = (inputs: tf.Tensor, random: Random) => tf.add(tf.reverse(inputs, 2), 0.1 * random.uniform());
  for (const [name, plugins] of [
    ['RCAD', () => [rcad({ alpha: 0.5, lambda: 0.3 })]],
    ['FGSM', () => [adversarialTraining({ attack: 'fgsm', epsilon: 0.05 })]],
    ['RCAD + FGSM', () => [rcad(), adversarialTraining({ attack: 'fgsm', epsilon: 0.05 })]],
  ] as const) {
    it(`${name}: one pass less than the plain path, the same gradients, terms and running statistics`, () => {
      const plain = batchNormModel(undefined);
      const fused = batchNormModel(false);
      fused.model.trainableVariables.forEach((variable, i) => variable.assign(plain.model.trainableVariables[i]!));
      const batch = batchOf();
      const input = { batch, baseLoss: 'two-view' as const, augment };
      const slow = composeRegularizers(plugins()).gradients({ ...input, model: plain.model, random: new Random(5) });
      const fast = composeRegularizers(plugins()).gradients({ ...input, model: fused.model, random: new Random(5) });
      expect([slow.fused, fast.fused]).toEqual([false, true]);
      expect(fast.fusion).toBe('base-backward');
      expectSameStepAndDispose(slow, fast, plain, fused, batch);
    });
  }

  for (const [name, views] of [
    ['RCAD + label smoothing, one view', {}],
    ['RCAD + label smoothing, two views', { baseLoss: 'two-view' as const, augment }],
  ] as const) {
    it(`${name}: the direction from the base pass's forward (a backward of its own), the plain path's numbers`, () => {
      const plain = batchNormModel(undefined);
      const fused = batchNormModel(false);
      fused.model.trainableVariables.forEach((variable, i) => variable.assign(plain.model.trainableVariables[i]!));
      const batch = batchOf();
      const plugins = () => [rcad({ alpha: 0.5, lambda: 0.3 }), labelSmoothing({ epsilon: 0.3 })];
      const slow = composeRegularizers(plugins()).gradients({ ...views, batch, model: plain.model, random: new Random(5) });
      const fast = composeRegularizers(plugins()).gradients({ ...views, batch, model: fused.model, random: new Random(5) });
      expect([slow.fusion, fast.fusion]).toEqual(['plain', 'base-forward']);
      expectSameStepAndDispose(slow, fast, plain, fused, batch);
    });
  }

  it('RCAD with mixup (with or without label smoothing) keeps the plain path', () => {
    const { model, dispose } = batchNormModel(false);
    const batch = batchOf();
    for (const others of [[mixup({ mixupAlpha: 1 })], [mixup({ mixupAlpha: 1 }), labelSmoothing({ epsilon: 0.1 })]]) {
      const result = composeRegularizers([rcad(), ...others]).gradients({ model, batch, baseLoss: 'two-view', augment, random: new Random(5) });
      expect([result.fused, result.fusion]).toEqual([false, 'plain']);
      tf.dispose([result.value, ...Object.values(result.grads)]);
    }
    tf.dispose([batch.inputs, batch.labels]);
    dispose();
  });
});
