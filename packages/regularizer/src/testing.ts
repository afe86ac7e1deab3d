/**
 * Test helpers for plugin authors (`@regstack/regularizer/testing`): a linear and a tiny tanh
 * classifier that count their passes by mode, the field of a typed error, a plugin wrapper that
 * captures its prepared state, a leak-checked minimize loop and a relative error.
 * Import them in tests only.
 */
import * as tf from '@tensorflow/tfjs-core';
import { classifierFromFunction } from './classifier.js';
import type { Classifier, ModelMode, RegularizerPlugin, StepInput } from './contract.js';
import { RegstackError } from './errors.js';
import type { RegularizerStack } from './stack.js';

/** Options of {@link countingClassifier}. */
export interface CountingClassifierOptions {
  /** Values per input example (inputs are flattened). */
  inputSize: number;
  /** Number of classes. */
  numClasses: number;
  /** Hidden units of the one tanh layer. Default 8. */
  hiddenUnits?: number;
  /** Seed of the initial weights (N(0,1) weights, N(0,0.1) hidden bias, zero output bias). Default 1. */
  seed?: number;
  /**
   * Added to the hidden pre-activations in `eval` mode only, standing in for running statistics that
   * differ from a batch's own. Default 0.
   */
  evalShift?: number;
  /** Return the hidden layer as `features`. Default true. */
  withFeatures?: boolean;
}

/**
 * A one-hidden-layer tanh classifier that records the mode of every forward pass in `calls`, so a
 * test can count the passes a plugin makes (and whether two plugins shared one).
 */
export function countingClassifier(options: CountingClassifierOptions): Classifier & { calls: ModelMode[]; dispose(): void } {
  const { inputSize, numClasses, hiddenUnits = 8, seed = 1, evalShift = 0, withFeatures = true } = options;
  const first = tf.variable(tf.randomNormal([inputSize, hiddenUnits], 0, 1, 'float32', seed));
  const firstBias = tf.variable(tf.randomNormal([hiddenUnits], 0, 0.1, 'float32', seed + 1));
  const second = tf.variable(tf.randomNormal([hiddenUnits, numClasses], 0, 1, 'float32', seed + 2));
  const secondBias = tf.variable(tf.zeros([numClasses]));
  const calls: ModelMode[] = [];
  const model = classifierFromFunction({
    numClasses,
    trainableVariables: [first, firstBias, second, secondBias],
    stochastic: false,
    apply: (inputs, { mode }) => {
      calls.push(mode);
      return tf.tidy(() => {
        const pre = tf.add(tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, -1]), first), firstBias);
        const features = tf.tanh(mode === 'eval' && evalShift !== 0 ? tf.add(pre, evalShift) : pre) as tf.Tensor2D;
        const logits = tf.add(tf.matMul(features, second), secondBias) as tf.Tensor2D;
        return withFeatures ? { logits, features } : { logits };
      });
    },
  });
  return Object.assign(model, { calls, dispose: () => tf.dispose([first, firstBias, second, secondBias]) });
}

/** Options of {@link linearClassifier}. */
export interface LinearClassifierOptions {
  /** Values per input example (inputs are flattened). */
  inputSize: number;
  /** Number of classes. */
  numClasses: number;
  /** Fixed weights, one row of `numClasses` values per input value. Default: N(0, `scale`) drawn with `seed`. */
  weights?: readonly (readonly number[])[];
  /** Fixed bias, `numClasses` values, or `null` for none. Default zeros. */
  bias?: readonly number[] | null;
  /** Standard deviation of drawn weights. Default 0.5. */
  scale?: number;
  /** Seed of drawn weights. Default 1. */
  seed?: number;
  /** Declared `stochastic` (see `Classifier.stochastic`): `false` lets `stack.gradients` fuse its base pass. Default undefined. */
  stochastic?: boolean;
}

/**
 * A linear softmax classifier, logits = flatten(x)·W + b: the model whose cross-entropy and input
 * gradient a test can write by hand (∂CE/∂x = W·(p − y)). Records the mode of every forward pass in
 * `calls`; `weight` and `bias` are its variables (`bias` absent with `bias: null`).
 */
export function linearClassifier(options: LinearClassifierOptions): Classifier & { weight: tf.Variable; bias?: tf.Variable; calls: ModelMode[]; dispose(): void } {
  const { inputSize, numClasses, scale = 0.5, seed = 1 } = options;
  const weight = tf.variable(options.weights ? tf.tensor2d(options.weights as number[][], [inputSize, numClasses]) : tf.randomNormal([inputSize, numClasses], 0, scale, 'float32', seed));
  const bias = options.bias === null ? undefined : tf.variable(options.bias ? tf.tensor1d(options.bias as number[]) : tf.zeros([numClasses]));
  const calls: ModelMode[] = [];
  const variables = bias ? [weight, bias] : [weight];
  const model = classifierFromFunction({
    numClasses,
    trainableVariables: variables,
    ...(options.stochastic === undefined ? {} : { stochastic: options.stochastic }),
    apply: (inputs, { mode }) => {
      calls.push(mode);
      return tf.tidy(() => {
        const product = tf.matMul(tf.reshape(inputs, [inputs.shape[0]!, -1]), weight) as tf.Tensor2D;
        return bias ? (tf.add(product, bias) as tf.Tensor2D) : product;
      });
    },
  });
  return Object.assign(model, { weight, ...(bias ? { bias } : {}), calls, dispose: () => tf.dispose(variables) });
}

/**
 * A small problem for tests that check a loss or a gradient against float64 arithmetic by hand: five
 * examples of three input values in [0, 1], labels over four classes, and fixed weights for
 * {@link linearClassifier} whose softmax entropies lie well inside (0, log 4), so an entropy-based
 * check can fail either way.
 */
export function linearProblem(): { inputs: number[][]; labels: number[]; weights: number[][]; bias: number[] } {
  // A new copy each call: a test may change its arrays without changing another test's.
  return {
    inputs: [
      [0.2, 0.9, 0.4],
      [0.7, 0.1, 0.5],
      [0.3, 0.6, 0.8],
      [0.95, 0.05, 0.35],
      [0.5, 0.5, 0.1],
    ],
    labels: [0, 3, 1, 2, 1],
    weights: [
      [0.8, -0.6, 0.3, 0.1],
      [-0.4, 0.5, 0.9, -0.7],
      [0.2, 0.4, -0.8, 0.6],
    ],
    bias: [0.1, -0.2, 0.05, 0.0],
  };
}

/** log softmax(x·W + b) of one example, in float64: the reference for a linear model's float32 results. */
export function linearLogProbabilities(weights: readonly (readonly number[])[], bias: readonly number[], inputs: readonly number[]): number[] {
  const logits = bias.map((b, k) => b + inputs.reduce((sum, value, j) => sum + value * weights[j]![k]!, 0));
  const largest = Math.max(...logits);
  const normaliser = largest + Math.log(logits.reduce((sum, logit) => sum + Math.exp(logit - largest), 0));
  return logits.map((logit) => logit - normaliser);
}

/**
 * The `field` of the regstack error `make` throws, or `'no error'`. Any other error, or a regstack
 * error not of `type` when one is given, is rethrown.
 * @example expect(errorField(() => rcad({ alpha: -1 }), ConfigError)).toBe('rcad.alpha');
 */
export function errorField(make: () => unknown, type: typeof RegstackError = RegstackError): string {
  try {
    make();
  } catch (error) {
    if (type.isInstance(error)) return error.field;
    throw error;
  }
  return 'no error';
}

/**
 * Wraps `plugin` so that what `read` takes from each state its `prepare` returns (a perturbed or
 * generated batch, as arrays) lands in `captured`, one entry per step; the plugin itself runs
 * unchanged inside the real stack. `read` runs before the step can dispose the state: copy, do not keep.
 * @example const { plugin, captured } = capturePrepared(rcad(), (state) => state.perturbed?.arraySync());
 */
export function capturePrepared<State extends tf.TensorContainer, Captured>(
  plugin: RegularizerPlugin<State>,
  read: (state: State) => Captured,
): { plugin: RegularizerPlugin<State>; captured: Captured[] } {
  const captured: Captured[] = [];
  const prepare = plugin.prepare?.bind(plugin);
  if (!prepare) return { plugin, captured };
  const wrapped: RegularizerPlugin<State> = {
    ...plugin,
    prepare: (context) => {
      const state = prepare(context);
      captured.push(read(state));
      return state;
    },
  };
  return { plugin: wrapped, captured };
}

/**
 * Runs `steps` steps of `optimizer.minimize` on one batch through `stack` (the user-loop form) and
 * returns the tensor count after each step and each step's named terms: a leak shows as a count
 * that grows after the first step (which creates the optimizer's state).
 */
export function minimizeSteps(
  stack: RegularizerStack,
  input: Omit<StepInput, 'step'>,
  steps: number,
  optimizer: tf.Optimizer,
): { tensorCounts: number[]; terms: Array<Record<string, number>> } {
  const tensorCounts: number[] = [];
  const terms: Array<Record<string, number>> = [];
  for (let step = 0; step < steps; step++) {
    const prepared = stack.prepare({ ...input, step });
    optimizer.minimize(prepared.loss, false, input.model.trainableVariables as tf.Variable[]);
    terms.push(prepared.terms());
    prepared.dispose();
    tensorCounts.push(tf.memory().numTensors);
  }
  return { tensorCounts, terms };
}

/** ‖actual − expected‖₂ / ‖expected‖₂ over two flat arrays of the same length (tensors: pass `dataSync()`). */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`relativeError: ${actual.length} values against ${expected.length}`);
  let difference = 0;
  let norm = 0;
  for (let index = 0; index < expected.length; index++) {
    difference += (actual[index]! - expected[index]!) ** 2;
    norm += expected[index]! ** 2;
  }
  return Math.sqrt(difference / norm);
}
