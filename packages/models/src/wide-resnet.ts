import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, assertNumber } from '@regstack/regularizer';
import type { BatchNormParameters } from './batch-norm.js';
import {
  ParameterStore,
  convolve,
  dropout,
  globalAveragePool,
  normalize,
  normalizeRelu,
  type ConvolutionParameters,
  type LinearParameters,
  type PassContext,
} from './layers.js';
import { NetworkModel, type ClassifierModel } from './model.js';
import { batchNormOptionKeys, resolveBatchNormSettings, resolveCommonOptions, type BatchNormModelOptions } from './options.js';

/** Options of {@link wideResNet}. */
export interface WideResNetOptions extends BatchNormModelOptions {
  /** Depth d with (d − 4) divisible by 6; (d − 4)/6 blocks per stage. Default 28. */
  depth?: number;
  /** Widening factor k: stages have 16k, 32k, 64k channels. Default 10. */
  widen?: number;
  /** Dropout rate between the two convolutions of each block. Default 0.3 (WRN-16-8 on SVHN uses 0.4). */
  dropout?: number;
}

interface WideBasicBlock {
  batchNorm1: BatchNormParameters;
  convolution1: ConvolutionParameters;
  batchNorm2: BatchNormParameters;
  convolution2: ConvolutionParameters;
  /** A 1×1 projection where channels or stride change; the identity otherwise. */
  shortcut?: ConvolutionParameters;
}

const optionKeys = [...batchNormOptionKeys, 'depth', 'widen', 'dropout'] as const;

/**
 * Wide ResNet (Zagoruyko & Komodakis 2016) with pre-activation wide basic blocks, laid out as the
 * PyTorch reference implementation that RCAD's script uses: BN-ReLU-conv3×3, dropout, BN-ReLU-conv3×3;
 * where the block changes shape, the projection shortcut reads the block's first BN-ReLU output.
 * Bias-free convolutions, final BN-ReLU, global average pooling, linear classifier.
 */
class WideResNet extends NetworkModel {
  private readonly stem: ConvolutionParameters;
  private readonly blocks: WideBasicBlock[] = [];
  private readonly finalBatchNorm: BatchNormParameters;
  private readonly classifier: LinearParameters;
  private readonly dropoutRate: number;

  override get stochastic(): boolean {
    return this.dropoutRate > 0;
  }
  readonly featureSize: number;

  constructor(options: WideResNetOptions) {
    const common = resolveCommonOptions('wideResNet', options, optionKeys);
    const depth = assertNumber('wideResNet.depth', options.depth ?? 28, { min: 10, integer: true });
    if ((depth - 4) % 6 !== 0) throw new ConfigError('wideResNet.depth', `(depth − 4) must be divisible by 6, got ${depth}`);
    const widen = assertNumber('wideResNet.widen', options.widen ?? 10, { min: 1, integer: true });
    const dropoutRate = assertNumber('wideResNet.dropout', options.dropout ?? 0.3, { min: 0, max: 1, maxExclusive: true });
    const store = new ParameterStore(common.random, resolveBatchNormSettings('wideResNet', options));
    super(`wrn-${depth}-${widen}`, common, store);
    this.dropoutRate = dropoutRate;
    this.stem = store.convolution('conv1', { size: 3, inChannels: common.inputShape[2], outChannels: 16 }, 'wide-resnet');
    const blocksPerStage = (depth - 4) / 6;
    let inChannels = 16;
    [1, 2, 4].forEach((multiplier, stage) => {
      const outChannels = 16 * widen * multiplier;
      for (let index = 0; index < blocksPerStage; index++) {
        const stride = stage > 0 && index === 0 ? 2 : 1;
        const prefix = `block${stage + 1}.layer.${index}`;
        const block: WideBasicBlock = {
          batchNorm1: store.batchNorm(`${prefix}.bn1`, inChannels),
          convolution1: store.convolution(`${prefix}.conv1`, { size: 3, inChannels, outChannels, stride }, 'wide-resnet'),
          batchNorm2: store.batchNorm(`${prefix}.bn2`, outChannels),
          convolution2: store.convolution(`${prefix}.conv2`, { size: 3, inChannels: outChannels, outChannels }, 'wide-resnet'),
        };
        if (inChannels !== outChannels || stride !== 1) {
          block.shortcut = store.convolution(`${prefix}.convShortcut`, { size: 1, inChannels, outChannels, stride }, 'wide-resnet');
        }
        this.blocks.push(block);
        inChannels = outChannels;
      }
    });
    this.finalBatchNorm = store.batchNorm('bn1', inChannels);
    this.featureSize = inChannels;
    this.classifier = store.linear('fc', inChannels, common.numClasses, 'wide-resnet');
  }

  protected get head(): LinearParameters {
    return this.classifier;
  }

  protected features(inputs: tf.Tensor4D, context: PassContext): tf.Tensor2D {
    let x = convolve(inputs, this.stem);
    for (const block of this.blocks) {
      const activated = normalizeRelu(x, block.batchNorm1, context);
      let out = normalizeRelu(convolve(activated, block.convolution1), block.batchNorm2, context);
      out = convolve(dropout(out, this.dropoutRate, context), block.convolution2);
      x = tf.add(block.shortcut ? convolve(activated, block.shortcut) : x, out);
    }
    return globalAveragePool(normalizeRelu(x, this.finalBatchNorm, context));
  }
}

/**
 * A Wide ResNet WRN-depth-widen. Variable names follow the PyTorch reference
 * (`conv1.weight`, `block1.layer.0.bn1.weight`, `block2.layer.0.convShortcut.weight`, `bn1.running_var`, `fc.bias`).
 * Initialisation as that reference: conv weights N(0, 2/(k²·C_out)), BN γ = 1, β = 0, linear bias 0
 * (linear weights PyTorch's default).
 *
 * @example const model = wideResNet({ depth: 28, widen: 10, dropout: 0.3, numClasses: 100 });
 */
export function wideResNet(options: WideResNetOptions = {}): ClassifierModel {
  return new WideResNet(options);
}
