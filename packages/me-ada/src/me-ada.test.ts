import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import {
  ConfigError,
  Random,
  composeRegularizers,
  crossEntropy,
  meanEntropy,
  type ModelMode,
} from '@regstack/regularizer';
import { meAda, type MeAdaOptions } from './index.js';
import { capturePrepared, countingClassifier, minimizeSteps } from '@regstack/regularizer/testing';

const INPUTS = 5;
const CLASSES = 3;

/** Its hidden layer is the penultimate features; counts passes; `eval` shifts the pre-activations. */
const featureModel = (options: { withFeatures?: boolean; seed?: number } = {}) =>
  countingClassifier({ inputSize: INPUTS, numClasses: CLASSES, hiddenUnits: 6, seed: options.seed ?? 1, evalShift: 0.3, withFeatures: options.withFeatures ?? true });
type FeatureModel = ReturnType<typeof featureModel>;

function makeBatch(size = 6, seed = 4) {
  return {
    inputs: tf.randomUniform([size, INPUTS], 0, 1, 'float32', seed),
    labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % CLASSES), 'int32'),
  };
}

/** The ascent objective J by hand: mean CE + β·mean H − γ·mean squared feature distance. */
function objective(model: FeatureModel, inputs: tf.Tensor, labels: tf.Tensor1D, cleanFeatures: tf.Tensor, beta: number, gamma: number, mode: ModelMode = 'eval') {
  const output = model.apply(inputs, { mode });
  return tf.sub(
    tf.add(crossEntropy(output.logits, labels), tf.mul(beta, meanEntropy(output.logits))),
    tf.mul(gamma, tf.mean(tf.square(tf.sub(output.features!, cleanFeatures)))),
  ) as tf.Scalar;
}

/** Runs one step of a stack holding the plugin and returns the generated inputs its prepare made. */
function generate(options: MeAdaOptions, model: FeatureModel, batch: ReturnType<typeof makeBatch>, step = 0) {
  const { plugin, captured } = capturePrepared(meAda(options), (state) => state.generated?.arraySync() as number[][] | undefined);
  composeRegularizers([plugin]).prepare({ model, batch, random: new Random(1), step }).dispose();
  return captured[0];
}

const expectClose = (actual: number[][], expected: number[][], digits = 5) =>
  actual.forEach((row, i) => row.forEach((value, j) => expect(value).toBeCloseTo(expected[i]![j]!, digits)));

describe('meAda', () => {
  it('takes ascent steps x⁺ ← x⁺ + η·∇J, J = CE + β·H − γ·‖z(x⁺) − z(x)‖², as computed by hand', () => {
    const model = featureModel();
    const batch = makeBatch();
    const [eta, beta, gamma] = [3, 0.5, 20];
    const cleanFeatures = tf.tidy(() => model.apply(batch.inputs, { mode: 'eval' }).features!);
    const ascend = (from: tf.Tensor, gammaValue: number) =>
      tf.tidy(() => tf.add(from, tf.mul(eta, tf.grad((x: tf.Tensor) => objective(model, x, batch.labels, cleanFeatures, beta, gammaValue))(from))));

    const oneStep = ascend(batch.inputs, gamma);
    expectClose(generate({ steps: 1, stepSize: eta, beta, gamma, clip: null }, model, batch)!, oneStep.arraySync() as number[][]);
    const twoSteps = ascend(oneStep, gamma);
    expectClose(generate({ steps: 2, stepSize: eta, beta, gamma, clip: null }, model, batch)!, twoSteps.arraySync() as number[][]);
    // The distance term shapes the second step (it has zero gradient at the first).
    const withoutDistance = tf.tidy(() => ascend(oneStep, 0));
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(twoSteps, withoutDistance))).dataSync()[0]!)).toBeGreaterThan(1e-3);
    // So does the entropy term.
    const withoutEntropy = generate({ steps: 1, stepSize: eta, beta: 0, gamma, clip: null }, model, batch)!;
    expect(Math.max(...withoutEntropy.flat().map((v, k) => Math.abs(v - (oneStep.arraySync() as number[][]).flat()[k]!)))).toBeGreaterThan(1e-3);
    // Clipping to the valid range comes once, after the last step.
    const clipped = generate({ steps: 2, stepSize: eta, beta, gamma }, model, batch)!;
    expectClose(clipped, tf.tidy(() => tf.clipByValue(twoSteps, 0, 1).arraySync() as number[][]));
    expect((twoSteps.arraySync() as number[][]).flat().some((v) => v < 0 || v > 1)).toBe(true);
    tf.dispose([cleanFeatures, oneStep, twoSteps, withoutDistance, batch.inputs, batch.labels]);
    model.dispose();
  });

  it('raises the objective over its steps', () => {
    const model = featureModel({ seed: 5 });
    const batch = makeBatch();
    const [beta, gamma] = [1, 1];
    const cleanFeatures = tf.tidy(() => model.apply(batch.inputs, { mode: 'eval' }).features!);
    const valueAt = (inputs: tf.Tensor) => tf.tidy(() => objective(model, inputs, batch.labels, cleanFeatures, beta, gamma).dataSync()[0]!);
    const values = [valueAt(batch.inputs)];
    for (let steps = 1; steps <= 5; steps++) {
      const generated = tf.tensor2d(generate({ steps, stepSize: 1, beta, gamma, clip: null }, model, batch)!);
      values.push(valueAt(generated));
      generated.dispose();
    }
    for (let index = 1; index < values.length; index++) expect(values[index]!).toBeGreaterThan(values[index - 1]!);
    expect(values.at(-1)! - values[0]!).toBeGreaterThan(0.1);
    tf.dispose([cleanFeatures, batch.inputs, batch.labels]);
    model.dispose();
  });

  it('mixes CE(x⁺) with weight w and gives weight gradients that hold x⁺ constant', () => {
    const model = featureModel();
    const batch = makeBatch();
    const weight = 0.4;
    const { plugin, captured } = capturePrepared(meAda({ steps: 2, stepSize: 2, weight }), (state) => tf.clone(state.generated!));
    const step = composeRegularizers([plugin]).prepare({ model, batch, random: new Random(1) });
    const generated = captured[0];
    // The ascent: T_adv passes in the ascent mode, z(x) taken from the first.
    expect(model.calls).toEqual(['eval', 'eval']);
    const variables = model.trainableVariables as tf.Variable[];
    const { value, grads } = step.gradients();
    const manual = tf.variableGrads(
      () =>
        tf.add(
          tf.mul(1 - weight, crossEntropy(model.apply(batch.inputs, { mode: 'train' }).logits, batch.labels)),
          tf.mul(weight, crossEntropy(model.apply(generated!, { mode: 'frozen-stats' }).logits, batch.labels)),
        ) as tf.Scalar,
      variables,
    );
    expect(value.dataSync()[0]).toBeCloseTo(manual.value.dataSync()[0]!, 6);
    for (const variable of variables) {
      const error = tf.tidy(() => tf.norm(tf.sub(grads[variable.name]!, manual.grads[variable.name]!)).dataSync()[0]! / tf.norm(manual.grads[variable.name]!).dataSync()[0]!);
      expect(error).toBeLessThan(1e-5);
    }
    const terms = step.terms();
    expect(terms.total).toBeCloseTo((1 - weight) * terms.base! + weight * terms['me-ada']!, 6);
    tf.dispose([value, manual.value, generated!, batch.inputs, batch.labels, ...Object.values(grads), ...Object.values(manual.grads)]);
    step.dispose();
    model.dispose();
  });

  it('generates only every N steps, costing no pass and weight 0 in between', () => {
    const model = featureModel();
    const batch = makeBatch();
    const stack = composeRegularizers([meAda({ every: 3, steps: 2, ascentMode: 'frozen-stats' })]);
    const random = new Random(1);
    const run = (step: number) => {
      model.calls.length = 0;
      const prepared = stack.prepare({ model, batch, random, step });
      const prepareCalls = [...model.calls];
      const total = prepared.loss();
      const terms = prepared.terms();
      total.dispose();
      prepared.dispose();
      return { prepareCalls, terms };
    };
    const skipped = run(4);
    expect(skipped.prepareCalls).toEqual([]);
    expect(skipped.terms['me-ada']).toBe(0);
    expect(skipped.terms.total).toBeCloseTo(skipped.terms.base!, 7);
    const active = run(6);
    expect(active.prepareCalls).toEqual(['frozen-stats', 'frozen-stats']);
    expect(active.terms.total).toBeCloseTo(0.5 * active.terms.base! + 0.5 * active.terms['me-ada']!, 6);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('trains in a user loop without leaking tensors', () => {
    const model = featureModel();
    const batch = makeBatch();
    const optimizer = tf.train.sgd(0.1);
    const stack = composeRegularizers([meAda({ steps: 3, every: 2 })]);
    const { tensorCounts } = minimizeSteps(stack, { model, batch, random: new Random(3) }, 8, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    optimizer.dispose();
    model.dispose();
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('fails clearly on a model without penultimate features, and on bad options', () => {
    const model = featureModel({ withFeatures: false });
    const batch = makeBatch();
    const stack = composeRegularizers([meAda()]);
    expect(() => stack.prepare({ model, batch, random: new Random(1) })).toThrow(ConfigError);
    expect(() => stack.prepare({ model, batch, random: new Random(1) })).toThrow(/model\.features: ME-ADA needs the model's penultimate features/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();

    expect(() => meAda({ eta: 1 } as never)).toThrow(/meAda\.eta: unknown option/);
    expect(() => meAda({ steps: 0 })).toThrow(/meAda\.steps: must be ≥ 1/);
    expect(() => meAda({ steps: 1.5 })).toThrow(/meAda\.steps: expected an integer/);
    expect(() => meAda({ stepSize: 0 })).toThrow(/meAda\.stepSize: must be > 0/);
    expect(() => meAda({ beta: -1 })).toThrow(/meAda\.beta/);
    expect(() => meAda({ gamma: { type: 'step', values: [1, -1], boundaries: [3] } })).toThrow(/meAda\.gamma/);
    expect(() => meAda({ weight: 2 })).toThrow(/meAda\.weight: must be ≤ 1/);
    expect(() => meAda({ every: 0 })).toThrow(/meAda\.every/);
    expect(() => meAda({ clip: [0, 0] })).toThrow(/meAda\.clip/);
    expect(() => meAda({ ascentMode: 'train' as never })).toThrow(/meAda\.ascentMode/);
  });
});
