import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import type { Tensor2D } from '@tensorflow/tfjs-core';
import type { RegularizerPlugin, SoftBatch } from './index.js';
import { ConfigError, DataError, Random, composeRegularizers, crossEntropy, meanEntropy, schedules } from './index.js';
import { errorField, linearClassifier, minimizeSteps, relativeError } from './testing.js';

/** A minimal RCAD-like term: entropy at x + α·normalised ∇x of the summed clean CE. */
function directionTerm(alpha: number, lambda: number, name = 'direction'): RegularizerPlugin<{ perturbed: tf.Tensor }> {
  return {
    name,
    stage: 'loss-term',
    prepare(context) {
      const { gradient } = context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' });
      const norm = tf.add(tf.sqrt(tf.sum(tf.square(gradient), [1], true)), 1e-10);
      return { perturbed: tf.add(context.clean.inputs, tf.mul(alpha, tf.div(gradient, norm))) };
    },
    loss(context, state) {
      const entropy = meanEntropy(context.forward(state.perturbed, 'frozen-stats').logits);
      return { value: tf.mul(lambda, tf.sub(Math.log(context.numClasses), entropy)) as tf.Scalar };
    },
  };
}

function smoothing(epsilon: number, name = 'smoothing'): RegularizerPlugin {
  return {
    name,
    stage: 'target-transform',
    exclusiveGroup: 'target-smoothing',
    transformTargets: (targets, context) => tf.add(tf.mul(targets, 1 - epsilon), epsilon / context.numClasses) as Tensor2D,
  };
}

function reverseMix(name = 'reverse-mix'): RegularizerPlugin {
  // Mixes each example half-and-half with the batch in reverse order (a deterministic mixup).
  return {
    name,
    stage: 'batch-transform',
    exclusiveGroup: 'batch-mixing',
    transformBatch: (batch: SoftBatch) => ({
      inputs: tf.mul(0.5, tf.add(batch.inputs, tf.reverse(batch.inputs, 0))),
      targets: tf.mul(0.5, tf.add(batch.targets, tf.reverse(batch.targets, 0))) as Tensor2D,
    }),
  };
}

function makeBatch(size = 6, features = 5, numClasses = 3, seed = 11) {
  return {
    inputs: tf.randomUniform([size, features], 0, 1, 'float32', seed),
    labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % numClasses), 'int32'),
  };
}

describe('composeRegularizers', () => {
  it('orders plugins by stage, keeping the given order within a stage', () => {
    const stack = composeRegularizers([directionTerm(1, 0.2), smoothing(0.1), reverseMix()]);
    expect(stack.plugins.map((p) => p.name)).toEqual(['reverse-mix', 'smoothing', 'direction']);
    expect(stack.describe()).toBe('reverse-mix → smoothing → base → direction');
  });

  it('rejects stacks that make no sense, naming what is wrong', () => {
    expect(() => composeRegularizers([smoothing(0.1, 'a'), smoothing(0.2, 'b')])).toThrow(/'a' and 'b' cannot be stacked.*target-smoothing/);
    expect(() => composeRegularizers([reverseMix('m1'), reverseMix('m2')])).toThrow(/switch probability/);
    expect(() => composeRegularizers([directionTerm(1, 1), directionTerm(1, 1)])).toThrow(/named 'direction'/);
    expect(() => composeRegularizers([{ name: 'x', stage: 'loss-term' }])).toThrow(ConfigError);
    expect(() => composeRegularizers([{ name: 'x', stage: 'sideways' as never, loss: () => ({ value: tf.scalar(0) }) }])).toThrow(/stack\[0\]\.stage/);
    expect(() => composeRegularizers([{ name: 'base', stage: 'loss-term', loss: () => ({ value: tf.scalar(0) }) }])).toThrow(/reserved/);
  });
});

describe('composeRegularizers: declared mix weights', () => {
  const generated = (name: string, mixWeight: RegularizerPlugin['mixWeight']): RegularizerPlugin => ({
    name,
    stage: 'generated-loss',
    mixWeight,
    loss: () => ({ value: tf.scalar(0), mixWeight: 0 }),
  });

  it('rejects weights that can add up to more than 1, naming the plugins and when', () => {
    expect(() => composeRegularizers([generated('a', 0.7), generated('b', 0.6)])).toThrow(/stack: .*add up to 1\.3 > 1 \(a 0\.7 \+ b 0\.6\)/);
    expect(composeRegularizers([generated('a', 0.5), generated('b', 0.5)]).plugins).toHaveLength(2);
    // A ramp reaching 0.6 at epoch 10 beside a constant 0.5.
    expect(() => composeRegularizers([generated('a', schedules.linear(0, 0.6, 0, 10)), generated('b', 0.5)])).toThrow(/1\.1 > 1 at epoch 10 \(a 0\.6 \+ b 0\.5\)/);
    // Step schedules overlap between epochs 3 and 5 only.
    const early = schedules.multiStep(0.9, [5], 0.1);
    const late = { type: 'step', values: [0, 0.5], boundaries: [3] } as const;
    expect(() => composeRegularizers([generated('a', early), generated('b', late)])).toThrow(/1\.4 > 1 at epoch 3 \(a 0\.9 \+ b 0\.5\)/);
    // On the step clock too.
    const steps = (from: number, to: number) => schedules.linear(from, to, 100, 200, 'step');
    expect(() => composeRegularizers([generated('a', steps(0.1, 0.5)), generated('b', steps(0.2, 0.6))])).toThrow(/1\.1 > 1 at step 200/);
  });

  it('accepts weights that trade off, and leaves what it cannot know to the step', () => {
    // One ramps down while the other ramps up: the total stays 1.
    expect(() => composeRegularizers([generated('a', schedules.linear(0.8, 0.2, 0, 10)), generated('b', schedules.linear(0.2, 0.8, 0, 10))])).not.toThrow();
    // A function is only known when a step reads it.
    expect(() => composeRegularizers([generated('a', () => 0.9), generated('b', 0.9)])).not.toThrow();
    // Two clocks: only the smallest values are sure to meet (0.3 + 0.4 ≤ 1 accepted; 0.7 + 0.4 rejected).
    const byEpoch = (from: number) => schedules.linear(from, 0.9, 0, 10);
    const byStep = schedules.linear(0.4, 0.4, 0, 10, 'step');
    expect(() => composeRegularizers([generated('a', byEpoch(0.3)), generated('b', byStep)])).not.toThrow();
    expect(() => composeRegularizers([generated('a', byEpoch(0.7)), generated('b', byStep)])).toThrow(/add up to 1\.1 > 1 \(a 0\.7 \+ b 0\.4\)/);
    // A declared weight outside [0, 1] is named.
    expect(errorField(() => composeRegularizers([generated('a', 1.5)]), ConfigError)).toBe('a.mixWeight');
    expect(errorField(() => composeRegularizers([generated('a', { type: 'constant', value: -0.1 })]), ConfigError)).toBe('a.mixWeight.value');
  });
});

describe('a prepared step', () => {
  it('gives the weight gradients of the loss with the direction held constant, computed outside the tape', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const batch = makeBatch();
    const alpha = 1.5;
    const lambda = 0.4;
    const step = composeRegularizers([directionTerm(alpha, lambda)]).prepare({ model, batch, random: new Random(1) });
    const { value, grads } = step.gradients();

    // By hand: the direction d from a separate tf.grad, then one tape over the weights.
    const variables = model.trainableVariables as tf.Variable[];
    const logitsOf = (x: tf.Tensor) => model.apply(x, { mode: 'frozen-stats' }).logits;
    const direction = tf.tidy(() => {
      const gradient = tf.grad((x: tf.Tensor) => crossEntropy(logitsOf(x), batch.labels, 'sum'))(batch.inputs);
      return tf.div(gradient, tf.add(tf.sqrt(tf.sum(tf.square(gradient), 1, true)), 1e-10));
    });
    const perturbed = tf.add(batch.inputs, tf.mul(alpha, direction));
    const manualLoss = () =>
      tf.add(crossEntropy(logitsOf(batch.inputs), batch.labels), tf.mul(lambda, tf.sub(Math.log(3), meanEntropy(logitsOf(perturbed))))) as tf.Scalar;
    const manual = tf.variableGrads(manualLoss, variables);
    expect(Math.abs(value.dataSync()[0]! - manual.value.dataSync()[0]!)).toBeLessThan(1e-6);
    for (const variable of variables) expect(relativeError(grads[variable.name]!.dataSync(), manual.grads[variable.name]!.dataSync())).toBeLessThan(1e-6);

    // The trap the two phases avoid: computing d inside the tape lets gradient flow through it.
    const taped = tf.variableGrads(() => {
      const gradient = tf.grad((x: tf.Tensor) => crossEntropy(logitsOf(x), batch.labels, 'sum'))(batch.inputs);
      const d = tf.div(gradient, tf.add(tf.sqrt(tf.sum(tf.square(gradient), 1, true)), 1e-10));
      return tf.add(crossEntropy(logitsOf(batch.inputs), batch.labels), tf.mul(lambda, tf.sub(Math.log(3), meanEntropy(logitsOf(tf.add(batch.inputs, tf.mul(alpha, d))))))) as tf.Scalar;
    }, variables);
    expect(relativeError(taped.grads[variables[0]!.name]!.dataSync(), manual.grads[variables[0]!.name]!.dataSync())).toBeGreaterThan(1e-3);

    const terms = step.terms();
    expect(terms.total).toBeCloseTo(value.dataSync()[0]!, 5);
    expect(terms.base! + terms.direction!).toBeCloseTo(terms.total!, 6);
    tf.dispose([value, manual.value, taped.value, direction, perturbed, batch.inputs, batch.labels]);
    tf.dispose(Object.values(grads));
    tf.dispose(Object.values(manual.grads));
    tf.dispose(Object.values(taped.grads));
    step.dispose();
    model.dispose();
  });

  it('computes an input gradient once per distinct request and shares it', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const batch = makeBatch();
    const shared = composeRegularizers([directionTerm(1, 0.1, 'first'), directionTerm(2, 0.1, 'second')]);
    shared.prepare({ model, batch, random: new Random(1) }).dispose();
    expect(model.calls.filter((mode) => mode === 'frozen-stats')).toHaveLength(1);

    model.calls.length = 0;
    const other: RegularizerPlugin = {
      name: 'mean-gradient',
      stage: 'loss-term',
      prepare: (context) => {
        context.inputGradient({ at: 'clean', reduction: 'mean', mode: 'frozen-stats' });
        context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'eval' });
        return {};
      },
      loss: () => ({ value: tf.scalar(0) }),
    };
    composeRegularizers([directionTerm(1, 0.1), other]).prepare({ model, batch, random: new Random(1) }).dispose();
    expect(model.calls).toEqual(['frozen-stats', 'frozen-stats', 'eval']);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('mixes generated-input losses with the base loss as (1 − Σw)·base + Σ w·L', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const batch = makeBatch();
    const shifted: RegularizerPlugin<{ shiftedInputs: tf.Tensor }> = {
      name: 'shifted',
      stage: 'generated-loss',
      prepare: (context) => ({ shiftedInputs: tf.add(context.clean.inputs, 0.25) }),
      loss: (context, state) => ({
        value: crossEntropy(context.forward(state.shiftedInputs, 'frozen-stats').logits, context.clean.labels),
        mixWeight: 0.3,
      }),
    };
    const step = composeRegularizers([shifted as RegularizerPlugin]).prepare({ model, batch, random: new Random(1) });
    const total = step.loss();
    const expected = tf.tidy(() => {
      const clean = crossEntropy(model.apply(batch.inputs, { mode: 'train' }).logits, batch.labels);
      const moved = crossEntropy(model.apply(tf.add(batch.inputs, 0.25), { mode: 'train' }).logits, batch.labels);
      return 0.7 * clean.dataSync()[0]! + 0.3 * moved.dataSync()[0]!;
    });
    expect(total.dataSync()[0]).toBeCloseTo(expected, 5);
    expect(step.terms().total).toBeCloseTo(expected, 5);

    const again: RegularizerPlugin<{ shiftedInputs: tf.Tensor }> = { ...shifted, name: 'again', loss: (c, s) => ({ ...shifted.loss!(c, s), mixWeight: 0.8 }) };
    const tooMuch = composeRegularizers([shifted, again] as RegularizerPlugin[]);
    const bad = tooMuch.prepare({ model, batch, random: new Random(1) });
    expect(() => bad.loss()).toThrow(/add up to 1\.1/);
    tf.dispose([total, batch.inputs, batch.labels]);
    step.dispose();
    bad.dispose();
    model.dispose();
  });

  it('smooths targets after mixing and feeds them to the base loss; two-view averages both views', () => {
    const model = linearClassifier({ inputSize: 4, numClasses: 2 });
    const batch = { inputs: tf.tensor2d([[1, 0, 0, 0], [0, 1, 0, 0]]), labels: tf.tensor1d([0, 1], 'int32') };
    const step = composeRegularizers([smoothing(0.2), reverseMix()]).prepare({ model, batch, random: new Random(1) });
    // Mixed targets are [0.5, 0.5] for both rows; smoothing leaves a uniform row as it is.
    expect(Array.from(step.batch.targets.dataSync())).toEqual([0.5, 0.5, 0.5, 0.5]);
    step.dispose();
    const onlySmoothing = composeRegularizers([smoothing(0.2)]).prepare({ model, batch, random: new Random(1) });
    expect(Array.from(onlySmoothing.batch.targets.dataSync()).map((v) => Number(v.toFixed(6)))).toEqual([0.9, 0.1, 0.1, 0.9]);
    onlySmoothing.dispose();

    const flip = (inputs: tf.Tensor) => tf.reverse(inputs, 1);
    const twoView = composeRegularizers([]).prepare({ model, batch, random: new Random(1), augment: flip, baseLoss: 'two-view' });
    const expected = tf.tidy(() => {
      const a = crossEntropy(model.apply(batch.inputs, { mode: 'train' }).logits, batch.labels).dataSync()[0]!;
      const b = crossEntropy(model.apply(flip(batch.inputs), { mode: 'train' }).logits, batch.labels).dataSync()[0]!;
      return (a + b) / 2;
    });
    const value = twoView.loss();
    expect(value.dataSync()[0]).toBeCloseTo(expected, 6);
    value.dispose();
    twoView.dispose();
    expect(() => composeRegularizers([]).prepare({ model, batch, random: new Random(1), baseLoss: 'two-view' })).toThrow(/baseLoss/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('serves optimizer.minimize in a user loop and leaks no tensor over many steps', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const optimizer = tf.train.sgd(0.5);
    const stack = composeRegularizers([reverseMix(), smoothing(0.1), directionTerm(1, 0.2)]);
    const batch = makeBatch();
    const { tensorCounts, terms } = minimizeSteps(stack, { model, batch, random: new Random(5) }, 6, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    expect(terms.at(-1)!.total!).toBeLessThan(terms[0]!.total!);
    tf.dispose([batch.inputs, batch.labels]);
    optimizer.dispose();
    model.dispose();
  });

  it('throws a ConfigError naming the step once disposed, leaving no tensor behind', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const batch = makeBatch();
    const before = tf.memory().numTensors;
    const step = composeRegularizers([directionTerm(1, 0.2)]).prepare({ model, batch, random: new Random(1) });
    step.dispose();
    step.dispose(); // twice is harmless
    for (const use of [() => step.loss(), () => step.gradients(), () => step.terms()]) {
      expect(errorField(use, ConfigError)).toBe('step');
    }
    expect(() => step.loss()).toThrow(/step: was disposed; prepare a new step for each update/);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('rejects bad batches with a DataError naming the field', () => {
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const stack = composeRegularizers([]);
    const random = new Random(1);
    const inputs = tf.randomUniform([4, 5]);
    const prepare = (batch: { inputs: tf.Tensor; labels: tf.Tensor1D }) => () => stack.prepare({ model, batch, random });
    expect(prepare({ inputs, labels: tf.tensor1d([0, 1, 2], 'int32') })).toThrow(/batch\.labels: has 3 labels for 4 inputs/);
    expect(prepare({ inputs, labels: tf.tensor1d([0, 1, 3, 0], 'int32') })).toThrow(/batch\.labels: label 3 at index 2/);
    expect(prepare({ inputs, labels: tf.tensor1d([0, 1, -1, 0], 'int32') })).toThrow(DataError);
    expect(prepare({ inputs: tf.tensor2d([[0, NaN, 0, 0, 0], [0, 0, 0, 0, 0]]), labels: tf.tensor1d([0, 1], 'int32') })).toThrow(/batch\.inputs: contains NaN/);
    expect(prepare({ inputs: tf.zeros([0, 5]), labels: tf.tensor1d([], 'int32') })).toThrow(/batch\.inputs: the batch is empty/);
    model.dispose();
  });
});

describe('lossInputGradient', () => {
  it('leaves nothing behind when a caller keeps only the gradient', async () => {
    const { lossInputGradient } = await import('./step.js');
    const model = linearClassifier({ inputSize: 5, numClasses: 3 });
    const batch = makeBatch();
    const targets = tf.cast(tf.oneHot(batch.labels, 3), 'float32') as tf.Tensor2D;
    const before = tf.memory().numTensors;
    const gradient = tf.tidy(() => lossInputGradient(model, batch.inputs, targets, { reduction: 'sum', mode: 'eval' }).gradient);
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(gradient.shape).toEqual([6, 5]);
    tf.dispose([gradient, targets, batch.inputs, batch.labels]);
    model.dispose();
  });
});
