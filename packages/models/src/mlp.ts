import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, assertNumber } from '@regstack/regularizer';
import { ParameterStore, dense, dropout, type LinearParameters, type PassContext } from './layers.js';
import { NetworkModel, type ClassifierModel } from './model.js';
import { commonOptionKeys, resolveCommonOptions, type CommonModelOptions } from './options.js';

/** Options of {@link mlp}. */
export interface MlpOptions extends CommonModelOptions {
  /** Units of each hidden layer, in order. Default [256, 256]. */
  hiddenUnits?: readonly number[];
  /** Dropout rate after each hidden ReLU. Default 0. */
  dropout?: number;
}

/** Options of {@link linearClassifier}. */
export type LinearClassifierOptions = CommonModelOptions;

/** Batch-norm settings are unused by dense layers; the store needs some. */
const noBatchNorm = { momentum: 0.1, epsilon: 1e-5 };

/**
 * A multilayer perceptron on the flattened normalised input: [dense-ReLU(-dropout)] per hidden layer,
 * then a linear classifier. With no hidden layers it is a linear (softmax regression) model whose
 * features are the flattened normalised inputs.
 */
class Mlp extends NetworkModel {
  private readonly hidden: LinearParameters[] = [];
  private readonly classifier: LinearParameters;
  private readonly dropoutRate: number;

  override get stochastic(): boolean {
    return this.dropoutRate > 0;
  }
  readonly featureSize: number;

  constructor(architecture: 'mlp' | 'linear', owner: string, options: MlpOptions, hiddenUnits: readonly number[], dropoutRate: number) {
    const common = resolveCommonOptions(owner, options, [...commonOptionKeys, ...(architecture === 'mlp' ? ['hiddenUnits', 'dropout'] : [])]);
    super(architecture, common, new ParameterStore(common.random, noBatchNorm));
    this.dropoutRate = dropoutRate;
    let inFeatures = common.inputShape[0] * common.inputShape[1] * common.inputShape[2];
    hiddenUnits.forEach((units, index) => {
      this.hidden.push(this.parameters.linear(`hidden.${index}`, inFeatures, units, 'pytorch'));
      inFeatures = units;
    });
    this.featureSize = inFeatures;
    this.classifier = this.parameters.linear('linear', inFeatures, common.numClasses, 'pytorch');
  }

  protected get head(): LinearParameters {
    return this.classifier;
  }

  protected features(inputs: tf.Tensor4D, context: PassContext): tf.Tensor2D {
    let x: tf.Tensor2D = tf.reshape(inputs, [inputs.shape[0], -1]);
    for (const layer of this.hidden) x = dropout(tf.relu(dense(x, layer)), this.dropoutRate, context);
    return x;
  }
}

/**
 * A multilayer perceptron for toy studies. Names: `hidden.0.weight`, `hidden.0.bias`, …, `linear.weight`,
 * `linear.bias` (kernels [in, out]; the input is flattened in NHWC order).
 *
 * @example const model = mlp({ inputShape: [28, 28, 1], hiddenUnits: [512, 256], dropout: 0.2 });
 */
export function mlp(options: MlpOptions = {}): ClassifierModel {
  const hiddenUnits = options.hiddenUnits ?? [256, 256];
  if (!Array.isArray(hiddenUnits)) throw new ConfigError('mlp.hiddenUnits', `expected an array of positive integers, got ${String(hiddenUnits)}`);
  hiddenUnits.forEach((units, index) => assertNumber(`mlp.hiddenUnits[${index}]`, units, { min: 1, integer: true }));
  const dropoutRate = assertNumber('mlp.dropout', options.dropout ?? 0, { min: 0, max: 1, maxExclusive: true });
  return new Mlp('mlp', 'mlp', options, hiddenUnits, dropoutRate);
}

/**
 * A linear classifier (multinomial logistic regression) on the flattened normalised input. Names:
 * `linear.weight` ([H·W·C, K]) and `linear.bias`.
 *
 * @example const model = linearClassifier({ inputShape: [28, 28, 1] });
 */
export function linearClassifier(options: LinearClassifierOptions = {}): ClassifierModel {
  return new Mlp('linear', 'linearClassifier', options, [], 0);
}
