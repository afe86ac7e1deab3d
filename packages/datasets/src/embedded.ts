/**
 * `@regstack/datasets/embedded`: the Fashion-MNIST subset shipped inside the package. A separate entry
 * so that importing anything else from `@regstack/datasets` never bundles its 3.3 MB.
 */
import { DataError, assertKnownOptions } from '@regstack/regularizer';
// JSON rather than a module so that the ES-module and CommonJS builds share the one shipped file (both
// keep this import as written: `data/` sits beside `src/` and `dist/`). See scripts/build-embedded.mjs.
import subset from '../data/fashion-mnist-subset.json' with { type: 'json' };
import { decodeBase64 } from './base64.js';
import { Dataset } from './dataset.js';
import { fashionMnistClassNames, fashionMnistLicense } from './idx.js';
import { withHoldOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { fashionMnistNormalization } from './normalization.js';

/** How the embedded subset was made: which images, and the SHA-256 of the official files it came from. */
export interface EmbeddedFashionMnistSource {
  readonly selection: string;
  readonly trainPerClass: number;
  readonly testPerClass: number;
  readonly imageShape: readonly number[];
  readonly sourceSha256: { readonly trainImages: string; readonly trainLabels: string; readonly testImages: string; readonly testLabels: string };
}

/** How the embedded subset was made (read from the shipped data). */
export const embeddedFashionMnistSource: EmbeddedFashionMnistSource = subset.source;

function decodeSplit(imageLines: readonly string[], labelLines: readonly string[], name: string): Dataset {
  const images = decodeBase64(imageLines.join(''));
  const labels = Int32Array.from(decodeBase64(labelLines.join('')));
  if (images.length !== labels.length * 784) {
    throw new DataError(name, `embedded data are corrupt: ${images.length} bytes for ${labels.length} images; rebuild with scripts/build-embedded.mjs`);
  }
  return new Dataset({ name, images, labels, imageShape: [28, 28, 1], numClasses: 10, classNames: fashionMnistClassNames });
}

/**
 * The class-balanced Fashion-MNIST subset shipped inside the package (200 training and 100 test
 * images per class, 2.3 MB as bytes), for demos and tests that must run offline, in Node or in a
 * browser bundle. The training part is split into train and a seeded validation hold-out
 * (10% by default; pass `validationFraction: 0` to keep all 2000 for training).
 */
export function loadEmbeddedFashionMnist(options: HoldOutOptions = {}): LoadedDataset {
  assertKnownOptions('loadEmbeddedFashionMnist', options, ['validationFraction', 'seed']);
  const fullTrain = decodeSplit(subset.trainImagesBase64, subset.trainLabelsBase64, 'fashion-mnist-embedded/train');
  const test = decodeSplit(subset.testImagesBase64, subset.testLabelsBase64, 'fashion-mnist-embedded/test');
  return withHoldOut(fullTrain, test, options, 'loadEmbeddedFashionMnist', {
    name: 'fashion-mnist-embedded',
    numClasses: 10,
    imageShape: [28, 28, 1],
    normalization: fashionMnistNormalization,
    source: `embedded: ${embeddedFashionMnistSource.selection} (${embeddedFashionMnistSource.trainPerClass} train, ${embeddedFashionMnistSource.testPerClass} test per class)`,
    license: fashionMnistLicense,
    classNames: fashionMnistClassNames,
  });
}
