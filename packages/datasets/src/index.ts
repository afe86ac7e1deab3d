export {
  Dataset,
  balancedSubset,
  randomSubset,
  concatenateDatasets,
  type DatasetInit,
  type ImageShape,
  type ImageStorage,
  type DatasetBatch,
  type Batch,
  type BatchOptions,
  type SplitOptions,
} from './dataset.js';
export {
  randomCropWithPadding,
  randomHorizontalFlip,
  standardAugmentation,
  createStandardAugmentation,
  type Augmentation,
  type StandardAugmentationOptions,
} from './augmentation.js';
export {
  normalization,
  cifarNormalization,
  svhnNormalization,
  fashionMnistNormalization,
  imageNetNormalization,
  channelStatistics,
  type NormalizationConstants,
} from './normalization.js';
export { parseIdx, datasetFromIdx, fashionMnistClassNames, fashionMnistLicense, type IdxArray } from './idx.js';
export {
  parseCifar10,
  parseCifar100,
  parseCifar100Records,
  cifar10ClassNames,
  type Cifar100LabelKind,
  type Cifar100Parsed,
} from './cifar.js';
// The embedded Fashion-MNIST subset is its own entry, `@regstack/datasets/embedded`: 3.3 MB that no other import should bundle.
export { decodeBase64 } from './base64.js';
export { holdOut, type LoadedDataset, type DatasetInfo, type HoldOutOptions } from './loaded.js';
