import * as tf from '@tensorflow/tfjs-core';
import type { Classifier, ClassifierOutput, ForwardOptions } from './contract.js';
import { ConfigError } from './errors.js';

/** The part of a `tf.LayersModel` the adapter uses (structural, so tfjs-layers stays optional). */
export interface LayersModelLike {
  apply(inputs: tf.Tensor, kwargs?: { training?: boolean }): tf.Tensor | tf.Tensor[] | unknown;
  readonly trainableWeights: ReadonlyArray<{ read(): tf.Tensor }>;
  readonly nonTrainableWeights: ReadonlyArray<{ read(): tf.Tensor }>;
  readonly outputs: ReadonlyArray<{ shape: ReadonlyArray<number | null> }>;
}

/**
 * Adapts a `tf.LayersModel`. A model with one output returns logits; a model with two outputs is
 * read as `[features, logits]`, which gives ME-ADA its penultimate features.
 *
 * `frozen-stats` mode calls the model with `training: true` (batch statistics, dropout active) and
 * then restores every non-trainable weight: `tf.layers.batchNormalization` always updates its
 * moving statistics in training mode, and RCAD and attacks must not.
 */
export function classifierFromLayersModel(model: LayersModelLike, options: { numClasses?: number } = {}): Classifier {
  const outputs = model.outputs;
  if (outputs.length !== 1 && outputs.length !== 2) {
    throw new ConfigError('model.outputs', `expected 1 output (logits) or 2 ([features, logits]), got ${outputs.length}`);
  }
  const numClasses = options.numClasses ?? outputs[outputs.length - 1]!.shape.at(-1);
  if (typeof numClasses !== 'number' || numClasses < 2) {
    throw new ConfigError('numClasses', `could not read a class count ≥ 2 from the model's output shape; pass numClasses`);
  }
  const variables = (weights: LayersModelLike['trainableWeights']) => weights.map((weight) => weight.read() as tf.Variable);
  return {
    numClasses,
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
    trainableVariables: spec.trainableVariables,
    nonTrainableVariables: spec.nonTrainableVariables ?? [],
    ...(spec.stochastic !== undefined ? { stochastic: spec.stochastic } : {}),
    apply(inputs, options) {
      const output = spec.apply(inputs, options);
      return output instanceof tf.Tensor ? { logits: output as tf.Tensor2D } : output;
    },
  };
}
