import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, assertChoice, type Classifier, type ClassifierOutput, type ForwardOptions } from '@regstack/regularizer';
import type { LinearParameters, ParameterStore, PassContext } from './layers.js';
import { dense } from './layers.js';
import type { ResolvedCommonOptions } from './options.js';

/** The architectures of this package, as {@link createModel} names them. */
export type ModelName = 'resnet18' | 'wrn-28-10' | 'wrn-16-8' | 'small-cnn' | 'mlp' | 'linear';

/**
 * A classifier built from tfjs-core ops and `tf.variable`s: the regstack {@link Classifier} contract
 * plus named variables for checkpoints and parity tests.
 */
export interface ClassifierModel extends Classifier {
  /** The architecture, e.g. `resnet18` or `wrn-28-10`. */
  readonly architecture: string;
  /** Input shape [height, width, channels]; `apply` takes [batch, H, W, C] or [batch, H·W·C] in [0,1]. */
  readonly inputShape: readonly [number, number, number];
  /** Length of the penultimate `features` vector. */
  readonly featureSize: number;
  /** Every variable (trainable, then running statistics in layer order) by its PyTorch-like name. */
  namedVariables(): Map<string, tf.Variable>;
  /** Number of trainable scalars (batch-norm γ and β included, running statistics not). */
  parameterCount(): number;
  /** Whether `apply` draws dropout masks (a dropout rate above 0). */
  readonly stochastic: boolean;
  /** Frees every variable; the model cannot be used afterwards. */
  dispose(): void;
}

/**
 * Shared plumbing of every model: input checks, normalisation, the linear head and disposal.
 * Subclasses supply the feature extractor.
 */
export abstract class NetworkModel implements ClassifierModel {
  readonly numClasses: number;
  readonly inputShape: readonly [number, number, number];
  private disposed = false;
  private readonly normalization: { scale: number[]; shift: number[] } | undefined;

  protected constructor(
    readonly architecture: string,
    options: ResolvedCommonOptions,
    protected readonly parameters: ParameterStore,
  ) {
    this.numClasses = options.numClasses;
    this.inputShape = options.inputShape;
    const identity = options.mean.every((value) => value === 0) && options.std.every((value) => value === 1);
    this.normalization = identity
      ? undefined
      : { scale: options.std.map((value) => 1 / value), shift: options.mean.map((value, channel) => -value / options.std[channel]!) };
  }

  /** The classifier head. */
  protected abstract get head(): LinearParameters;

  /** Penultimate features of normalised NHWC inputs. */
  protected abstract features(inputs: tf.Tensor4D, context: PassContext): tf.Tensor2D;

  abstract readonly featureSize: number;

  /** Whether `apply` draws dropout masks; models with dropout override it. */
  get stochastic(): boolean {
    return false;
  }

  /** A fresh array each time (TF.js's optimizers take a mutable `Variable[]`), in a stable order. */
  get trainableVariables(): tf.Variable[] {
    return [...this.parameters.trainable];
  }

  get nonTrainableVariables(): readonly tf.Variable[] {
    return this.parameters.nonTrainable;
  }

  namedVariables(): Map<string, tf.Variable> {
    this.assertAlive();
    return new Map(this.parameters.named);
  }

  parameterCount(): number {
    return this.parameters.trainable.reduce((total, variable) => total + variable.size, 0);
  }

  apply(inputs: tf.Tensor, options: ForwardOptions): ClassifierOutput {
    this.assertAlive();
    if (options === undefined || options === null) throw new ConfigError('options.mode', 'expected { mode }');
    const mode = assertChoice('options.mode', options.mode, ['train', 'eval', 'frozen-stats'] as const);
    const context: PassContext = { mode, random: options.random };
    this.checkInputs(inputs);
    return tf.tidy(() => {
      const images = inputs.rank === 4 ? (inputs as tf.Tensor4D) : tf.reshape<tf.Rank.R4>(inputs, [inputs.shape[0]!, ...this.inputShape]);
      const features = this.features(this.normalizeInputs(images), context);
      const logits = dense(features, this.head);
      return { logits, features };
    });
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const variable of this.parameters.named.values()) variable.dispose();
  }

  private assertAlive(): void {
    if (this.disposed) throw new ConfigError('model', `this ${this.architecture} was disposed`);
  }

  private checkInputs(inputs: tf.Tensor): void {
    if (!(inputs instanceof tf.Tensor)) throw new DataError('inputs', 'expected a tf.Tensor');
    const [height, width, channels] = this.inputShape;
    const flat = height * width * channels;
    const shape = inputs.shape;
    const matches =
      (shape.length === 4 && shape[1] === height && shape[2] === width && shape[3] === channels) || (shape.length === 2 && shape[1] === flat);
    if (!matches || shape[0] === 0) {
      throw new DataError('inputs', `expected shape [batch, ${height}, ${width}, ${channels}] or [batch, ${flat}], got [${shape.join(', ')}]`);
    }
    if (inputs.dtype !== 'float32') throw new DataError('inputs', `expected float32, got ${inputs.dtype}`);
  }

  private normalizeInputs(images: tf.Tensor4D): tf.Tensor4D {
    if (this.normalization === undefined) return images;
    return tf.add(tf.mul(images, tf.tensor1d(this.normalization.scale)), tf.tensor1d(this.normalization.shift));
  }
}
