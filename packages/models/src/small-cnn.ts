import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, assertNumber } from '@regstack/regularizer';
import type { BatchNormParameters } from './batch-norm.js';
import { ParameterStore, convolve, dropout, normalizeRelu, type ConvolutionParameters, type LinearParameters, type PassContext } from './layers.js';
import { NetworkModel, type ClassifierModel } from './model.js';
import { batchNormOptionKeys, resolveBatchNormSettings, resolveCommonOptions, type BatchNormModelOptions } from './options.js';

/** Options of {@link smallCnn}. */
export interface SmallCnnOptions extends BatchNormModelOptions {
  /** Channels of the first stage; the second has 2·width. Default 32. */
  width?: number;
  /** Dropout rate on the flattened features, before the classifier. Default 0. */
  dropout?: number;
}

interface ConvolutionBatchNorm {
  convolution: ConvolutionParameters;
  batchNorm: BatchNormParameters;
}

const optionKeys = [...batchNormOptionKeys, 'width', 'dropout'] as const;

/**
 * A small CNN for quick runs: two stages of [conv3×3-BN-ReLU ×2, max-pool 2×2], with width and
 * 2·width channels, then the flattened map into a linear classifier.
 */
class SmallCnn extends NetworkModel {
  private readonly stages: ConvolutionBatchNorm[][] = [];
  private readonly classifier: LinearParameters;
  private readonly dropoutRate: number;

  override get stochastic(): boolean {
    return this.dropoutRate > 0;
  }
  readonly featureSize: number;

  constructor(options: SmallCnnOptions) {
    const common = resolveCommonOptions('smallCnn', options, optionKeys);
    const width = assertNumber('smallCnn.width', options.width ?? 32, { min: 1, integer: true });
    const dropoutRate = assertNumber('smallCnn.dropout', options.dropout ?? 0, { min: 0, max: 1, maxExclusive: true });
    const [height, imageWidth, channels] = common.inputShape;
    if (height < 4 || imageWidth < 4) {
      throw new ConfigError('smallCnn.inputShape', `two 2×2 poolings need at least 4×4 inputs, got ${height}×${imageWidth}`);
    }
    const store = new ParameterStore(common.random, resolveBatchNormSettings('smallCnn', options));
    super('small-cnn', common, store);
    this.dropoutRate = dropoutRate;
    let inChannels = channels;
    for (const [stage, outChannels] of [width, 2 * width].entries()) {
      const layers: ConvolutionBatchNorm[] = [];
      for (let index = 1; index <= 2; index++) {
        const prefix = `block${stage + 1}`;
        layers.push({
          convolution: store.convolution(`${prefix}.conv${index}`, { size: 3, inChannels, outChannels }, 'pytorch'),
          batchNorm: store.batchNorm(`${prefix}.bn${index}`, outChannels),
        });
        inChannels = outChannels;
      }
      this.stages.push(layers);
    }
    // 'valid' 2×2 pooling floors odd sizes, as PyTorch's MaxPool2d(2) does.
    this.featureSize = Math.floor(Math.floor(height / 2) / 2) * Math.floor(Math.floor(imageWidth / 2) / 2) * inChannels;
    this.classifier = store.linear('linear', this.featureSize, common.numClasses, 'pytorch');
  }

  protected get head(): LinearParameters {
    return this.classifier;
  }

  protected features(inputs: tf.Tensor4D, context: PassContext): tf.Tensor2D {
    let x = inputs;
    for (const stage of this.stages) {
      for (const layer of stage) x = normalizeRelu(convolve(x, layer.convolution), layer.batchNorm, context);
      x = tf.maxPool(x, 2, 2, 'valid');
    }
    return dropout(tf.reshape(x, [x.shape[0], this.featureSize]), this.dropoutRate, context);
  }
}

/**
 * A small batch-normalised CNN for quick experiments (Fashion-MNIST, CIFAR). Names: `block1.conv1.weight`,
 * `block1.bn1.running_mean`, …, `block2.bn2.*`, `linear.weight`. The flattened features are in NHWC order.
 *
 * @example const model = smallCnn({ inputShape: [28, 28, 1], width: 16 });
 */
export function smallCnn(options: SmallCnnOptions = {}): ClassifierModel {
  return new SmallCnn(options);
}
