import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it, vi } from 'vitest';
import { classifierFromFunction } from './classifier.js';
import type { ModelMode, RegularizerPlugin } from './contract.js';
import { ConfigError } from './errors.js';
import { meanEntropy } from './losses.js';
import { Random } from './random.js';
import { composeRegularizers } from './stack.js';
import { errorField } from './testing.js';

/**
 * A network with batch normalisation (batch statistics in train and frozen-stats mode, running
 * statistics updated only in train mode) that counts its passes.
 */
function batchNormModel(stochastic: boolean | undefined) {
  const random = new Random(4);
  const normal = (n: number, scale: number) => Array.from({ length: n }, () => scale * random.normal());
  const hidden = tf.variable(tf.tensor2d(normal(6 * 5, 0.6), [6, 5]), true, `hidden${stochastic}`);
  const gamma = tf.variable(tf.tensor1d(normal(5, 0.2).map((v) => 1 + v)), true, `gamma${stochastic}`);
  const output = tf.variable(tf.tensor2d(normal(5 * 3, 0.6), [5, 3]), true, `output${stochastic}`);
  const runningMean = tf.variable(tf.zeros([5]), false, `runningMean${stochastic}`);
  const calls: ModelMode[] = [];
  const model = classifierFromFunction({
    numClasses: 3,
    trainableVariables: [hidden, gamma, output],
    nonTrainableVariables: [runningMean],
    ...(stochastic !== undefined ? { stochastic } : {}),
    apply: (inputs, { mode }) => {
      calls.push(mode);
      const pre = tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, 6]), hidden);
      let normalised: tf.Tensor;
      if (mode === 'eval') normalised = tf.sub(pre, runningMean);
      else {
        const { mean, variance } = tf.moments(pre, 0);
        if (mode === 'train') runningMean.assign(tf.tidy(() => tf.add(tf.mul(runningMean, 0.9), tf.mul(mean, 0.1))));
        normalised = tf.div(tf.sub(pre, mean), tf.sqrt(tf.add(variance, 1e-5)));
      }
      return tf.matMul(tf.tanh(tf.mul(normalised, gamma)), output) as tf.Tensor2D;
    },
  });
  return { model, calls, runningMean, dispose: () => tf.dispose([hidden, gamma, output, runningMean]) };
}

/** RCAD as the reference, written here so this package's test depends on no plugin package. */
function directionEntropy(alpha: number, lambda: number): RegularizerPlugin<{ perturbed: tf.Tensor }> {
  return {
    name: 'rcad-like',
    stage: 'loss-term',
    prepare: ({ clean, inputGradient }) => {
      const { gradient } = inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' });
      const norm = tf.add(tf.sqrt(tf.sum(tf.square(gradient), [1, 2], true)), 1e-10);
      return { perturbed: tf.add(clean.inputs, tf.mul(alpha, tf.div(gradient, norm))) };
    },
    loss: (context, { perturbed }) => ({
      value: tf.mul(lambda, tf.sub(Math.log(3), meanEntropy(context.forward(perturbed, 'frozen-stats').logits))) as tf.Scalar,
    }),
  };
}

const batch = () => {
  const random = new Random(9);
  return {
    inputs: tf.tensor3d(Array.from({ length: 10 * 6 }, () => random.uniform()), [10, 2, 3]),
    labels: tf.tensor1d([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], 'int32'),
  };
};

/** A plugin whose prepare asks for the clean input gradient (the fused step's seeded one), then throws. */
const failingAfterInputGradient = (): RegularizerPlugin<{ unused: tf.Tensor }> => ({
  name: 'failing',
  stage: 'loss-term',
  prepare: ({ inputGradient }) => {
    inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' });
    throw new ConfigError('failing', 'on purpose');
  },
  loss: () => ({ value: tf.scalar(0) }),
});

const worstRelativeError = (a: tf.NamedTensorMap, b: tf.NamedTensorMap) =>
  Math.max(
    ...Object.keys(b).map((name) => tf.tidy(() => tf.norm(tf.sub(a[name]!, b[name]!)).dataSync()[0]! / tf.norm(b[name]!).dataSync()[0]!)),
  );

type Step = ReturnType<ReturnType<typeof composeRegularizers>['gradients']>;
type CountingModel = ReturnType<typeof batchNormModel>;

/**
 * The fused step's gradients against the plain step's, each model's variables matched by position (the
 * two models name theirs apart): the worst relative error over the variables.
 */
const fusedGradientError = (slow: Step, fast: Step, plain: CountingModel, fused: CountingModel) =>
  worstRelativeError(fast.grads, Object.fromEntries(plain.model.trainableVariables.map((v, i) => [fused.model.trainableVariables[i]!.name, slow.grads[v.name]!])));

/** Disposes both steps' results, the batch, and both models. */
function disposeRuns(slow: Step, fast: Step, data: { inputs: tf.Tensor; labels: tf.Tensor }, plain: CountingModel, fused: CountingModel): void {
  tf.dispose([slow.value, fast.value, ...Object.values(slow.grads), ...Object.values(fast.grads), data.inputs, data.labels]);
  plain.dispose();
  fused.dispose();
}

describe('stack.gradients: the fused base pass', () => {
  it('gives the plain path’s loss, gradients, terms and running statistics with one pass less', () => {
    const data = batch();
    const plugins = [directionEntropy(0.8, 0.5)];
    const plain = batchNormModel(undefined); // stochastic unknown: never fused
    const fused = batchNormModel(false);
    fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
    const slow = composeRegularizers(plugins).gradients({ model: plain.model, batch: data, random: new Random(1) });
    const fast = composeRegularizers(plugins).gradients({ model: fused.model, batch: data, random: new Random(1) });
    expect([slow.fused, fast.fused]).toEqual([false, true]);
    expect([slow.fusion, fast.fusion]).toEqual(['plain', 'base-backward']);
    expect(plain.calls).toEqual(['frozen-stats', 'train', 'frozen-stats']);
    expect(fused.calls).toEqual(['train', 'frozen-stats']);
    expect(fast.value.dataSync()[0]).toBeCloseTo(slow.value.dataSync()[0]!, 5);
    expect(fast.terms.base).toBeCloseTo(slow.terms.base!, 5);
    expect(fast.terms['rcad-like']).toBeCloseTo(slow.terms['rcad-like']!, 5);
    expect(fast.terms.total).toBeCloseTo(slow.terms.total!, 5);
    expect(fusedGradientError(slow, fast, plain, fused)).toBeLessThan(1e-5);
    expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
    disposeRuns(slow, fast, data, plain, fused);
  });

  it('mixes generated losses with the base pass as the plain path does', () => {
    const data = batch();
    const shifted: RegularizerPlugin<{ moved: tf.Tensor }> = {
      name: 'shifted',
      stage: 'generated-loss',
      prepare: ({ clean, inputGradient }) => ({ moved: tf.add(clean.inputs, tf.mul(0.1, tf.sign(inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient))) }),
      loss: (context, { moved }) => {
        const logits = context.forward(moved, 'frozen-stats').logits;
        const targets = tf.oneHot(context.clean.labels, 3);
        return { value: tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), -1))) as tf.Scalar, mixWeight: 0.3 };
      },
    };
    const plain = batchNormModel(undefined);
    const fused = batchNormModel(false);
    fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
    const slow = composeRegularizers([shifted as RegularizerPlugin]).gradients({ model: plain.model, batch: data, random: new Random(1) });
    const fast = composeRegularizers([shifted as RegularizerPlugin]).gradients({ model: fused.model, batch: data, random: new Random(1) });
    expect(fast.fused).toBe(true);
    expect(fast.value.dataSync()[0]).toBeCloseTo(slow.value.dataSync()[0]!, 5);
    expect(fusedGradientError(slow, fast, plain, fused)).toBeLessThan(1e-5);
    disposeRuns(slow, fast, data, plain, fused);
  });

  it('prepares against the running statistics as they were before the base pass, as the plain path does', () => {
    const data = batch();
    const evalAttack: RegularizerPlugin<{ moved: tf.Tensor }> = {
      name: 'eval-attack',
      stage: 'loss-term',
      prepare: ({ clean, inputGradient }) => ({ moved: tf.add(clean.inputs, inputGradient({ at: 'clean', reduction: 'sum', mode: 'eval' }).gradient) }),
      loss: (context, { moved }) => ({ value: meanEntropy(context.forward(moved, 'eval').logits) }),
    };
    const plain = batchNormModel(undefined);
    const fused = batchNormModel(false);
    fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
    for (const { runningMean } of [plain, fused]) runningMean.assign(tf.tensor1d([0.5, -0.5, 1, 0, 2]));
    const slow = composeRegularizers([evalAttack as RegularizerPlugin]).gradients({ model: plain.model, batch: data, random: new Random(1) });
    const fast = composeRegularizers([evalAttack as RegularizerPlugin]).gradients({ model: fused.model, batch: data, random: new Random(1) });
    expect(fast.fused).toBe(true);
    expect(fast.terms['eval-attack']).toBeCloseTo(slow.terms['eval-attack']!, 5);
    expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
    disposeRuns(slow, fast, data, plain, fused);
  });

  it('never fuses a stack with a plugin that declares readsBase, nor one with a batch transform', () => {
    const data = batch();
    // Reads the base pass and asks for the clean input gradient: the plain path's three passes.
    const readsBase: RegularizerPlugin<{ shifted: tf.Tensor }> = {
      name: 'reads-base',
      stage: 'loss-term',
      readsBase: true,
      prepare: ({ clean, inputGradient }) => ({ shifted: tf.add(clean.inputs, inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient) }),
      loss: (context, { shifted }) => ({
        value: tf.add(tf.mul(0.1, meanEntropy(context.base.logits)), tf.mul(0.1, meanEntropy(context.forward(shifted, 'frozen-stats').logits))) as tf.Scalar,
      }),
    };
    const reference = batchNormModel(undefined);
    const deterministic = batchNormModel(false);
    deterministic.model.trainableVariables.forEach((v, i) => v.assign(reference.model.trainableVariables[i]!));
    const slow = composeRegularizers([readsBase as RegularizerPlugin]).gradients({ model: reference.model, batch: data, random: new Random(1) });
    const before = tf.memory().numTensors;
    const result = composeRegularizers([readsBase as RegularizerPlugin]).gradients({ model: deterministic.model, batch: data, random: new Random(1) });
    expect(result.fused).toBe(false);
    expect(deterministic.calls).toEqual(['frozen-stats', 'train', 'frozen-stats']); // decided up front: no base pass thrown away
    expect(tf.memory().numTensors - before).toBe(1 + deterministic.model.trainableVariables.length); // value + grads only
    expect(Array.from(deterministic.runningMean.dataSync())).toEqual(Array.from(reference.runningMean.dataSync())); // updated once
    expect(result.value.dataSync()[0]).toBeCloseTo(slow.value.dataSync()[0]!, 5);
    const mixing: RegularizerPlugin = { name: 'mix', stage: 'batch-transform', transformBatch: (b) => ({ inputs: tf.reverse(b.inputs, 0), targets: b.targets }) };
    const withTransform = composeRegularizers([directionEntropy(1, 1), mixing]).gradients({ model: deterministic.model, batch: data, random: new Random(1) });
    expect([withTransform.fused, withTransform.fusion]).toEqual([false, 'plain']);
    expect(errorField(() => composeRegularizers([{ ...readsBase, readsBase: 'yes' } as never]), ConfigError)).toBe('stack[0].readsBase');
    tf.dispose([slow.value, result.value, withTransform.value, ...Object.values(slow.grads), ...Object.values(result.grads), ...Object.values(withTransform.grads), data.inputs, data.labels]);
    reference.dispose();
    deterministic.dispose();
  });

  it('refuses an undeclared read of context.base with a ConfigError naming the plugin, on either path, leaking nothing', () => {
    const data = batch();
    const models = [batchNormModel(false), batchNormModel(undefined)];
    models[0]!.model.trainableVariables.forEach((v, i) => v.assign(models[1]!.model.trainableVariables[i]!));
    const passesBeforePrepare: number[] = [];
    for (const { model, calls } of models) {
      const undeclared: RegularizerPlugin<{ unused: tf.Tensor }> = {
        name: 'undeclared',
        stage: 'loss-term',
        prepare: () => {
          passesBeforePrepare.push(calls.length);
          return { unused: tf.scalar(0) };
        },
        loss: (context) => ({ value: tf.mul(0.1, meanEntropy(context.base.logits)) as tf.Scalar }),
      };
      const stack = composeRegularizers([undeclared as RegularizerPlugin]);
      expect(errorField(() => stack.gradients({ model, batch: data, random: new Random(1) }), ConfigError)).toBe('undeclared.readsBase');
      const optimizer = tf.train.sgd(0.1);
      const before = tf.memory().numTensors;
      expect(() => stack.gradients({ model, batch: data, random: new Random(1) })).toThrow(/add `readsBase: true` to 'undeclared'/);
      expect(() => stack.minimize(optimizer, { model, batch: data, random: new Random(1) })).toThrow(ConfigError);
      expect(tf.memory().numTensors).toBe(before);
      optimizer.dispose();
    }
    // The deterministic model took the fused path (each prepare ran after that step's base pass), the
    // other the plain one; each failed step updated the running statistics once, in its base pass.
    expect(passesBeforePrepare).toEqual([1, 2, 3, 0, 1, 2]);
    expect(Array.from(models[0]!.runningMean.dataSync())).toEqual(Array.from(models[1]!.runningMean.dataSync()));
    tf.dispose([data.inputs, data.labels]);
    models.forEach(({ dispose }) => dispose());
  });

  it('takes one snapshot of the running statistics per fused step, and puts them back only for a prepare that reads them', () => {
    const data = batch();
    for (const mode of ['frozen-stats', 'eval'] as const) {
      const plain = batchNormModel(undefined);
      const fused = batchNormModel(false);
      fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
      for (const { runningMean } of [plain, fused]) runningMean.assign(tf.tensor1d([0.5, -0.5, 1, 0, 2]));
      const attack: RegularizerPlugin<{ moved: tf.Tensor }> = {
        name: 'attack',
        stage: 'loss-term',
        prepare: ({ clean, inputGradient }) => ({ moved: tf.add(clean.inputs, inputGradient({ at: 'clean', reduction: 'sum', mode }).gradient) }),
        loss: (context, { moved }) => ({ value: meanEntropy(context.forward(moved, mode).logits) }),
      };
      const slow = composeRegularizers([attack as RegularizerPlugin]).gradients({ model: plain.model, batch: data, random: new Random(1) });
      const assigns = vi.spyOn(fused.runningMean, 'assign');
      const fast = composeRegularizers([attack as RegularizerPlugin]).gradients({ model: fused.model, batch: data, random: new Random(1) });
      expect(fast.fused).toBe(true);
      // The model's own update in the base pass, plus the earlier values in and the updated ones back
      // out only when the prepare runs the model in eval mode.
      expect(assigns).toHaveBeenCalledTimes(mode === 'eval' ? 3 : 1);
      assigns.mockRestore();
      expect(fast.terms.attack).toBeCloseTo(slow.terms.attack!, 5);
      expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
      tf.dispose([slow.value, fast.value, ...Object.values(slow.grads), ...Object.values(fast.grads)]);
      plain.dispose();
      fused.dispose();
    }
    tf.dispose([data.inputs, data.labels]);
  });

  it('leaks nothing over repeated fused steps', () => {
    const data = batch();
    const { model, dispose } = batchNormModel(false);
    const stack = composeRegularizers([directionEntropy(1, 0.2)]);
    const counts: number[] = [];
    for (let i = 0; i < 4; i++) {
      const { value, grads, fused } = stack.gradients({ model, batch: data, random: new Random(i) });
      expect(fused).toBe(true);
      tf.dispose([value, ...Object.values(grads)]);
      counts.push(tf.memory().numTensors);
    }
    expect(new Set(counts).size).toBe(1);
    tf.dispose([data.inputs, data.labels]);
    dispose();
  });
});

/** Label smoothing as the label-smoothing package does it: y·(1 − ε) + ε/K, K = 3. */
const smoothing = (epsilon: number): RegularizerPlugin => ({
  name: 'smooth',
  stage: 'target-transform',
  transformTargets: (targets) => tf.add(tf.mul(targets, 1 - epsilon), epsilon / 3) as tf.Tensor2D,
});

/** A second view that depends on the inputs and on the step's generator (a flip and a drawn shift). */
const flipAndShift = (inputs: tf.Tensor, random: Random) => tf.add(tf.reverse(inputs, 2), 0.2 * random.uniform() - 0.1);

/** FGSM as adversarial training's one-step attack, written here for the same reason as `directionEntropy`. */
function signAttack(epsilon: number, weight: number): RegularizerPlugin<{ moved: tf.Tensor }> {
  return {
    name: 'fgsm-like',
    stage: 'generated-loss',
    prepare: ({ clean, inputGradient }) => ({ moved: tf.add(clean.inputs, tf.mul(epsilon, tf.sign(inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient))) }),
    loss: (context, { moved }) => {
      const logits = context.forward(moved, 'frozen-stats').logits;
      const targets = tf.oneHot(context.clean.labels, 3);
      return { value: tf.neg(tf.mean(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), -1))) as tf.Scalar, mixWeight: weight };
    },
  };
}

describe('stack.gradients: the fused base pass with the two-view base loss', () => {
  // Observed on the test backend: gradients within 1.1e-7 (relative, whole tensors), terms within 3e-8,
  // the direction and the running statistics bit for bit.
  for (const [name, plugin, term] of [
    ['RCAD', directionEntropy(0.8, 0.5), 'rcad-like'],
    ['FGSM', signAttack(0.05, 0.4), 'fgsm-like'],
  ] as const) {
    it(`${name}: serves the direction from the clean view, with the plain path's gradients, terms and running statistics`, () => {
      const data = batch();
      const plain = batchNormModel(undefined);
      const fused = batchNormModel(false);
      fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
      for (const { runningMean } of [plain, fused]) runningMean.assign(tf.tensor1d([0.5, -0.5, 1, 0, 2]));
      const input = { batch: data, baseLoss: 'two-view' as const, augment: flipAndShift };
      const slow = composeRegularizers([plugin as RegularizerPlugin]).gradients({ ...input, model: plain.model, random: new Random(1) });
      const fast = composeRegularizers([plugin as RegularizerPlugin]).gradients({ ...input, model: fused.model, random: new Random(1) });
      expect([slow.fused, fast.fused]).toEqual([false, true]);
      // Plain: the direction's pass, the two views, the plugin's pass. Fused: the direction's pass is gone.
      expect(plain.calls).toEqual(['frozen-stats', 'train', 'train', 'frozen-stats']);
      expect(fused.calls).toEqual(['train', 'train', 'frozen-stats']);
      for (const key of ['base', term, 'total']) expect(Math.abs(fast.terms[key]! - slow.terms[key]!)).toBeLessThan(1e-6 * Math.max(1, Math.abs(slow.terms[key]!)));
      expect(Math.abs(fast.value.dataSync()[0]! - slow.value.dataSync()[0]!)).toBeLessThan(1e-6);
      expect(fusedGradientError(slow, fast, plain, fused)).toBeLessThan(1e-6);
      // Both views updated the running statistics, in the same order: the same values to the bit.
      expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
      expect(Array.from(fused.runningMean.dataSync())).not.toEqual([0.5, -0.5, 1, 0, 2]);
      disposeRuns(slow, fast, data, plain, fused);
    });
  }

  it('takes the two-view loss’s clean view as ∇x: twice the base pass’s input gradient, also in the mean reduction', () => {
    const data = batch();
    const seen: Record<string, number[]> = {};
    const recorder = (path: string): RegularizerPlugin<{ unused: tf.Tensor }> => ({
      name: 'recorder',
      stage: 'loss-term',
      prepare: ({ inputGradient }) => {
        const { gradient, loss } = inputGradient({ at: 'clean', reduction: 'mean', mode: 'frozen-stats' });
        seen[path] = [...Array.from(gradient.dataSync()), loss.dataSync()[0]!];
        return { unused: tf.scalar(0) };
      },
      loss: (context) => ({ value: tf.mul(0.1, meanEntropy(context.forward(context.clean.inputs, 'frozen-stats').logits)) as tf.Scalar }),
    });
    const plain = batchNormModel(undefined);
    const fused = batchNormModel(false);
    fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
    const input = { batch: data, baseLoss: 'two-view' as const, augment: flipAndShift };
    const slow = composeRegularizers([recorder('plain') as RegularizerPlugin]).gradients({ ...input, model: plain.model, random: new Random(2) });
    const fast = composeRegularizers([recorder('fused') as RegularizerPlugin]).gradients({ ...input, model: fused.model, random: new Random(2) });
    expect(fast.fused).toBe(true);
    const difference = Math.max(...seen.plain!.map((value, i) => Math.abs(value - seen.fused![i]!)));
    const scale = Math.max(...seen.plain!.map(Math.abs));
    expect(difference / scale).toBeLessThan(1e-6);
    disposeRuns(slow, fast, data, plain, fused);
  });

  it('never fuses two views with mixup (with or without label smoothing), nor without an augment, nor one augmented view', () => {
    const data = batch();
    const { model, calls, dispose } = batchNormModel(false);
    const mixing: RegularizerPlugin = { name: 'mix', stage: 'batch-transform', transformBatch: (b) => ({ inputs: tf.reverse(b.inputs, 0), targets: b.targets }) };
    const twoView = { model, batch: data, baseLoss: 'two-view' as const, augment: flipAndShift };
    for (const stack of [[directionEntropy(1, 0.5), mixing], [directionEntropy(1, 0.5), smoothing(0.1), mixing]]) {
      calls.length = 0;
      const result = composeRegularizers(stack).gradients({ ...twoView, random: new Random(1) });
      expect([result.fused, result.fusion]).toEqual([false, 'plain']);
      expect(calls).toEqual(['frozen-stats', 'train', 'train', 'frozen-stats']);
      tf.dispose([result.value, ...Object.values(result.grads)]);
    }
    const single = composeRegularizers([directionEntropy(1, 0.5)]).gradients({ model, batch: data, augment: flipAndShift, random: new Random(1) });
    expect(single.fused).toBe(false);
    tf.dispose([single.value, ...Object.values(single.grads)]);
    expect(errorField(() => composeRegularizers([directionEntropy(1, 0.5)]).gradients({ model, batch: data, baseLoss: 'two-view', random: new Random(1) }), ConfigError)).toBe('baseLoss');
    tf.dispose([data.inputs, data.labels]);
    dispose();
  });

  it('leaks nothing over repeated fused two-view steps, nor when the augment hands back its input', () => {
    const data = batch();
    const { model, dispose } = batchNormModel(false);
    const stack = composeRegularizers([directionEntropy(1, 0.2)]);
    for (const augment of [flipAndShift, (inputs: tf.Tensor) => inputs]) {
      const counts: number[] = [];
      for (let i = 0; i < 4; i++) {
        const { value, grads, fused } = stack.gradients({ model, batch: data, baseLoss: 'two-view', augment, random: new Random(i) });
        expect(fused).toBe(true);
        tf.dispose([value, ...Object.values(grads)]);
        counts.push(tf.memory().numTensors);
      }
      expect(new Set(counts).size).toBe(1);
    }
    // A prepare that throws after the base pass: the second view, the clean view's loss and the seeded gradients go too.
    const failing = failingAfterInputGradient();
    const before = tf.memory().numTensors;
    expect(() => composeRegularizers([failing as RegularizerPlugin]).gradients({ model, batch: data, baseLoss: 'two-view', augment: flipAndShift, random: new Random(1) })).toThrow('on purpose');
    expect(tf.memory().numTensors).toBe(before);
    expect(data.inputs.isDisposed).toBe(false);
    tf.dispose([data.inputs, data.labels]);
    dispose();
  });
});

/** Records the clean input gradient (sum and mean) its prepare receives, then adds RCAD's entropy term on the direction. */
function directionRecorder(seen: number[][]): RegularizerPlugin<{ perturbed: tf.Tensor }> {
  return {
    name: 'rcad-like',
    stage: 'loss-term',
    prepare: ({ clean, inputGradient }) => {
      const sum = inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' });
      const mean = inputGradient({ at: 'clean', reduction: 'mean', mode: 'frozen-stats' });
      seen.push(Array.from(sum.gradient.dataSync()), [sum.loss.dataSync()[0]!], Array.from(mean.gradient.dataSync()), [mean.loss.dataSync()[0]!], Array.from(sum.logits.dataSync()));
      const norm = tf.add(tf.sqrt(tf.sum(tf.square(sum.gradient), [1, 2], true)), 1e-10);
      return { perturbed: tf.add(clean.inputs, tf.mul(0.8, tf.div(sum.gradient, norm))) };
    },
    loss: (context, { perturbed }) => ({
      value: tf.mul(0.5, tf.sub(Math.log(3), meanEntropy(context.forward(perturbed, 'frozen-stats').logits))) as tf.Scalar,
    }),
  };
}

describe('stack.gradients: transformed targets, the direction from the base pass’s forward', () => {
  // The direction (the sum's gradient, loss and logits) and the running statistics to the bit; the
  // mean's gradient (the sum's / B), the terms and the weight gradients to float rounding.
  for (const views of ['single', 'two-view'] as const) {
    it(`${views}: one forward of the clean batch, a second backward for ∇x of the plain cross-entropy, the plain path's numbers`, () => {
      const data = batch();
      const plain = batchNormModel(undefined);
      const fused = batchNormModel(false);
      fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
      for (const { runningMean } of [plain, fused]) runningMean.assign(tf.tensor1d([0.5, -0.5, 1, 0, 2]));
      const input = views === 'two-view' ? { batch: data, baseLoss: 'two-view' as const, augment: flipAndShift } : { batch: data };
      const seen = { plain: [] as number[][], fused: [] as number[][] };
      const slow = composeRegularizers([smoothing(0.3), directionRecorder(seen.plain) as RegularizerPlugin]).gradients({ ...input, model: plain.model, random: new Random(1) });
      const fast = composeRegularizers([smoothing(0.3), directionRecorder(seen.fused) as RegularizerPlugin]).gradients({ ...input, model: fused.model, random: new Random(1) });
      expect([slow.fusion, fast.fusion]).toEqual(['plain', 'base-forward']);
      expect([slow.fused, fast.fused]).toEqual([false, true]);
      // Plain: the direction's passes (the sum's and the mean's), the base pass (one or two views), the
      // plugin's pass. Fused: the direction's passes are gone.
      const basePass = views === 'two-view' ? ['train', 'train'] : ['train'];
      expect(plain.calls).toEqual(['frozen-stats', 'frozen-stats', ...basePass, 'frozen-stats']);
      expect(fused.calls).toEqual([...basePass, 'frozen-stats']);
      // The direction: the sum's gradient, loss and logits to the bit; the mean's to float rounding.
      const [sumGradient, sumLoss, meanGradient, meanLoss, logits] = seen.fused;
      expect(sumGradient).toEqual(seen.plain[0]);
      expect(sumLoss).toEqual(seen.plain[1]);
      expect(logits).toEqual(seen.plain[4]);
      const scale = Math.max(...seen.plain[2]!.map(Math.abs));
      expect(Math.max(...meanGradient!.map((value, i) => Math.abs(value - seen.plain[2]![i]!))) / scale).toBeLessThan(1e-6);
      expect(meanLoss![0]).toBeCloseTo(seen.plain[3]![0]!, 6);
      // The base loss is the smoothed one (not the plain cross-entropy the direction used).
      expect(Math.abs(fast.terms.base! - sumLoss![0]! / 10)).toBeGreaterThan(1e-3);
      for (const key of ['base', 'rcad-like', 'total']) expect(Math.abs(fast.terms[key]! - slow.terms[key]!)).toBeLessThan(1e-6 * Math.max(1, Math.abs(slow.terms[key]!)));
      expect(Math.abs(fast.value.dataSync()[0]! - slow.value.dataSync()[0]!)).toBeLessThan(1e-6);
      expect(fusedGradientError(slow, fast, plain, fused)).toBeLessThan(1e-6);
      expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
      expect(Array.from(fused.runningMean.dataSync())).not.toEqual([0.5, -0.5, 1, 0, 2]);
      disposeRuns(slow, fast, data, plain, fused);
    });
  }

  it('mixes a generated loss (FGSM) with the smoothed base loss as the plain path does', () => {
    const data = batch();
    const plain = batchNormModel(undefined);
    const fused = batchNormModel(false);
    fused.model.trainableVariables.forEach((v, i) => v.assign(plain.model.trainableVariables[i]!));
    const input = { batch: data, baseLoss: 'two-view' as const, augment: flipAndShift };
    const slow = composeRegularizers([smoothing(0.2), signAttack(0.05, 0.4) as RegularizerPlugin]).gradients({ ...input, model: plain.model, random: new Random(3) });
    const fast = composeRegularizers([smoothing(0.2), signAttack(0.05, 0.4) as RegularizerPlugin]).gradients({ ...input, model: fused.model, random: new Random(3) });
    expect(fast.fusion).toBe('base-forward');
    for (const key of ['base', 'fgsm-like', 'total']) expect(Math.abs(fast.terms[key]! - slow.terms[key]!)).toBeLessThan(1e-6);
    expect(fusedGradientError(slow, fast, plain, fused)).toBeLessThan(1e-6);
    expect(Array.from(fused.runningMean.dataSync())).toEqual(Array.from(plain.runningMean.dataSync()));
    disposeRuns(slow, fast, data, plain, fused);
  });

  it('keeps the plain path for a model that may be stochastic, and for label smoothing with a batch transform', () => {
    const data = batch();
    const unknown = batchNormModel(undefined);
    const deterministic = batchNormModel(false);
    const mixing: RegularizerPlugin = { name: 'mix', stage: 'batch-transform', transformBatch: (b) => ({ inputs: tf.reverse(b.inputs, 0), targets: b.targets }) };
    const results = [
      composeRegularizers([smoothing(0.1), directionEntropy(1, 0.5)]).gradients({ model: unknown.model, batch: data, random: new Random(1) }),
      composeRegularizers([smoothing(0.1), mixing, directionEntropy(1, 0.5)]).gradients({ model: deterministic.model, batch: data, random: new Random(1) }),
    ];
    expect(results.map((result) => result.fusion)).toEqual(['plain', 'plain']);
    expect(unknown.calls).toEqual(['frozen-stats', 'train', 'frozen-stats']);
    expect(deterministic.calls).toEqual(['frozen-stats', 'train', 'frozen-stats']);
    tf.dispose([...results.flatMap((result) => [result.value, ...Object.values(result.grads)]), data.inputs, data.labels]);
    unknown.dispose();
    deterministic.dispose();
  });

  it('leaks nothing over repeated steps, nor when a prepare or the model throws after or during the recorded forward', () => {
    const data = batch();
    const { model, dispose } = batchNormModel(false);
    const stack = composeRegularizers([smoothing(0.1), directionEntropy(1, 0.2)]);
    for (const input of [{}, { baseLoss: 'two-view' as const, augment: flipAndShift }]) {
      const counts: number[] = [];
      for (let i = 0; i < 4; i++) {
        const { value, grads, fusion } = stack.gradients({ model, batch: data, ...input, random: new Random(i) });
        expect(fusion).toBe('base-forward');
        tf.dispose([value, ...Object.values(grads)]);
        counts.push(tf.memory().numTensors);
      }
      expect(new Set(counts).size).toBe(1);
    }
    const failing = failingAfterInputGradient();
    const before = tf.memory().numTensors;
    expect(() => composeRegularizers([smoothing(0.1), failing as RegularizerPlugin]).gradients({ model, batch: data, baseLoss: 'two-view', augment: flipAndShift, random: new Random(1) })).toThrow('on purpose');
    expect(tf.memory().numTensors).toBe(before);
    // A model that throws inside the recorded forward (after some of its ops were taped).
    let throwNext = true;
    const flaky = classifierFromFunction({
      numClasses: 3,
      trainableVariables: model.trainableVariables,
      stochastic: false,
      apply: (inputs, options) => {
        const logits = model.apply(inputs, options).logits;
        if (throwNext) {
          tf.dispose(logits);
          throw new Error('model failed');
        }
        return logits;
      },
    });
    expect(() => stack.gradients({ model: flaky, batch: data, random: new Random(1) })).toThrow('model failed');
    expect(tf.memory().numTensors).toBe(before);
    expect(tf.engine().state.gradientDepth).toBe(0);
    throwNext = false;
    const after = stack.gradients({ model: flaky, batch: data, random: new Random(1) });
    expect(after.fusion).toBe('base-forward');
    tf.dispose([after.value, ...Object.values(after.grads)]);
    expect(tf.memory().numTensors).toBe(before);
    expect(data.inputs.isDisposed).toBe(false);
    tf.dispose([data.inputs, data.labels]);
    dispose();
  });
});
