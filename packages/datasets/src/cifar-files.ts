import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError, DataError, Random, assertChoice, assertKnownOptions, assertNumber } from '@regstack/regularizer';
import { parseCifar10, parseCifar100, type Cifar100LabelKind } from './cifar.js';
import { randomSubset } from './dataset.js';
import { exists, locateDirectory } from './files.js';
import { withHoldOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { cifarNormalization } from './normalization.js';

/** Options of {@link loadCifar10}. */
export interface Cifar10Options extends HoldOutOptions {
  /** The unpacked `cifar-10-binary.tar.gz`: `cifar-10-batches-bin` or the folder that holds it. */
  directory: string;
}

/** Options of {@link loadCifar100}. */
export interface Cifar100Options extends HoldOutOptions {
  /** The unpacked `cifar-100-binary.tar.gz`: `cifar-100-binary` or the folder that holds it. */
  directory: string;
  /** Label by the 100 fine classes (default) or the 20 coarse superclasses. */
  labels?: Cifar100LabelKind;
  /**
   * Keep only this many training examples: the first N of a permutation seeded by `subsetSeed`
   * (2000 and 10000 give CIFAR-100-2k and -10k). The validation hold-out is then taken from the
   * subset. Default: all 50 000.
   */
  trainSize?: number;
  /** Seed of the training subset's permutation (default 0). */
  subsetSeed?: number;
}

const CIFAR_LICENSE = 'CIFAR-10/100 (Krizhevsky 2009): free to use; cite "Learning Multiple Layers of Features from Tiny Images"';

const readBinary = async (path: string, field: string): Promise<Uint8Array> => {
  try {
    return await readFile(path);
  } catch (error) {
    throw new DataError(field, `cannot read ${path}`, { cause: error });
  }
};

/** CIFAR-10 from the binary version: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`. */
export async function loadCifar10(options: Cifar10Options): Promise<LoadedDataset> {
  assertKnownOptions('loadCifar10', options, ['directory', 'validationFraction', 'seed']);
  const directory = await locateDirectory(
    options?.directory,
    'cifar-10-batches-bin',
    'test_batch.bin',
    'loadCifar10.directory',
    'Download and unpack the binary version, cifar-10-binary.tar.gz, from https://www.cs.toronto.edu/~kriz/cifar.html',
  );
  const trainFiles = [1, 2, 3, 4, 5].map((index) => `data_batch_${index}.bin`);
  const present = [];
  for (const name of trainFiles) if (await exists(join(directory, name))) present.push(name);
  if (present.length === 0) throw new DataError('loadCifar10.directory', `${directory} holds test_batch.bin but no data_batch_*.bin`);
  // Tests and partial copies may hold fewer than five training batches; the full set has all five.
  const trainBytes = await Promise.all(present.map((name) => readBinary(join(directory, name), `loadCifar10.${name}`)));
  const fullTrain = parseCifar10(trainBytes, 'cifar10/train');
  const test = parseCifar10([await readBinary(join(directory, 'test_batch.bin'), 'loadCifar10.test_batch.bin')], 'cifar10/test');
  return withHoldOut(fullTrain, test, options, 'loadCifar10', {
    name: 'cifar10',
    numClasses: 10,
    imageShape: [32, 32, 3],
    normalization: cifarNormalization,
    source: directory,
    license: CIFAR_LICENSE,
    classNames: fullTrain.classNames!,
  });
}

async function readNames(path: string): Promise<string[] | undefined> {
  if (!(await exists(path))) return undefined;
  return (await readFile(path, 'utf8')).split(/\r?\n/).map((line) => line.trim()).filter((line) => line !== '');
}

/**
 * CIFAR-100 from the binary version (`train.bin`, `test.bin`; class names from
 * `fine_label_names.txt` / `coarse_label_names.txt` when present), optionally reduced to a seeded
 * training subset such as CIFAR-100-2k or -10k.
 */
export async function loadCifar100(options: Cifar100Options): Promise<LoadedDataset> {
  assertKnownOptions('loadCifar100', options, ['directory', 'labels', 'trainSize', 'subsetSeed', 'validationFraction', 'seed']);
  const labelKind = assertChoice('loadCifar100.labels', options.labels ?? 'fine', ['fine', 'coarse'] as const);
  const directory = await locateDirectory(
    options?.directory,
    'cifar-100-binary',
    'train.bin',
    'loadCifar100.directory',
    'Download and unpack the binary version, cifar-100-binary.tar.gz, from https://www.cs.toronto.edu/~kriz/cifar.html',
  );
  const fine = await readNames(join(directory, 'fine_label_names.txt'));
  const coarse = await readNames(join(directory, 'coarse_label_names.txt'));
  const classNames = {
    ...(fine?.length === 100 ? { fine } : {}),
    ...(coarse?.length === 20 ? { coarse } : {}),
  };
  let fullTrain = parseCifar100(await readBinary(join(directory, 'train.bin'), 'loadCifar100.train.bin'), 'cifar100/train', labelKind, classNames);
  const test = parseCifar100(await readBinary(join(directory, 'test.bin'), 'loadCifar100.test.bin'), 'cifar100/test', labelKind, classNames);
  let name = labelKind === 'fine' ? 'cifar100' : 'cifar100-coarse';
  if (options.trainSize !== undefined) {
    const trainSize = assertNumber('loadCifar100.trainSize', options.trainSize, { min: 1, max: fullTrain.size, integer: true });
    const subsetSeed = assertNumber('loadCifar100.subsetSeed', options.subsetSeed ?? 0, { integer: true });
    fullTrain = randomSubset(fullTrain, trainSize, new Random(subsetSeed));
    name = `${name}-${trainSize % 1000 === 0 ? `${trainSize / 1000}k` : trainSize}`;
  } else if (options.subsetSeed !== undefined) {
    throw new ConfigError('loadCifar100.subsetSeed', 'only applies with trainSize');
  }
  return withHoldOut(fullTrain, test, options, 'loadCifar100', {
    name,
    numClasses: fullTrain.numClasses,
    imageShape: [32, 32, 3],
    normalization: cifarNormalization,
    source: directory,
    license: CIFAR_LICENSE,
    ...(fullTrain.classNames !== undefined ? { classNames: fullTrain.classNames } : {}),
  });
}
