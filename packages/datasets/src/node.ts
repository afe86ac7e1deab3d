/**
 * File, disk and download loaders: Node only. The browser-safe parts (Dataset, batching,
 * augmentation, parsers) are in `@regstack/datasets`, the embedded subset in `@regstack/datasets/embedded`.
 */
export {
  loadFashionMnist,
  defaultCacheDirectory,
  debianFashionMnistDirectory,
  fashionMnistBaseUrl,
  fashionMnistFiles,
  fashionMnistChecksums,
  type FashionMnistOptions,
  type FashionMnistFile,
} from './fashion-mnist.js';
export { loadCifar10, loadCifar100, type Cifar10Options, type Cifar100Options } from './cifar-files.js';
export { loadSvhn, svhnFromMat, type SvhnOptions } from './svhn.js';
export { loadTinyImageNet, decodeJpeg, type TinyImageNetOptions } from './tiny-imagenet.js';
export { readMatV5, type MatArray } from './mat-v5.js';
export { downloadFile, terminalProgressBar, type Checksum, type DownloadOptions, type DownloadProgress } from './download.js';
export { readMaybeGzipped } from './files.js';
