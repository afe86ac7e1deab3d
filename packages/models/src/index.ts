/**
 * Classifiers for regstack built from tfjs-core ops: ResNet-18 (CIFAR), Wide ResNets, a small CNN,
 * an MLP and a linear model, with PyTorch-style batch normalisation and initialisation.
 *
 * @packageDocumentation
 */
export { createModel, modelNames, type ModelOptionsByName } from './create-model.js';
export { resnet18, type ResNet18Options } from './resnet.js';
export { wideResNet, type WideResNetOptions } from './wide-resnet.js';
export { smallCnn, type SmallCnnOptions } from './small-cnn.js';
export { mlp, linearClassifier, type MlpOptions, type LinearClassifierOptions } from './mlp.js';
export type { ClassifierModel, ModelName } from './model.js';
export type { CommonModelOptions, BatchNormModelOptions } from './options.js';
export {
  batchNormalization,
  CHANNEL_MOMENTS_KERNEL,
  CHANNEL_SUMS_KERNEL,
  BATCH_NORM_KERNEL,
  BATCH_NORM_GRAD_KERNEL,
  type BatchNormParameters,
  type BatchNormOptions,
} from './batch-norm.js';
export { saveWeights, loadWeights, exportNamedTensors, importNamedTensors, type SavedWeights, type SavedTensor, type LoadWeightsOptions } from './weights.js';
export { normalizations } from './normalizations.js';
