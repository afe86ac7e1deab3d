import * as tf from '@tensorflow/tfjs-core';
import { assertNumber } from '@regstack/regularizer';
import type { BatchNormParameters } from './batch-norm.js';
import {
  ParameterStore,
  convolve,
  globalAveragePool,
  normalize,
  normalizeAddRelu,
  normalizeRelu,
  type ConvolutionParameters,
  type LinearParameters,
  type PassContext,
} from './layers.js';
import { NetworkModel, type ClassifierModel } from './model.js';
import { batchNormOptionKeys, resolveBatchNormSettings, resolveCommonOptions, type BatchNormModelOptions } from './options.js';

/** Options of {@link resnet18}. */
export interface ResNet18Options extends BatchNormModelOptions {
  /** Channels of the first stage; the stages have width, 2·width, 4·width, 8·width. Default 64. */
  width?: number;
}

interface BasicBlock {
  convolution1: ConvolutionParameters;
  batchNorm1: BatchNormParameters;
  convolution2: ConvolutionParameters;
  batchNorm2: BatchNormParameters;
  shortcut?: { convolution: ConvolutionParameters; batchNorm: BatchNormParameters };
}

const optionKeys = [...batchNormOptionKeys, 'width'] as const;

/**
 * ResNet-18, CIFAR variant (He et al. 2016, as commonly trained on CIFAR): a 3×3 stride-1 stem
 * without max-pool, BasicBlocks [2, 2, 2, 2], stride-2 downsampling with a 1×1 conv + BN
 * shortcut, global average pooling and a linear classifier. Convolutions have no bias.
 */
class ResNet18 extends NetworkModel {
  private readonly stem: { convolution: ConvolutionParameters; batchNorm: BatchNormParameters };
  private readonly blocks: BasicBlock[] = [];
  private readonly classifier: LinearParameters;
  readonly featureSize: number;

  constructor(options: ResNet18Options) {
    const common = resolveCommonOptions('resnet18', options, optionKeys);
    const width = assertNumber('resnet18.width', options.width ?? 64, { min: 1, integer: true });
    const store = new ParameterStore(common.random, resolveBatchNormSettings('resnet18', options));
    super('resnet18', common, store);
    this.stem = {
      convolution: store.convolution('conv1', { size: 3, inChannels: common.inputShape[2], outChannels: width }, 'pytorch'),
      batchNorm: store.batchNorm('bn1', width),
    };
    let inChannels = width;
    [1, 2, 4, 8].forEach((multiplier, stage) => {
      const outChannels = width * multiplier;
      for (let index = 0; index < 2; index++) {
        const stride = stage > 0 && index === 0 ? 2 : 1;
        const prefix = `layer${stage + 1}.${index}`;
        const block: BasicBlock = {
          convolution1: store.convolution(`${prefix}.conv1`, { size: 3, inChannels, outChannels, stride }, 'pytorch'),
          batchNorm1: store.batchNorm(`${prefix}.bn1`, outChannels),
          convolution2: store.convolution(`${prefix}.conv2`, { size: 3, inChannels: outChannels, outChannels }, 'pytorch'),
          batchNorm2: store.batchNorm(`${prefix}.bn2`, outChannels),
        };
        if (stride !== 1 || inChannels !== outChannels) {
          block.shortcut = {
            convolution: store.convolution(`${prefix}.shortcut.0`, { size: 1, inChannels, outChannels, stride }, 'pytorch'),
            batchNorm: store.batchNorm(`${prefix}.shortcut.1`, outChannels),
          };
        }
        this.blocks.push(block);
        inChannels = outChannels;
      }
    });
    this.featureSize = inChannels;
    this.classifier = store.linear('linear', inChannels, common.numClasses, 'pytorch');
  }

  protected get head(): LinearParameters {
    return this.classifier;
  }

  protected features(inputs: tf.Tensor4D, context: PassContext): tf.Tensor2D {
    let x = normalizeRelu(convolve(inputs, this.stem.convolution), this.stem.batchNorm, context);
    for (const block of this.blocks) {
      const residual = block.shortcut
        ? normalize(convolve(x, block.shortcut.convolution), block.shortcut.batchNorm, context)
        : x;
      const out = normalizeRelu(convolve(x, block.convolution1), block.batchNorm1, context);
      x = normalizeAddRelu(convolve(out, block.convolution2), residual, block.batchNorm2, context);
    }
    return globalAveragePool(x);
  }
}

/**
 * ResNet-18 for CIFAR-sized inputs. Variable names follow the common PyTorch CIFAR implementation
 * (`conv1.weight`, `layer1.0.bn1.running_mean`, `layer2.0.shortcut.0.weight`, `linear.bias`).
 *
 * @example const model = resnet18({ numClasses: 100, mean: [0.491, 0.482, 0.447], std: [0.247, 0.243, 0.262] });
 */
export function resnet18(options: ResNet18Options = {}): ClassifierModel {
  return new ResNet18(options);
}
