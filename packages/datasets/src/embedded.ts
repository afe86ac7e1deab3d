import { DataError, assertKnownOptions } from '@regstack/regularizer';
import { Dataset } from './dataset.js';
import {
  embeddedFashionMnistSource,
  testImagesBase64,
  testLabelsBase64,
  trainImagesBase64,
  trainLabelsBase64,
} from './embedded/fashion-mnist-subset.js';
import { fashionMnistClassNames, fashionMnistLicense } from './idx.js';
import { holdOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { fashionMnistNormalization } from './normalization.js';

/** Decodes base64 with `atob`, which Node ≥ 16 and every browser provide, so no Node module is needed. */
export function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
  return bytes;
}

function decodeSplit(imagesBase64: string, labelsBase64: string, name: string): Dataset {
  const images = decodeBase64(imagesBase64);
  const labels = Int32Array.from(decodeBase64(labelsBase64));
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
  const fullTrain = decodeSplit(trainImagesBase64, trainLabelsBase64, 'fashion-mnist-embedded/train');
  const test = decodeSplit(testImagesBase64, testLabelsBase64, 'fashion-mnist-embedded/test');
  const { train, validation } = holdOut(fullTrain, options, 'loadEmbeddedFashionMnist');
  return {
    train,
    validation,
    test,
    info: {
      name: 'fashion-mnist-embedded',
      numClasses: 10,
      imageShape: [28, 28, 1],
      normalization: fashionMnistNormalization,
      source: `embedded: ${embeddedFashionMnistSource.selection} (${embeddedFashionMnistSource.trainPerClass} train, ${embeddedFashionMnistSource.testPerClass} test per class)`,
      license: fashionMnistLicense,
      classNames: fashionMnistClassNames,
    },
  };
}
