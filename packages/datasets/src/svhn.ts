import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DataError, assertKnownOptions } from '@regstack/regularizer';
import { Dataset, concatenateDatasets } from './dataset.js';
import { exists } from './files.js';
import { withHoldOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { readMatV5, type MatArray } from './mat-v5.js';
import { svhnNormalization } from './normalization.js';

/** Options of {@link loadSvhn}. */
export interface SvhnOptions extends HoldOutOptions {
  /** Folder holding `train_32x32.mat`, `test_32x32.mat` and, for `includeExtra`, `extra_32x32.mat`. */
  directory: string;
  /** Add the 531 131 "extra" images to the training set (default false). */
  includeExtra?: boolean;
}

const SIDE = 32;
const HINT = 'Download the cropped digits (Format 2) train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/';

/**
 * An SVHN split from the variables of its `.mat` file: `X` is 32×32×3×N uint8 in MATLAB's
 * column-major order, `y` is N×1 with digits 1–9 and 10 standing for 0.
 */
export function svhnFromMat(variables: Map<string, MatArray>, name: string): Dataset {
  const images = variables.get('X');
  const targets = variables.get('y');
  if (images === undefined || targets === undefined) {
    throw new DataError(name, `expected variables X and y, found ${[...variables.keys()].join(', ') || 'none'}`);
  }
  const [height, width, channels, count = 1] = images.dimensions;
  if (height !== SIDE || width !== SIDE || channels !== 3 || images.dimensions.length > 4) {
    throw new DataError(`${name}.X`, `expected 32×32×3×N, got ${images.dimensions.join('×')}`);
  }
  if (!(images.values instanceof Uint8Array)) throw new DataError(`${name}.X`, `expected uint8 storage, got ${images.matlabClass}`);
  if (targets.values.length !== count) throw new DataError(`${name}.y`, `holds ${targets.values.length} labels for ${count} images`);
  const source = images.values;
  const pixels = new Uint8Array(count * SIDE * SIDE * 3);
  // Column-major X(row, column, channel, example) sits at row + 32·column + 1024·channel + 3072·example.
  let target = 0;
  for (let example = 0; example < count; example++) {
    for (let row = 0; row < SIDE; row++) {
      for (let column = 0; column < SIDE; column++) {
        const base = row + SIDE * column + 3072 * example;
        pixels[target++] = source[base]!;
        pixels[target++] = source[base + 1024]!;
        pixels[target++] = source[base + 2048]!;
      }
    }
  }
  const labels = new Int32Array(count);
  for (let example = 0; example < count; example++) {
    const digit = Number(targets.values[example]);
    if (!Number.isInteger(digit) || digit < 1 || digit > 10) throw new DataError(`${name}.y[${example}]`, `label ${digit} is not in 1–10`);
    labels[example] = digit === 10 ? 0 : digit;
  }
  return new Dataset({
    name,
    images: pixels,
    labels,
    imageShape: [SIDE, SIDE, 3],
    numClasses: 10,
    classNames: ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'],
  });
}

async function readSplit(directory: string, file: string, name: string): Promise<Dataset> {
  const path = join(directory, file);
  if (!(await exists(path))) throw new DataError(`loadSvhn.directory`, `${path} is missing. ${HINT}`);
  return svhnFromMat(readMatV5(await readFile(path), `loadSvhn.${file}`), name);
}

/** SVHN cropped digits from the official `.mat` files; label 10 becomes digit 0. */
export async function loadSvhn(options: SvhnOptions): Promise<LoadedDataset> {
  assertKnownOptions('loadSvhn', options, ['directory', 'includeExtra', 'validationFraction', 'seed']);
  if (typeof options?.directory !== 'string' || !(await exists(options.directory))) {
    throw new DataError('loadSvhn.directory', `${String(options?.directory)} does not exist. ${HINT}`);
  }
  let fullTrain = await readSplit(options.directory, 'train_32x32.mat', 'svhn/train');
  if (options.includeExtra === true) {
    fullTrain = concatenateDatasets([fullTrain, await readSplit(options.directory, 'extra_32x32.mat', 'svhn/extra')], 'svhn/train+extra');
  }
  const test = await readSplit(options.directory, 'test_32x32.mat', 'svhn/test');
  return withHoldOut(fullTrain, test, options, 'loadSvhn', {
    name: options.includeExtra === true ? 'svhn+extra' : 'svhn',
    numClasses: 10,
    imageShape: [SIDE, SIDE, 3],
    normalization: svhnNormalization,
    source: options.directory,
    license: 'SVHN (Netzer et al. 2011): non-commercial use only',
    classNames: fullTrain.classNames!,
  });
}
