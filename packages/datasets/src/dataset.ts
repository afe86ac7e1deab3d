import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, assertNumber, holdOutIndices, type Random } from '@regstack/regularizer';

/** Height, width and channels of one image (NHWC without the N). */
export type ImageShape = readonly [height: number, width: number, channels: number];

/**
 * Image storage. `Uint8Array` holds raw pixel bytes (0–255) and is divided by 255 when a batch is
 * made; `Float32Array` holds values already in [0, 1] and is copied as is.
 */
export type ImageStorage = Uint8Array | Float32Array;

/** What {@link Dataset}'s constructor takes. */
export interface DatasetInit {
  /** Name shown in errors and summaries, e.g. `cifar10/train`. */
  name: string;
  /** All images, example after example, each in height × width × channels order. */
  images: ImageStorage;
  /** One class index per example, in [0, numClasses). */
  labels: Int32Array;
  /** The shape of one image. */
  imageShape: ImageShape;
  /** Number of classes of the task (not only those present in this split). */
  numClasses: number;
  /** Human-readable class names, indexed by label, when known. */
  classNames?: readonly string[];
}

/**
 * One batch of a data set: float32 NHWC inputs in [0, 1] and int32 labels. The caller disposes both.
 * A `Batch` of `@regstack/regularizer` (what a step takes) with the image shape made precise.
 */
export interface DatasetBatch {
  /** `[batch, height, width, channels]` float32 in [0, 1]. */
  inputs: tf.Tensor4D;
  /** `[batch]` int32 class indices. */
  labels: tf.Tensor1D;
}

/** @deprecated Renamed {@link DatasetBatch}, so as not to be confused with `@regstack/regularizer`'s `Batch`. */
export type Batch = DatasetBatch;

/** Options of {@link Dataset.batches}. */
export interface BatchOptions {
  /** Examples per batch (the last one may be smaller unless `dropLast`). */
  batchSize: number;
  /** Shuffle the order (default true when `random` is given, else false). */
  shuffle?: boolean;
  /** The seeded generator that draws the order; required when `shuffle` is true. */
  random?: Random;
  /** Skip a last batch smaller than `batchSize` (default false). */
  dropLast?: boolean;
}

/** Options of {@link Dataset.split}. */
export interface SplitOptions {
  /** Share of examples held out for validation, in [0, 1) (default 0.1). */
  fraction?: number;
  /** The seeded generator that picks the held-out examples. */
  random: Random;
}

/**
 * A labelled image data set held in typed arrays. Images stay as compact storage (usually one byte
 * per value) and become float32 tensors one batch at a time, so a 50 000-image training set never
 * turns into one giant tensor.
 */
export class Dataset {
  /** Name shown in errors and summaries. */
  readonly name: string;
  /** All images, example after example, each height × width × channels. */
  readonly images: ImageStorage;
  /** One class index per example. */
  readonly labels: Int32Array;
  /** The shape of one image. */
  readonly imageShape: ImageShape;
  /** Number of classes of the task. */
  readonly numClasses: number;
  /** Human-readable class names, indexed by label, when known. */
  readonly classNames: readonly string[] | undefined;

  constructor(init: DatasetInit) {
    const { name, images, labels, imageShape, numClasses, classNames } = init;
    if (!(images instanceof Uint8Array) && !(images instanceof Float32Array)) {
      throw new DataError(`${name}.images`, 'expected a Uint8Array or a Float32Array');
    }
    if (!(labels instanceof Int32Array)) throw new DataError(`${name}.labels`, 'expected an Int32Array');
    if (imageShape.length !== 3 || imageShape.some((size) => !Number.isInteger(size) || size <= 0)) {
      throw new DataError(`${name}.imageShape`, `expected three positive integers, got [${imageShape.join(', ')}]`);
    }
    assertNumber(`${name}.numClasses`, numClasses, { min: 1, integer: true });
    const valuesPerImage = imageShape[0] * imageShape[1] * imageShape[2];
    if (images.length !== labels.length * valuesPerImage) {
      throw new DataError(
        `${name}.images`,
        `holds ${images.length} values but ${labels.length} labels × ${valuesPerImage} values per image = ${labels.length * valuesPerImage}`,
      );
    }
    for (let index = 0; index < labels.length; index++) {
      const label = labels[index]!;
      if (!(label >= 0 && label < numClasses)) {
        throw new DataError(`${name}.labels[${index}]`, `label ${label} is outside [0, ${numClasses})`);
      }
    }
    if (classNames !== undefined && classNames.length !== numClasses) {
      throw new DataError(`${name}.classNames`, `has ${classNames.length} names for ${numClasses} classes`);
    }
    this.name = name;
    this.images = images;
    this.labels = labels;
    this.imageShape = [imageShape[0], imageShape[1], imageShape[2]];
    this.numClasses = numClasses;
    this.classNames = classNames;
  }

  /** Number of examples. */
  get size(): number {
    return this.labels.length;
  }

  /** Values per image (height × width × channels). */
  get valuesPerImage(): number {
    return this.imageShape[0] * this.imageShape[1] * this.imageShape[2];
  }

  /** How many examples each class has. */
  classCounts(): Int32Array {
    const counts = new Int32Array(this.numClasses);
    for (const label of this.labels) counts[label]!++;
    return counts;
  }

  /** A new data set of the examples at `indices` (copied, in that order; repeats allowed). */
  subset(indices: ArrayLike<number>, name = `${this.name}/subset`): Dataset {
    const perImage = this.valuesPerImage;
    const images = this.images instanceof Uint8Array ? new Uint8Array(indices.length * perImage) : new Float32Array(indices.length * perImage);
    const labels = new Int32Array(indices.length);
    for (let position = 0; position < indices.length; position++) {
      const index = this.checkIndex(indices[position]!, `indices[${position}]`);
      images.set(this.images.subarray(index * perImage, (index + 1) * perImage), position * perImage);
      labels[position] = this.labels[index]!;
    }
    return new Dataset({ ...this.describe(), name, images, labels });
  }

  /**
   * Holds out a seeded random share for validation. Both parts keep the original order, so the
   * split depends only on the generator's state, not on how the data were shuffled before.
   */
  split(options: SplitOptions): { train: Dataset; validation: Dataset } {
    const fraction = assertNumber('split.fraction', options.fraction ?? 0.1, { min: 0, max: 1, maxExclusive: true });
    if (options.random === undefined) throw new ConfigError('split.random', 'a seeded Random is required');
    const { train, validation } = holdOutIndices(this.size, fraction, options.random);
    return {
      train: this.subset(train, `${this.name}/train`),
      validation: this.subset(validation, `${this.name}/validation`),
    };
  }

  /** Float32 inputs in [0, 1] and int32 labels for the examples at `indices`. The caller disposes both. */
  batch(indices: ArrayLike<number>): DatasetBatch {
    const perImage = this.valuesPerImage;
    const values = new Float32Array(indices.length * perImage);
    const labels = new Int32Array(indices.length);
    const scale = this.images instanceof Uint8Array ? 1 / 255 : 1;
    for (let position = 0; position < indices.length; position++) {
      const index = this.checkIndex(indices[position]!, `indices[${position}]`);
      const source = index * perImage;
      const target = position * perImage;
      if (scale === 1) {
        values.set(this.images.subarray(source, source + perImage), target);
      } else {
        for (let offset = 0; offset < perImage; offset++) values[target + offset] = this.images[source + offset]! * scale;
      }
      labels[position] = this.labels[index]!;
    }
    const [height, width, channels] = this.imageShape;
    return {
      inputs: tf.tensor4d(values, [indices.length, height, width, channels], 'float32'),
      labels: tf.tensor1d(labels, 'int32'),
    };
  }

  /** How many batches {@link batches} yields with these settings. */
  batchCount(batchSize: number, dropLast = false): number {
    assertNumber('batchSize', batchSize, { min: 1, integer: true });
    return dropLast ? Math.floor(this.size / batchSize) : Math.ceil(this.size / batchSize);
  }

  /**
   * Yields one {@link DatasetBatch} at a time; each is made only when asked for, and the caller disposes it.
   * A shuffled order comes from `random.permutation`, drawn when iteration starts.
   */
  *batches(options: BatchOptions): Generator<DatasetBatch, void, undefined> {
    const batchSize = assertNumber('batches.batchSize', options.batchSize, { min: 1, integer: true });
    const shuffle = options.shuffle ?? options.random !== undefined;
    if (shuffle && options.random === undefined) {
      throw new ConfigError('batches.random', 'shuffling needs a seeded Random');
    }
    const order = shuffle ? options.random!.permutation(this.size) : Int32Array.from({ length: this.size }, (_, index) => index);
    const count = this.batchCount(batchSize, options.dropLast ?? false);
    for (let batchIndex = 0; batchIndex < count; batchIndex++) {
      yield this.batch(order.subarray(batchIndex * batchSize, Math.min((batchIndex + 1) * batchSize, this.size)));
    }
  }

  /** The fields that describe the task, without the data: for making a data set of the same kind. */
  describe(): Omit<DatasetInit, 'images' | 'labels'> {
    return {
      name: this.name,
      imageShape: this.imageShape,
      numClasses: this.numClasses,
      ...(this.classNames !== undefined ? { classNames: this.classNames } : {}),
    };
  }

  private checkIndex(index: number, field: string): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.size) {
      throw new ConfigError(field, `index ${index} is outside [0, ${this.size}) of ${this.name}`);
    }
    return index;
  }
}

/** Joins data sets of the same image shape and class count, in order (e.g. SVHN train + extra). */
export function concatenateDatasets(datasets: readonly Dataset[], name?: string): Dataset {
  const first = datasets[0];
  if (first === undefined) throw new ConfigError('datasets', 'expected at least one data set');
  const floating = first.images instanceof Float32Array;
  let total = 0;
  for (const [position, dataset] of datasets.entries()) {
    if (dataset.imageShape.join('x') !== first.imageShape.join('x')) {
      throw new DataError(`datasets[${position}].imageShape`, `[${dataset.imageShape.join(', ')}] differs from [${first.imageShape.join(', ')}]`);
    }
    if (dataset.numClasses !== first.numClasses) {
      throw new DataError(`datasets[${position}].numClasses`, `${dataset.numClasses} differs from ${first.numClasses}`);
    }
    if ((dataset.images instanceof Float32Array) !== floating) {
      throw new DataError(`datasets[${position}].images`, 'mixes Uint8Array and Float32Array storage');
    }
    total += dataset.size;
  }
  const perImage = first.valuesPerImage;
  const images = floating ? new Float32Array(total * perImage) : new Uint8Array(total * perImage);
  const labels = new Int32Array(total);
  let offset = 0;
  for (const dataset of datasets) {
    images.set(dataset.images, offset * perImage);
    labels.set(dataset.labels, offset);
    offset += dataset.size;
  }
  return new Dataset({ ...first.describe(), name: name ?? datasets.map((dataset) => dataset.name).join('+'), images, labels });
}

/**
 * A class-balanced subset: `perClass` examples of every class, chosen at random by `random`, in the
 * data set's original order. Throws when a class has fewer than `perClass` examples.
 */
export function balancedSubset(dataset: Dataset, perClass: number, random: Random): Dataset {
  assertNumber('perClass', perClass, { min: 1, integer: true });
  const counts = dataset.classCounts();
  for (let label = 0; label < dataset.numClasses; label++) {
    if (counts[label]! < perClass) {
      throw new DataError('perClass', `class ${label} of ${dataset.name} has only ${counts[label]} examples, fewer than ${perClass}`);
    }
  }
  const taken = new Int32Array(dataset.numClasses);
  const chosen: number[] = [];
  for (const index of random.permutation(dataset.size)) {
    const label = dataset.labels[index]!;
    if (taken[label]! < perClass) {
      taken[label]!++;
      chosen.push(index);
    }
  }
  chosen.sort((left, right) => left - right);
  return dataset.subset(chosen, `${dataset.name}/balanced-${perClass}`);
}

/**
 * The first `size` examples of a seeded permutation, in that drawn order (how CIFAR-100-2k and
 * CIFAR-100-10k are made here: the paper's subset files are not public).
 */
export function randomSubset(dataset: Dataset, size: number, random: Random): Dataset {
  assertNumber('size', size, { min: 0, max: dataset.size, integer: true });
  return dataset.subset(random.permutation(dataset.size).subarray(0, size), `${dataset.name}/random-${size}`);
}
