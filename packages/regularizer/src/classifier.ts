import * as tf from '@tensorflow/tfjs-core';
import type { Classifier, ClassifierOutput, ForwardOptions } from './contract.js';
import { ConfigError, assertKnownOptions, assertNumber } from './errors.js';

/** The part of a layer the adapter reads (structural, so tfjs-layers stays optional). */
interface LayerLike {
  getClassName(): string;
  /** Dense, Conv and Activation layers: their activation function. */
  readonly activation?: { getClassName(): string };
  /** A nested model's layers. */
  readonly layers?: readonly LayerLike[];
  /** A nested model's outputs. */
  readonly outputs?: ReadonlyArray<{ sourceLayer?: LayerLike }>;
}

/** The part of a `tf.LayersModel` the adapter uses (structural, so tfjs-layers stays optional). */
export interface LayersModelLike {
  apply(inputs: tf.Tensor, kwargs?: { training?: boolean }): tf.Tensor | tf.Tensor[] | unknown;
  readonly trainableWeights: ReadonlyArray<{ read(): tf.Tensor }>;
  readonly nonTrainableWeights: ReadonlyArray<{ read(): tf.Tensor }>;
  readonly outputs: ReadonlyArray<{ shape: ReadonlyArray<number | null>; sourceLayer?: unknown }>;
  /** Read to find dropout and noise layers (`stochastic`) and a softmax at the end. */
  readonly layers?: readonly unknown[];
}

/** Options of {@link classifierFromLayersModel}. */
export interface LayersClassifierOptions {
  /** Number of classes K. Default: the last dimension of the (logits) output. */
  numClasses?: number;
  /**
   * Whether the model draws random masks or noise in training mode (see `Classifier.stochastic`).
   * Default: read from the layers, recursively through nested models: `true` when any Dropout,
   * SpatialDropout, GaussianDropout, AlphaDropout or GaussianNoise layer is present, else `false`
   * (which lets `stack.gradients` fuse RCAD's and FGSM's input gradient into the base pass).
   */
  stochastic?: boolean;
}

/** Activations whose outputs are probabilities, not logits. */
const PROBABILITY_ACTIVATIONS = new Set(['softmax', 'sigmoid', 'hardSigmoid']);

/** Layers that draw random masks or noise in training mode. */
const STOCHASTIC_LAYER = /Dropout|GaussianNoise/;

const className = (layer: unknown): string => {
  const get = (layer as Partial<LayerLike> | null)?.getClassName;
  return typeof get === 'function' ? String(get.call(layer)) : '';
};

/** The activation a layer ends with (`softmax` for a Softmax layer), looking inside nested models. */
function finalActivation(layer: unknown, depth = 0): string | undefined {
  if (layer === null || typeof layer !== 'object' || depth > 32) return undefined;
  const candidate = layer as LayerLike;
  if (Array.isArray(candidate.outputs) && candidate.outputs.length > 0) return finalActivation(candidate.outputs.at(-1)!.sourceLayer, depth + 1);
  if (className(candidate) === 'Softmax') return 'softmax';
  const activation = candidate.activation;
  return activation && typeof activation.getClassName === 'function' ? activation.getClassName() : undefined;
}

/** Whether any layer, recursively through nested models, draws random masks or noise. */
function hasStochasticLayers(layers: readonly unknown[] | undefined, depth = 0): boolean {
  if (!Array.isArray(layers) || depth > 32) return false;
  return layers.some((layer) => STOCHASTIC_LAYER.test(className(layer)) || hasStochasticLayers((layer as LayerLike | null)?.layers, depth + 1));
}

/**
 * Adapts a `tf.LayersModel`. A model with one output returns logits; a model with two outputs is
 * read as `[features, logits]`, which gives ME-ADA its penultimate features.
 *
 * The logits output must be logits: a model ending in softmax or sigmoid (a Dense or Activation
 * layer's activation, or a Softmax layer, also inside a nested model) is refused with a ConfigError,
 * because every loss here applies its own log-softmax (probabilities trained as logits train worse,
 * and RCAD's entropy term all but vanishes). Build it with `activation: 'linear'` (the default) and
 * apply `tf.softmax` to the outputs where you need probabilities.
 *
 * `frozen-stats` mode calls the model with `training: true` (batch statistics, dropout active) and
 * then restores every non-trainable weight: `tf.layers.batchNormalization` always updates its
 * moving statistics in training mode, and RCAD and attacks must not.
 */
export function classifierFromLayersModel(model: LayersModelLike, options: LayersClassifierOptions = {}): Classifier {
  assertKnownOptions('classifierFromLayersModel', options, ['numClasses', 'stochastic']);
  if (model === null || typeof model !== 'object' || !Array.isArray(model.outputs) || typeof model.apply !== 'function') {
    throw new ConfigError('model', 'expected a tf.LayersModel (tf.sequential(...), tf.model(...) or tf.loadLayersModel(...))');
  }
  const outputs = model.outputs;
  if (outputs.length !== 1 && outputs.length !== 2) {
    throw new ConfigError('model.outputs', `expected 1 output (logits) or 2 ([features, logits]), got ${outputs.length}`);
  }
  const numClasses = options.numClasses === undefined ? outputs[outputs.length - 1]!.shape.at(-1) : assertNumber('classifierFromLayersModel.numClasses', options.numClasses, { integer: true, min: 2 });
  if (typeof numClasses !== 'number' || numClasses < 2) {
    throw new ConfigError('numClasses', `could not read a class count ≥ 2 from the model's output shape; pass numClasses`);
  }
  if (options.stochastic !== undefined && typeof options.stochastic !== 'boolean') {
    throw new ConfigError('classifierFromLayersModel.stochastic', `expected true or false, got ${String(options.stochastic)}`);
  }
  const activation = finalActivation(outputs[outputs.length - 1]!.sourceLayer);
  if (activation !== undefined && PROBABILITY_ACTIVATIONS.has(activation)) {
    throw new ConfigError(
      'model',
      `the ${outputs.length === 2 ? 'logits output' : 'output'} ends in a ${activation} activation, so it gives probabilities, but the stack needs logits ` +
        `(its losses apply log-softmax themselves). Remove the activation (activation: 'linear', the default, on the last layer) ` +
        `and apply tf.softmax(model.predict(x)) where you need probabilities`,
    );
  }
  const stochastic = options.stochastic ?? hasStochasticLayers(model.layers);
  const variables = (weights: LayersModelLike['trainableWeights']) => weights.map((weight) => weight.read() as tf.Variable);
  return {
    numClasses,
    stochastic,
    get trainableVariables() {
      return variables(model.trainableWeights);
    },
    get nonTrainableVariables() {
      return variables(model.nonTrainableWeights);
    },
    apply(inputs: tf.Tensor, { mode }: ForwardOptions): ClassifierOutput {
      const frozen = mode === 'frozen-stats' ? variables(model.nonTrainableWeights).map((v) => [v, tf.clone(v)] as const) : [];
      const result = model.apply(inputs, { training: mode !== 'eval' }) as tf.Tensor | tf.Tensor[];
      for (const [variable, saved] of frozen) {
        variable.assign(saved);
        saved.dispose();
      }
      if (Array.isArray(result)) return { features: result[0] as tf.Tensor2D, logits: result[1] as tf.Tensor2D };
      return { logits: result as tf.Tensor2D };
    },
  };
}

/** A forward function for {@link classifierFromFunction}. */
export type ForwardFunction = (inputs: tf.Tensor, options: ForwardOptions) => tf.Tensor2D | ClassifierOutput;

/**
 * Adapts a plain function and its variables. The function must honour `options.mode` itself if it
 * has batch statistics or dropout (a model without them may ignore it).
 */
export function classifierFromFunction(spec: {
  numClasses: number;
  apply: ForwardFunction;
  trainableVariables: readonly tf.Variable[];
  nonTrainableVariables?: readonly tf.Variable[];
  /** `false` if `apply` draws no random masks (see `Classifier.stochastic`). */
  stochastic?: boolean;
}): Classifier {
  if (!Number.isInteger(spec.numClasses) || spec.numClasses < 2) {
    throw new ConfigError('numClasses', `expected an integer ≥ 2, got ${spec.numClasses}`);
  }
  if (typeof spec.apply !== 'function') throw new ConfigError('apply', 'expected a function');
  return {
    numClasses: spec.numClasses,
    get trainableVariables() {
      return [...spec.trainableVariables];
    },
    nonTrainableVariables: spec.nonTrainableVariables ?? [],
    ...(spec.stochastic !== undefined ? { stochastic: spec.stochastic } : {}),
    apply(inputs, options) {
      const output = spec.apply(inputs, options);
      return output instanceof tf.Tensor ? { logits: output as tf.Tensor2D } : output;
    },
  };
}
