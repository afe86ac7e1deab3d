import { Random, assertNumber } from '@regstack/regularizer';
import type { Dataset } from './dataset.js';
import type { NormalizationConstants } from './normalization.js';

/** What every loader returns: the splits and a description. */
export interface LoadedDataset {
  /** Training examples (without the validation hold-out). */
  train: Dataset;
  /** The seeded hold-out from the training set (empty when `validationFraction` is 0). */
  validation: Dataset;
  /** The official test set. */
  test: Dataset;
  /** Where the data came from and how to normalise them. */
  info: DatasetInfo;
}

/** A description of a loaded data set. */
export interface DatasetInfo {
  /** Data set name, e.g. `cifar10`. */
  name: string;
  /** Number of classes. */
  numClasses: number;
  /** Shape of one image. */
  imageShape: readonly [number, number, number];
  /** Per-channel constants for the model's input normalisation. */
  normalization: NormalizationConstants;
  /** Where the files were read from (a directory, a URL, or `embedded`). */
  source: string;
  /** Licence or terms of use of the data. */
  license: string;
  /** Class names by label, when known. */
  classNames?: readonly string[];
}

/** The validation hold-out options every loader takes. */
export interface HoldOutOptions {
  /** Share of the training set held out for validation, in [0, 1) (default 0.1). */
  validationFraction?: number;
  /** Seed of the hold-out draw (default 0). */
  seed?: number;
}

/** Splits the hold-out off `train` with a generator seeded from `options.seed`. */
export function holdOut(train: Dataset, options: HoldOutOptions, owner: string): { train: Dataset; validation: Dataset } {
  const fraction = assertNumber(`${owner}.validationFraction`, options.validationFraction ?? 0.1, { min: 0, max: 1, maxExclusive: true });
  const seed = assertNumber(`${owner}.seed`, options.seed ?? 0, { integer: true });
  return train.split({ fraction, random: new Random(seed) });
}

/** A loader's result: the seeded hold-out split off `fullTrain` (see {@link holdOut}), the test split and the description. */
export function withHoldOut(fullTrain: Dataset, test: Dataset, options: HoldOutOptions, owner: string, info: DatasetInfo): LoadedDataset {
  return { ...holdOut(fullTrain, options, owner), test, info };
}
