import * as tf from '@tensorflow/tfjs-core';
import type { ModelMode, Random } from '@regstack/regularizer';
import { batchNormalization, type BatchNormParameters } from './batch-norm.js';
import { constantValues, normalValues, uniformValues } from './initializers.js';

/** How a layer's weights are drawn. */
export type WeightInitialization =
  /** PyTorch's default: kaiming_uniform(a=√5), i.e. U(±1/√fan_in) for weights and biases. */
  | 'pytorch'
  /** The Wide ResNet reference: conv weights N(0, 2/(k²·C_out)); biases 0. */
  | 'wide-resnet';

/** A convolution's variables and geometry (weights HWIO). */
export interface ConvolutionParameters {
  readonly weight: tf.Variable;
  readonly bias?: tf.Variable;
  readonly stride: number;
  /** Symmetric zero padding on each spatial side, as PyTorch's `padding`. */
  readonly padding: number;
}

/** A dense layer's variables (kernel [in, out]). */
export interface LinearParameters {
  readonly weight: tf.Variable;
  readonly bias: tf.Variable;
}

/** Batch-norm settings shared by a model's layers. */
export interface BatchNormSettings {
  momentum: number;
  epsilon: number;
}

/**
 * Creates a model's variables in a fixed order with stable, PyTorch-like names, drawing their
 * initial values from one seeded generator. Names live here, not in TF.js's global variable
 * registry, so that two models can coexist.
 */
export class ParameterStore {
  /** Every variable by name, in creation order. */
  readonly named = new Map<string, tf.Variable>();
  readonly trainable: tf.Variable[] = [];
  readonly nonTrainable: tf.Variable[] = [];

  constructor(
    private readonly random: Random,
    private readonly batchNormSettings: BatchNormSettings,
  ) {}

  /** A convolution `name` with a `size`×`size` kernel. */
  convolution(
    name: string,
    spec: { size: number; inChannels: number; outChannels: number; stride?: number; padding?: number; bias?: boolean },
    initialization: WeightInitialization,
  ): ConvolutionParameters {
    const { size, inChannels, outChannels } = spec;
    const shape = [size, size, inChannels, outChannels];
    const count = size * size * inChannels * outChannels;
    const fanIn = size * size * inChannels;
    const weightValues =
      initialization === 'pytorch'
        ? uniformValues(this.random, count, 1 / Math.sqrt(fanIn))
        : normalValues(this.random, count, Math.sqrt(2 / (size * size * outChannels)));
    const weight = this.add(`${name}.weight`, weightValues, shape, true);
    const bias = spec.bias ? this.add(`${name}.bias`, this.biasValues(outChannels, fanIn, initialization), [outChannels], true) : undefined;
    return { weight, ...(bias ? { bias } : {}), stride: spec.stride ?? 1, padding: spec.padding ?? (size - 1) / 2 };
  }

  /**
   * A dense layer `name`. The Wide ResNet reference keeps PyTorch's default weights for its
   * classifier and zeroes only the bias.
   */
  linear(name: string, inFeatures: number, outFeatures: number, initialization: WeightInitialization): LinearParameters {
    const weight = this.add(`${name}.weight`, uniformValues(this.random, inFeatures * outFeatures, 1 / Math.sqrt(inFeatures)), [inFeatures, outFeatures], true);
    const bias = this.add(`${name}.bias`, this.biasValues(outFeatures, inFeatures, initialization), [outFeatures], true);
    return { weight, bias };
  }

  /** A batch-norm layer `name`: γ = 1, β = 0, running mean 0, running variance 1 (PyTorch's start). */
  batchNorm(name: string, channels: number): BatchNormParameters {
    return {
      gamma: this.add(`${name}.weight`, constantValues(channels, 1), [channels], true),
      beta: this.add(`${name}.bias`, constantValues(channels, 0), [channels], true),
      runningMean: this.add(`${name}.running_mean`, constantValues(channels, 0), [channels], false),
      runningVariance: this.add(`${name}.running_var`, constantValues(channels, 1), [channels], false),
      momentum: this.batchNormSettings.momentum,
      epsilon: this.batchNormSettings.epsilon,
    };
  }

  private biasValues(count: number, fanIn: number, initialization: WeightInitialization): Float32Array {
    return initialization === 'pytorch' ? uniformValues(this.random, count, 1 / Math.sqrt(fanIn)) : constantValues(count, 0);
  }

  private add(name: string, values: Float32Array, shape: number[], trainable: boolean): tf.Variable {
    const variable = tf.tidy(() => tf.variable(tf.tensor(values, shape, 'float32'), trainable));
    this.named.set(name, variable);
    (trainable ? this.trainable : this.nonTrainable).push(variable);
    return variable;
  }
}

/** What every layer of one forward pass needs. */
export interface PassContext {
  readonly mode: ModelMode;
  readonly random: Random | undefined;
}

/**
 * A convolution with PyTorch's symmetric padding. TF.js's 'same' pads bottom/right only for stride 2
 * on even sizes, which shifts every sampled window by one pixel relative to PyTorch.
 */
export function convolve(x: tf.Tensor4D, parameters: ConvolutionParameters): tf.Tensor4D {
  const { padding, stride } = parameters;
  const pad: 'valid' | [[0, 0], [number, number], [number, number], [0, 0]] =
    padding === 0 ? 'valid' : [[0, 0], [padding, padding], [padding, padding], [0, 0]];
  const output = tf.conv2d(x, parameters.weight as tf.Tensor4D, stride, pad);
  return parameters.bias ? tf.add(output, parameters.bias) : output;
}

/** x·W + b. */
export function dense(x: tf.Tensor2D, parameters: LinearParameters): tf.Tensor2D {
  return tf.add(tf.matMul(x, parameters.weight as tf.Tensor2D), parameters.bias);
}

/** Batch norm in the pass's mode. */
export function normalize<T extends tf.Tensor>(x: T, parameters: BatchNormParameters, context: PassContext): T {
  return batchNormalization(x, parameters, context.mode);
}

/** Batch norm in the pass's mode, then ReLU: one kernel where `@regstack/backend`'s are registered. */
export function normalizeRelu<T extends tf.Tensor>(x: T, parameters: BatchNormParameters, context: PassContext): T {
  return batchNormalization(x, parameters, context.mode, { relu: true });
}

/**
 * Batch norm in the pass's mode, plus `residual`, then ReLU: a residual block's
 * `relu(add(bn(x), residual))`, one kernel where `@regstack/backend`'s are registered.
 */
export function normalizeAddRelu<T extends tf.Tensor>(x: T, residual: T, parameters: BatchNormParameters, context: PassContext): T {
  return batchNormalization(x, parameters, context.mode, { relu: true, residual });
}

/**
 * Inverted dropout, active in `train` and `frozen-stats`. The mask's seed comes from the pass's
 * generator so that a seeded run draws the same masks again.
 */
export function dropout<T extends tf.Tensor>(x: T, rate: number, context: PassContext): T {
  if (rate === 0 || context.mode === 'eval') return x;
  return tf.dropout(x, rate, undefined, context.random?.seed()) as T;
}

/** Mean over the spatial axes: [batch, H, W, C] → [batch, C]. */
export function globalAveragePool(x: tf.Tensor4D): tf.Tensor2D {
  return tf.mean(x, [1, 2]) as tf.Tensor2D;
}
