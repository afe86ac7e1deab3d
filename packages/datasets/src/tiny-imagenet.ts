import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { DataError, assertKnownOptions, assertNumber } from '@regstack/regularizer';
import { Dataset } from './dataset.js';
import { exists, locateDirectory } from './files.js';
import { withHoldOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { imageNetNormalization } from './normalization.js';

/** Options of {@link loadTinyImageNet}. */
export interface TinyImageNetOptions extends HoldOutOptions {
  /** The unpacked `tiny-imagenet-200.zip`: `tiny-imagenet-200` or the folder that holds it. */
  directory: string;
  /** Read at most this many training images per class, in file-name order (default all 500). */
  maxPerClass?: number;
}

const SIDE = 64;
const IMAGE_BYTES = SIDE * SIDE * 3;

/** Decodes one JPEG to 64×64 RGB bytes; grayscale images come back with the gray value in all three channels. */
export function decodeJpeg(bytes: Uint8Array, field: string, side = SIDE): Uint8Array {
  let image: { width: number; height: number; data: Uint8Array };
  try {
    image = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false });
  } catch (error) {
    throw new DataError(field, 'not a decodable JPEG', { cause: error });
  }
  if (image.width !== side || image.height !== side) {
    throw new DataError(field, `is ${image.width}×${image.height}, expected ${side}×${side}`);
  }
  return image.data;
}

async function readImages(paths: readonly string[], field: string): Promise<Uint8Array> {
  const images = new Uint8Array(paths.length * IMAGE_BYTES);
  for (const [position, path] of paths.entries()) {
    images.set(decodeJpeg(await readFile(path), `${field}: ${path}`), position * IMAGE_BYTES);
  }
  return images;
}

/**
 * Tiny ImageNet (200 classes of 64×64 images): training images from `train/<wnid>/images/*.JPEG`,
 * the official validation set (labelled by `val/val_annotations.txt`) as the test set, class order
 * from `wnids.txt`, class names from `words.txt` when present. The unlabelled `test/` folder is not read.
 */
export async function loadTinyImageNet(options: TinyImageNetOptions): Promise<LoadedDataset> {
  assertKnownOptions('loadTinyImageNet', options, ['directory', 'maxPerClass', 'validationFraction', 'seed']);
  const maxPerClass =
    options.maxPerClass === undefined ? Infinity : assertNumber('loadTinyImageNet.maxPerClass', options.maxPerClass, { min: 1, integer: true });
  const directory = await locateDirectory(
    options?.directory,
    'tiny-imagenet-200',
    'wnids.txt',
    'loadTinyImageNet.directory',
    'Download and unpack tiny-imagenet-200.zip from http://cs231n.stanford.edu/tiny-imagenet-200.zip',
  );
  const wnids = (await readFile(join(directory, 'wnids.txt'), 'utf8')).split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
  const classIndex = new Map(wnids.map((wnid, index) => [wnid, index]));
  const trainPaths: string[] = [];
  const trainLabels: number[] = [];
  for (const [label, wnid] of wnids.entries()) {
    const folder = join(directory, 'train', wnid, 'images');
    if (!(await exists(folder))) throw new DataError('loadTinyImageNet.directory', `${folder} is missing (class ${wnid} of wnids.txt)`);
    const names = (await readdir(folder)).filter((name) => /\.jpe?g$/i.test(name)).sort();
    for (const name of names.slice(0, maxPerClass)) {
      trainPaths.push(join(folder, name));
      trainLabels.push(label);
    }
  }
  const annotations = join(directory, 'val', 'val_annotations.txt');
  if (!(await exists(annotations))) throw new DataError('loadTinyImageNet.directory', `${annotations} is missing`);
  const testPaths: string[] = [];
  const testLabels: number[] = [];
  for (const [lineNumber, line] of (await readFile(annotations, 'utf8')).split(/\r?\n/).entries()) {
    if (line.trim() === '') continue;
    const [file, wnid] = line.split('\t');
    const label = wnid === undefined ? undefined : classIndex.get(wnid);
    if (file === undefined || label === undefined) {
      throw new DataError(`loadTinyImageNet.val_annotations.txt:${lineNumber + 1}`, `"${line}" does not name an image and a class of wnids.txt`);
    }
    testPaths.push(join(directory, 'val', 'images', file));
    testLabels.push(label);
  }
  const classNames = await readWords(join(directory, 'words.txt'), wnids);
  const make = async (paths: string[], labels: number[], name: string): Promise<Dataset> =>
    new Dataset({
      name,
      images: await readImages(paths, `loadTinyImageNet.${name}`),
      labels: Int32Array.from(labels),
      imageShape: [SIDE, SIDE, 3],
      numClasses: wnids.length,
      classNames,
    });
  const fullTrain = await make(trainPaths, trainLabels, 'tiny-imagenet/train');
  const test = await make(testPaths, testLabels, 'tiny-imagenet/test');
  return withHoldOut(fullTrain, test, options, 'loadTinyImageNet', {
    name: 'tiny-imagenet',
    numClasses: wnids.length,
    imageShape: [SIDE, SIDE, 3],
    normalization: imageNetNormalization,
    source: directory,
    license: 'Tiny ImageNet (Stanford CS231n): ImageNet terms of access, non-commercial research and education',
    classNames,
  });
}

/** Class names from `words.txt` (`<wnid>\t<words>`), falling back to the wnid. */
async function readWords(path: string, wnids: readonly string[]): Promise<string[]> {
  const words = new Map<string, string>();
  if (await exists(path)) {
    for (const line of (await readFile(path, 'utf8')).split(/\r?\n/)) {
      const tab = line.indexOf('\t');
      if (tab > 0) words.set(line.slice(0, tab), line.slice(tab + 1).trim());
    }
  }
  return wnids.map((wnid) => words.get(wnid) ?? wnid);
}
