import type { LoadedDataset } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { loadCifar10, loadCifar100, loadFashionMnist, loadSvhn, loadTinyImageNet } from '@regstack/datasets/node';
import { ConfigError, Random } from '@regstack/regularizer';

/** Data sets the command line loads by name. */
export const DATASET_NAMES = [
  'fashion-mnist-embedded',
  'fashion-mnist',
  'cifar10',
  'cifar100',
  'cifar100-2k',
  'cifar100-10k',
  'svhn',
  'tiny-imagenet',
] as const;
export type DatasetName = (typeof DATASET_NAMES)[number];

/** Which data a job trains on. */
export interface DataSpec {
  name: DatasetName;
  /** Folder of the official files (all but the embedded subset; Fashion-MNIST also looks in Debian's location). */
  directory?: string;
  /** Keep only this many training examples (a seeded, class-balanced subset where the loader has none of its own). */
  trainSize?: number;
  /** Keep only this many test examples (first N): for quick runs. */
  testSize?: number;
  /** SVHN: add the extra split. */
  includeExtra?: boolean;
}

const needsDirectory = (spec: DataSpec): string => {
  if (!spec.directory) throw new ConfigError('--data-dir', `data set '${spec.name}' needs the folder of its official files`);
  return spec.directory;
};

/**
 * Loads a data set with a 10% seeded validation hold-out (seed 0, the same for every job, so all
 * stacks are compared on the same split), or with none (`holdOut: false`: `validation` is empty).
 */
export async function loadData(spec: DataSpec, options: { holdOut?: boolean } = {}): Promise<LoadedDataset> {
  const fraction = options.holdOut === false ? 0 : 0.1;
  // With a training subset the hold-out is taken from the subset, so it is made below instead.
  const subsetHere = spec.trainSize !== undefined && !spec.name.startsWith('cifar100');
  const holdOut = { validationFraction: subsetHere ? 0 : fraction, seed: 0 };
  let loaded: LoadedDataset;
  switch (spec.name) {
    case 'fashion-mnist-embedded':
      loaded = loadEmbeddedFashionMnist(holdOut);
      break;
    case 'fashion-mnist':
      loaded = await loadFashionMnist({ ...holdOut, ...(spec.directory ? { directory: spec.directory } : {}), progress: false });
      break;
    case 'cifar10':
      loaded = await loadCifar10({ ...holdOut, directory: needsDirectory(spec) });
      break;
    case 'cifar100':
    case 'cifar100-2k':
    case 'cifar100-10k': {
      // The paper's subsets: the first N of a seeded permutation of the training set (numpy seed 43 in the reference).
      const trainSize = spec.name === 'cifar100-2k' ? 2000 : spec.name === 'cifar100-10k' ? 10000 : spec.trainSize;
      loaded = await loadCifar100({ ...holdOut, directory: needsDirectory(spec), ...(trainSize ? { trainSize, subsetSeed: 43 } : {}) });
      break;
    }
    case 'svhn':
      loaded = await loadSvhn({ ...holdOut, directory: needsDirectory(spec), includeExtra: spec.includeExtra ?? false });
      break;
    case 'tiny-imagenet':
      loaded = await loadTinyImageNet({ ...holdOut, directory: needsDirectory(spec) });
      break;
    default:
      throw new ConfigError('--data', `unknown data set '${String(spec.name)}'; known: ${DATASET_NAMES.join(', ')}`);
  }
  if (subsetHere) {
    // The first N of a seeded permutation (as the reference's CIFAR-100-2k), then the 10% hold-out from it.
    const size = Math.min(spec.trainSize!, loaded.train.size);
    const order = new Random(43).permutation(loaded.train.size);
    const subset = loaded.train.subset(order.slice(0, size), `${loaded.train.name}[${size}]`);
    loaded = { ...loaded, ...subset.split({ fraction, random: new Random(0) }) };
  }
  if (spec.testSize !== undefined && spec.testSize < loaded.test.size) {
    loaded = { ...loaded, test: loaded.test.subset(Int32Array.from({ length: spec.testSize }, (_, i) => i)) };
  }
  return loaded;
}
