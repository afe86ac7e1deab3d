import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import {
  ConfigError,
  DataError,
  Random,
  classifierFromFunction,
  classifierFromLayersModel,
  composeRegularizers,
  crossEntropy,
  lossInputGradient,
  meanEntropy,
  oneHotTargets,
  resolveSchedule,
  type Batch,
  type Classifier,
  type InputGradientRequest,
  type ModelMode,
  type PrepareContext,
  type RegularizerPlugin,
} from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { rcad, rcadPerturbation } from './index.js';
import { errorField, linearClassifier, linearLogProbabilities, linearProblem, minimizeSteps, relativeError } from '@regstack/regularizer/testing';

// ─── A linear model with fixed weights, mirrored in float64 below for finite differences ──────────

const numClasses = 4;
const { inputs: inputRows, labels, weights: weightRows, bias: biasValues } = linearProblem();

type Counted = Classifier & { calls: ModelMode[]; dispose(): void };

const linearModel = (weights = weightRows, bias = biasValues) => linearClassifier({ inputSize: 3, numClasses, weights, bias });

const linearBatch = (): Batch => ({ inputs: tf.tensor2d(inputRows), labels: tf.tensor1d(labels, 'int32') });

const float64 = {
  logProbabilities: linearLogProbabilities,
  /** d_i = g_i/(‖g_i‖ + 1e-10) with g_i = ∂CE_i/∂x_i = W(p_i − y_i) for a linear model. */
  direction(weights: number[][], bias: number[]): number[][] {
    return inputRows.map((x, i) => {
      const probabilities = float64.logProbabilities(weights, bias, x).map(Math.exp);
      const gradient = weights.map((row) => row.reduce((sum, w, k) => sum + w * (probabilities[k]! - (k === labels[i] ? 1 : 0)), 0));
      const norm = Math.sqrt(gradient.reduce((sum, g) => sum + g * g, 0)) + 1e-10;
      return gradient.map((g) => g / norm);
    });
  },
  meanCrossEntropy(weights: number[][], bias: number[]): number {
    return inputRows.reduce((sum, x, i) => sum - float64.logProbabilities(weights, bias, x)[labels[i]!]!, 0) / inputRows.length;
  },
  term(weights: number[][], bias: number[], direction: number[][], alpha: number, lambda: number): number {
    const entropy =
      inputRows.reduce((sum, x, i) => {
        const logP = float64.logProbabilities(weights, bias, x.map((value, j) => value + alpha * direction[i]![j]!));
        return sum - logP.reduce((inner, l) => inner + Math.exp(l) * l, 0);
      }, 0) / inputRows.length;
    return lambda * (Math.log(numClasses) - entropy);
  },
};

// ─── A small batch-norm network that honours the three modes ────────────────────────────────────

function batchNormModel(featureCount: number, seed = 5): Counted & { runningMean: tf.Variable; runningVariance: tf.Variable; hidden: tf.Variable } {
  const hiddenUnits = 6;
  const hidden = tf.variable(tf.randomNormal([featureCount, hiddenUnits], 0, 0.6, 'float32', seed), true, `rcad-bn-hidden-${Math.random()}`);
  const gamma = tf.variable(tf.randomUniform([hiddenUnits], 0.5, 1.5, 'float32', seed + 1), true, `rcad-bn-gamma-${Math.random()}`);
  const beta = tf.variable(tf.randomNormal([hiddenUnits], 0, 0.1, 'float32', seed + 2), true, `rcad-bn-beta-${Math.random()}`);
  const output = tf.variable(tf.randomNormal([hiddenUnits, numClasses], 0, 0.6, 'float32', seed + 3), true, `rcad-bn-output-${Math.random()}`);
  const outputBias = tf.variable(tf.zeros([numClasses]), true, `rcad-bn-output-bias-${Math.random()}`);
  const runningMean = tf.variable(tf.zeros([hiddenUnits]), false, `rcad-bn-mean-${Math.random()}`);
  const runningVariance = tf.variable(tf.ones([hiddenUnits]), false, `rcad-bn-variance-${Math.random()}`);
  const calls: ModelMode[] = [];
  const model = classifierFromFunction({
    numClasses,
    trainableVariables: [hidden, gamma, beta, output, outputBias],
    nonTrainableVariables: [runningMean, runningVariance],
    apply: (inputs, { mode }) => {
      calls.push(mode);
      return tf.tidy(() => {
        const z = tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, -1]), hidden);
        let mean: tf.Tensor = runningMean;
        let variance: tf.Tensor = runningVariance;
        if (mode !== 'eval') {
          ({ mean, variance } = tf.moments(z, 0));
          if (mode === 'train') {
            runningMean.assign(tf.add(tf.mul(0.9, runningMean), tf.mul(0.1, mean)));
            runningVariance.assign(tf.add(tf.mul(0.9, runningVariance), tf.mul(0.1, variance)));
          }
        }
        const normalised = tf.div(tf.sub(z, mean), tf.sqrt(tf.add(variance, 1e-5)));
        const activations = tf.relu(tf.add(tf.mul(gamma, normalised), beta));
        return tf.add(tf.matMul(activations, output), outputBias) as tf.Tensor2D;
      });
    },
  });
  return Object.assign(model, {
    hidden,
    runningMean,
    runningVariance,
    calls,
    dispose: () => tf.dispose([hidden, gamma, beta, output, outputBias, runningMean, runningVariance]),
  });
}

/** NHWC images [6, 2, 2, 3] in [0,1] with labels cycling over the classes. */
const imageBatch = (seed = 21): Batch => ({
  inputs: tf.randomUniform([6, 2, 2, 3], 0, 1, 'float32', seed),
  labels: tf.tensor1d([0, 1, 2, 3, 0, 2], 'int32'),
});

const values = (tensor: tf.Tensor) => Array.from(tensor.dataSync());

/** Runs one plugin's prepare by hand, to look at its state and the gradient request it makes. */
function prepareByHand(plugin: RegularizerPlugin, model: Classifier, batch: Batch) {
  const requests: InputGradientRequest[] = [];
  const owned: tf.Tensor[] = [];
  const targets = oneHotTargets(batch.labels, model.numClasses);
  const context: PrepareContext = {
    model,
    random: new Random(1),
    step: 0,
    epoch: 0,
    numClasses: model.numClasses,
    value: (hyperParameter) => resolveSchedule(hyperParameter, { step: 0, epoch: 0 }),
    clean: batch,
    batch: { inputs: batch.inputs, targets },
    inputGradient: (request) => {
      requests.push(request);
      const result = lossInputGradient(model, batch.inputs, targets, request);
      owned.push(result.gradient, result.loss, result.logits);
      return result;
    },
  };
  const state = tf.tidy(() => plugin.prepare!(context)) as { perturbed: tf.Tensor; lambda: number };
  tf.dispose([...owned, targets]);
  return { state, requests };
}

function termOf(plugin: RegularizerPlugin, model: Classifier, batch: Batch, step = 0): number {
  const prepared = composeRegularizers([plugin]).prepare({ model, batch, random: new Random(1), step });
  tf.dispose(prepared.loss());
  const value = prepared.terms().rcad!;
  prepared.dispose();
  return value;
}

// ─── Tests ────────────────────────────────────────────────────────────────────────────────────────

describe('rcadPerturbation', () => {
  it('moves every example by exactly α in L2 norm over all non-batch axes, and leaves zero gradients alone', () => {
    const inputs = tf.randomUniform([4, 2, 3, 3], 0, 1, 'float32', 2);
    // Gradients of very different scales per example; the third is zero.
    const gradient = tf.tidy(() => tf.mul(tf.randomNormal([4, 2, 3, 3], 0, 1, 'float32', 3), tf.tensor4d([1e3, 1e-4, 0, 1], [4, 1, 1, 1])));
    const perturbed = rcadPerturbation(gradient, inputs, 0.7);
    const norms = tf.tidy(() => values(tf.sqrt(tf.sum(tf.square(tf.sub(perturbed, inputs)), [1, 2, 3]))));
    expect(norms[0]).toBeCloseTo(0.7, 5);
    expect(norms[1]).toBeCloseTo(0.7, 5);
    expect(norms[2]).toBe(0);
    expect(norms[3]).toBeCloseTo(0.7, 5);
    // The direction is the gradient's own (normalised per example, not its sign).
    const cosine = tf.tidy(() => {
      const step = tf.reshape(tf.sub(perturbed, inputs), [4, -1]);
      const flat = tf.reshape(gradient, [4, -1]);
      return values(tf.div(tf.sum(tf.mul(step, flat), 1), tf.mul(tf.norm(step, 2, 1), tf.norm(flat, 2, 1))));
    });
    expect(cosine[0]).toBeCloseTo(1, 5);
    expect(cosine[3]).toBeCloseTo(1, 5);
    tf.dispose([inputs, gradient, perturbed]);
  });

  it('rejects mismatched shapes and a non-finite α', () => {
    const inputs = tf.zeros([2, 3]);
    expect(() => rcadPerturbation(tf.zeros([2, 4]), inputs, 1)).toThrow(DataError);
    expect(() => rcadPerturbation(tf.zeros([2, 4]), inputs, 1)).toThrow(/gradient: shape \[2,4\] differs/);
    expect(() => rcadPerturbation(tf.zeros([2, 3]), inputs, Number.NaN)).toThrow(ConfigError);
    tf.dispose(inputs);
  });
});

describe('rcad', () => {
  it('asks for the summed clean cross-entropy gradient and moves each example by α along it, raising its loss', () => {
    const model = linearModel();
    const batch = linearBatch();
    const { state, requests } = prepareByHand(rcad({ alpha: 0.05 }), model, batch);
    expect(requests).toEqual([{ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }]);
    const norms = tf.tidy(() => values(tf.norm(tf.sub(state.perturbed, batch.inputs), 2, 1)));
    norms.forEach((norm) => expect(norm).toBeCloseTo(0.05, 6));
    // The step increases every example's cross-entropy (a small step, so first order dominates).
    const perExample = (x: tf.Tensor) =>
      tf.tidy(() => values(tf.neg(tf.sum(tf.mul(oneHotTargets(batch.labels, numClasses), tf.logSoftmax(model.apply(x, { mode: 'eval' }).logits)), 1))));
    const before = perExample(batch.inputs);
    perExample(state.perturbed).forEach((after, i) => expect(after).toBeGreaterThan(before[i]!));
    expect(state.lambda).toBe(0.2);
    tf.dispose([state.perturbed, batch.inputs, batch.labels]);
    model.dispose();
  });

  it('matches a hand computation on a batch-norm network: d by tf.grad outside the tape, then variableGrads', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const alpha = 1.3;
    const lambda = 0.35;
    const step = composeRegularizers([rcad({ alpha, lambda })]).prepare({ model, batch, random: new Random(1) });
    const { value, grads } = step.gradients();
    const term = step.terms().rcad!;

    const logitsOf = (x: tf.Tensor, mode: ModelMode) => model.apply(x, { mode }).logits;
    const perturbed = tf.tidy(() => {
      const gradient = tf.grad((x: tf.Tensor) => crossEntropy(logitsOf(x, 'frozen-stats'), batch.labels, 'sum'))(batch.inputs);
      const norm = tf.add(tf.sqrt(tf.sum(tf.square(gradient), [1, 2, 3], true)), 1e-10);
      return tf.add(batch.inputs, tf.mul(alpha, tf.div(gradient, norm)));
    });
    const manualTerm = () => tf.mul(lambda, tf.sub(Math.log(numClasses), meanEntropy(logitsOf(perturbed, 'frozen-stats')))) as tf.Scalar;
    const manual = tf.variableGrads(() => tf.add(crossEntropy(logitsOf(batch.inputs, 'train'), batch.labels), manualTerm()) as tf.Scalar);
    const termByHand = tf.tidy(() => manualTerm().dataSync()[0]!);
    expect(term).toBeCloseTo(termByHand, 6);
    expect(termByHand).toBeGreaterThan(0.01);
    expect(value.dataSync()[0]).toBeCloseTo(manual.value.dataSync()[0]!, 5);
    for (const variable of model.trainableVariables) {
      expect(relativeError(values(grads[variable.name]!), values(manual.grads[variable.name]!))).toBeLessThan(1e-5);
    }
    tf.dispose([value, manual.value, perturbed, ...Object.values(grads), ...Object.values(manual.grads), batch.inputs, batch.labels]);
    step.dispose();
    model.dispose();
  });

  it('gives weight gradients equal to float64 finite differences that hold d fixed, not ones that recompute d', () => {
    const model = linearModel();
    const batch = linearBatch();
    const alpha = 1;
    const lambda = 0.5;
    const step = composeRegularizers([rcad({ alpha, lambda })]).prepare({ model, batch, random: new Random(1) });
    const { value, grads } = step.gradients();
    const plugin = [...values(grads[model.weight.name]!), ...values(grads[model.bias!.name]!)];

    const fixedDirection = float64.direction(weightRows, biasValues);
    const total = (weights: number[][], bias: number[], direction: number[][]) =>
      float64.meanCrossEntropy(weights, bias) + float64.term(weights, bias, direction, alpha, lambda);
    expect(step.terms().rcad).toBeCloseTo(float64.term(weightRows, biasValues, fixedDirection, alpha, lambda), 6);
    expect(value.dataSync()[0]).toBeCloseTo(total(weightRows, biasValues, fixedDirection), 6);

    const h = 1e-6;
    const fixed: number[] = [];
    const recomputed: number[] = [];
    const shiftedWeights = (index: number, delta: number) => weightRows.map((row, j) => row.map((w, k) => (j * numClasses + k === index ? w + delta : w)));
    const shiftedBias = (index: number, delta: number) => biasValues.map((b, k) => (k === index ? b + delta : b));
    const parameterCount = weightRows.length * numClasses + numClasses;
    for (let index = 0; index < parameterCount; index++) {
      const [plus, minus] = [h, -h].map((delta) =>
        index < weightRows.length * numClasses
          ? ([shiftedWeights(index, delta), biasValues] as const)
          : ([weightRows, shiftedBias(index - weightRows.length * numClasses, delta)] as const),
      ) as [readonly [number[][], number[]], readonly [number[][], number[]]];
      fixed.push((total(plus[0], plus[1], fixedDirection) - total(minus[0], minus[1], fixedDirection)) / (2 * h));
      recomputed.push(
        (total(plus[0], plus[1], float64.direction(plus[0], plus[1])) - total(minus[0], minus[1], float64.direction(minus[0], minus[1]))) / (2 * h),
      );
    }
    expect(relativeError(plugin, fixed)).toBeLessThan(1e-5);
    // Letting gradient flow through d changes the answer by far more than the tolerance above.
    expect(relativeError(plugin, recomputed)).toBeGreaterThan(1e-2);
    tf.dispose([value, ...Object.values(grads), batch.inputs, batch.labels]);
    step.dispose();
    model.dispose();
  });

  it('takes its direction at the clean batch with hard labels, whatever augmentation, mixing and smoothing do', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const reverseMix: RegularizerPlugin = {
      name: 'reverse-mix',
      stage: 'batch-transform',
      transformBatch: (soft) => ({
        inputs: tf.add(tf.mul(0.6, soft.inputs), tf.mul(0.4, tf.reverse(soft.inputs, 0))),
        targets: tf.add(tf.mul(0.6, soft.targets), tf.mul(0.4, tf.reverse(soft.targets, 0))) as tf.Tensor2D,
      }),
    };
    const smoothing: RegularizerPlugin = {
      name: 'smoothing',
      stage: 'target-transform',
      transformTargets: (targets) => tf.add(tf.mul(targets, 0.4), 0.6 / numClasses) as tf.Tensor2D,
    };
    const alone = termOf(rcad(), model, batch);
    const step = composeRegularizers([reverseMix, smoothing, rcad()]).prepare({
      model,
      batch,
      random: new Random(1),
      augment: (inputs) => tf.reverse(inputs, 2),
    });
    const base = step.loss();
    expect(step.terms().rcad).toBeCloseTo(alone, 6);
    // The base loss did see other inputs and targets, so the comparison above is not vacuous.
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(step.batch.inputs, batch.inputs))).dataSync()[0]!)).toBeGreaterThan(0.05);
    expect(tf.tidy(() => tf.min(step.batch.targets).dataSync()[0]!)).toBeGreaterThan(0.1);
    tf.dispose(base);
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('is zero, with finite gradients, when the model outputs uniform probabilities', () => {
    const zeros = weightRows.map((row) => row.map(() => 0));
    const model = linearModel(zeros, [0, 0, 0, 0]);
    const batch = linearBatch();
    const step = composeRegularizers([rcad()]).prepare({ model, batch, random: new Random(1) });
    const { value, grads } = step.gradients();
    expect(Math.abs(step.terms().rcad!)).toBeLessThan(1e-6);
    for (const gradient of Object.values(grads)) expect(values(gradient).every(Number.isFinite)).toBe(true);
    tf.dispose([value, ...Object.values(grads), batch.inputs, batch.labels]);
    step.dispose();
    model.dispose();
  });

  it('leaves batch-norm running statistics to the base pass: one update per step', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const mean0 = values(model.runningMean);
    const variance0 = values(model.runningVariance);
    const step = composeRegularizers([rcad()]).prepare({ model, batch, random: new Random(1) });
    expect(values(model.runningMean)).toEqual(mean0);
    expect(values(model.runningVariance)).toEqual(variance0);
    tf.dispose(step.loss());
    expect(model.calls).toEqual(['frozen-stats', 'train', 'frozen-stats']);
    const { mean, variance } = tf.tidy(() => {
      const moments = tf.moments(tf.matMul(tf.reshape(batch.inputs, [6, -1]), model.hidden), 0);
      return { mean: values(moments.mean), variance: values(moments.variance) };
    });
    values(model.runningMean).forEach((value, i) => expect(value).toBeCloseTo(0.9 * mean0[i]! + 0.1 * mean[i]!, 6));
    values(model.runningVariance).forEach((value, i) => expect(value).toBeCloseTo(0.9 * variance0[i]! + 0.1 * variance[i]!, 6));
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('keeps the moving statistics of a tfjs-layers batch-norm model out of its passes', () => {
    const layers = tfl.sequential({
      layers: [
        tfl.layers.flatten({ inputShape: [2, 2, 3] }),
        tfl.layers.dense({ units: 6, kernelInitializer: tfl.initializers.glorotNormal({ seed: 1 }) }),
        tfl.layers.batchNormalization(),
        tfl.layers.dense({ units: numClasses, kernelInitializer: tfl.initializers.glorotNormal({ seed: 2 }) }),
      ],
    });
    const model = classifierFromLayersModel(layers);
    const batch = imageBatch();
    const movingMean = () => values(model.nonTrainableVariables[0]!);
    const before = movingMean();
    const step = composeRegularizers([rcad()]).prepare({ model, batch, random: new Random(1) });
    expect(movingMean()).toEqual(before);
    const { value, grads } = step.gradients();
    expect(step.terms().rcad).toBeGreaterThan(0);
    // Only the base pass (train mode) moved them.
    expect(movingMean()).not.toEqual(before);
    tf.dispose([value, ...Object.values(grads), batch.inputs, batch.labels]);
    step.dispose();
    layers.dispose();
  });

  it('shares the input gradient with another plugin asking for the same one', () => {
    const model = linearModel();
    const batch = linearBatch();
    let seen: number[] = [];
    const sameRequest: RegularizerPlugin = {
      name: 'same-request',
      stage: 'loss-term',
      prepare: (context) => {
        seen = values(context.inputGradient({ at: 'clean', reduction: 'sum', mode: 'frozen-stats' }).gradient);
        return {};
      },
      loss: () => ({ value: tf.scalar(0) }),
    };
    composeRegularizers([rcad(), sameRequest]).prepare({ model, batch, random: new Random(1) }).dispose();
    expect(model.calls).toEqual(['frozen-stats']);
    expect(seen.some((value) => value !== 0)).toBe(true);

    model.calls.length = 0;
    composeRegularizers([rcad({ mode: 'eval' }), sameRequest]).prepare({ model, batch, random: new Random(1) }).dispose();
    expect(model.calls).toEqual(['eval', 'frozen-stats']);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('runs its forward pass on x̃ in the mode asked for', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const step = composeRegularizers([rcad({ mode: 'eval' })]).prepare({ model, batch, random: new Random(1) });
    tf.dispose(step.loss());
    expect(model.calls).toEqual(['eval', 'train', 'eval']);
    step.dispose();
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('honours schedules of λ and α, and skips its passes while λ is 0', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const lambdaSchedule = rcad({ lambda: { type: 'step', values: [0, 0.2, 1], boundaries: [1, 3], unit: 'step' } });
    model.calls.length = 0;
    expect(termOf(lambdaSchedule, model, batch, 0)).toBe(0);
    expect(model.calls).toEqual(['train']);
    const atTwo = termOf(lambdaSchedule, model, batch, 2);
    const atThree = termOf(lambdaSchedule, model, batch, 3);
    expect(atTwo).toBeCloseTo(termOf(rcad({ lambda: 0.2 }), model, batch), 6);
    expect(atThree / atTwo).toBeCloseTo(5, 4);

    const alphaSchedule = rcad({ alpha: { type: 'step', values: [0.5, 2], boundaries: [1], unit: 'step' } });
    const small = termOf(rcad({ alpha: 0.5 }), model, batch);
    const large = termOf(rcad({ alpha: 2 }), model, batch);
    expect(Math.abs(large - small)).toBeGreaterThan(1e-3);
    expect(termOf(alphaSchedule, model, batch, 0)).toBeCloseTo(small, 6);
    expect(termOf(alphaSchedule, model, batch, 1)).toBeCloseTo(large, 6);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('rejects bad options with a ConfigError naming the field', () => {
    const fieldOf = (make: () => unknown) => errorField(make, ConfigError);
    expect(fieldOf(() => rcad({ alpha: -1 }))).toBe('rcad.alpha');
    expect(fieldOf(() => rcad({ alpha: Number.NaN }))).toBe('rcad.alpha');
    expect(fieldOf(() => rcad({ lambda: -0.2 }))).toBe('rcad.lambda');
    expect(fieldOf(() => rcad({ lambda: '0.2' as never }))).toBe('rcad.lambda');
    expect(fieldOf(() => rcad({ mode: 'train' as never }))).toBe('rcad.mode');
    expect(fieldOf(() => rcad({ epsilon: 1 } as never))).toBe('rcad.epsilon');
    expect(fieldOf(() => rcad({ alpha: { type: 'step', values: [-1, 1], boundaries: [2] } }))).toBe('rcad.alpha.values[0]');
    expect(fieldOf(() => rcad({ lambda: { type: 'linear', from: 0, to: -1, start: 0, end: 5 } }))).toBe('rcad.lambda.to');
    expect(fieldOf(() => rcad({ alpha: 0, lambda: 0 }))).toBe('no error');
    const model = linearModel();
    const batch = linearBatch();
    expect(() => composeRegularizers([rcad({ alpha: () => -1 })]).prepare({ model, batch, random: new Random(1) })).toThrow(/rcad\.alpha: must be ≥ 0/);
    tf.dispose([batch.inputs, batch.labels]);
    model.dispose();
  });

  it('leaks no tensor over steps of optimizer.minimize on a batch-norm network', () => {
    const model = batchNormModel(12);
    const batch = imageBatch();
    const optimizer = tf.train.sgd(0.1);
    const stack = composeRegularizers([rcad()]);
    const { tensorCounts, terms } = minimizeSteps(stack, { model, batch, random: new Random(3) }, 6, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    expect(terms.every((term) => Number.isFinite(term.rcad))).toBe(true);
    tf.dispose([batch.inputs, batch.labels]);
    optimizer.dispose();
    model.dispose();
  });
});
