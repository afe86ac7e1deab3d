import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigError,
  DataError,
  DivergenceError,
  Random,
  addWeightDecay,
  assertChoice,
  assertKnownOptions,
  assertNumber,
  classifierFromLayersModel,
  clipByGlobalNorm,
  composeRegularizers,
  type Batch,
  type Classifier,
  type LayersModelLike,
  type RegularizerPlugin,
  type RegularizerStack,
} from '@regstack/regularizer';
import { batchIndices, tensorData, type DataSource } from './data.js';
import { MetricsAccumulator } from './metrics.js';
import type { AugmentFunction } from './trainer.js';

/** What {@link fit} trains: a `tf.LayersModel` (adapted with `classifierFromLayersModel`) or any `Classifier`. */
export type FitModel = LayersModelLike | Classifier;

/** One element of a data set {@link fit} reads: a batch of inputs and labels, as `model.fitDataset` takes it. */
export type FitElement = { xs: tf.Tensor; ys: tf.Tensor } | [tf.Tensor, tf.Tensor];

/**
 * The part of a `tf.data.Dataset` that {@link fit} uses (structural, so `@tensorflow/tfjs-data` stays
 * optional). Each element is a batch `{ xs, ys }` (e.g. `tf.data.zip({ xs, ys }).batch(32)`).
 */
export interface DatasetLike<T = unknown> {
  iterator(): Promise<{ next(): Promise<IteratorResult<T>> }>;
}

/** What every log of {@link fit} holds: numbers by name (`loss`, `acc`, one per plugin, `val_loss`, `val_acc`). */
export type FitLogs = Record<string, number>;

/**
 * A TF.js-style callback: a plain object with any of these hooks, or a TF.js callback object such as
 * `tf.callbacks.earlyStopping(...)` (which also has `setParams` and `setModel`). Epochs and batches
 * are 0-based, as in TF.js. Every hook may be async; {@link fit} awaits it.
 */
export interface FitCallback {
  /** Receives the run's {@link FitParams} before training (typed loosely so TF.js's callbacks fit). */
  setParams?(params: Record<string, unknown>): void;
  /** Receives the LayersModel (for a Classifier: an object whose `stopTraining` ends training). */
  setModel?(model: unknown): void;
  onTrainBegin?(logs?: FitLogs): void | Promise<void>;
  onTrainEnd?(logs?: FitLogs): void | Promise<void>;
  onEpochBegin?(epoch: number, logs?: FitLogs): void | Promise<void>;
  onEpochEnd?(epoch: number, logs?: FitLogs): void | Promise<void>;
  onBatchBegin?(batch: number, logs?: FitLogs): void | Promise<void>;
  onBatchEnd?(batch: number, logs?: FitLogs): void | Promise<void>;
}

/** The optimizers {@link fit} builds by name, with Keras' and TF.js Layers' default learning rates. */
export const FIT_OPTIMIZERS = {
  sgd: { learningRate: 0.01, create: (rate: number) => tf.train.sgd(rate) },
  adam: { learningRate: 0.001, create: (rate: number) => tf.train.adam(rate) },
  adamax: { learningRate: 0.002, create: (rate: number) => tf.train.adamax(rate) },
  rmsprop: { learningRate: 0.001, create: (rate: number) => tf.train.rmsprop(rate) },
  adagrad: { learningRate: 0.01, create: (rate: number) => tf.train.adagrad(rate) },
  adadelta: { learningRate: 1, create: (rate: number) => tf.train.adadelta(rate, 0.95) },
} as const;

/** A name of an optimizer {@link fit} builds itself. */
export type FitOptimizerName = keyof typeof FIT_OPTIMIZERS;

/** Options of {@link fit}: `model.fit`'s, plus the regularizers. */
export interface FitOptions {
  /** The regularizers, as plugins (composed here) or a composed stack. Default: none (plain cross-entropy). */
  regularizers?: readonly RegularizerPlugin[] | RegularizerStack;
  /**
   * A `tf.Optimizer` (its state is kept, it is not disposed), or a name (`sgd`, `adam`, `adamax`,
   * `rmsprop`, `adagrad`, `adadelta`: built here, disposed at the end). Default: the optimizer of a
   * compiled LayersModel; required otherwise.
   */
  optimizer?: tf.Optimizer | FitOptimizerName;
  /** Learning rate of a named optimizer. Default: Keras' (sgd 0.01, adam 0.001, adamax 0.002, rmsprop 0.001, adagrad 0.01, adadelta 1). */
  learningRate?: number;
  /** Epochs to train up to (`initialEpoch` counts). Default 1, as `model.fit`. */
  epochs?: number;
  /** Epoch to start at (to continue a run: epochs then numbers from here). Default 0. */
  initialEpoch?: number;
  /** Examples per step (tensors only: a data set is already batched). Default 32, as Keras. */
  batchSize?: number;
  /** Fraction of the examples held out for validation: the LAST ones, before shuffling (Keras). Tensors only. */
  validationSplit?: number;
  /** Validation data: `[x, y]` tensors or a data set of `{ xs, ys }`. */
  validationData?: readonly [tf.Tensor, tf.Tensor] | DatasetLike;
  /** Batch size of validation on tensors. Default `batchSize` (32 with a data set, as TF.js). */
  validationBatchSize?: number;
  /** Batches of a validation data set to evaluate. Default: all. */
  validationBatches?: number;
  /** Shuffle the training examples before each epoch (seeded). Tensors only. Default true. */
  shuffle?: boolean;
  /** Batches per epoch from a data set; its iterator then runs on across epochs (as `fitDataset`). */
  batchesPerEpoch?: number;
  /** TF.js-style callbacks, one or an array (e.g. `tf.callbacks.earlyStopping()`). */
  callbacks?: FitCallback | readonly FitCallback[];
  /** Seed of the run's generator: shuffling, mixing, attacks. Default: drawn at random and reported in `history.params.seed`. */
  seed?: number;
  /** 0: silent; 1 or 2: one line per epoch on the console. Default 0 (TF.js without tfjs-node prints nothing either). */
  verbose?: 0 | 1 | 2;
  /** Data augmentation of each clean batch (e.g. `standardAugmentation` of `@regstack/datasets`), drawing from the run's generator. */
  augment?: AugmentFunction;
  /** Clip the gradients to this global norm before the update. Default: no clipping. */
  clipNorm?: number | null;
  /** Coupled weight decay (added to the gradients after clipping). Default 0. */
  weightDecay?: number;
  /** Hand control back to the event loop (`tf.nextFrame`) after each `batch` or `epoch`: keeps a page responsive. Default `never`. */
  yieldEvery?: 'batch' | 'epoch' | 'never';
  /** Check every batch (labels in range, finite inputs). Default true. */
  validateBatches?: boolean;
}

/** The parameters callbacks receive through `setParams` (those of TF.js, plus the run's seed). */
export interface FitParams {
  epochs: number;
  initialEpoch: number;
  /** Training examples (tensors), or undefined for a data set. */
  samples: number | undefined;
  /** Steps per epoch, where known. */
  steps: number | undefined;
  batchSize: number | undefined;
  verbose: number;
  doValidation: boolean;
  /** The names every epoch's logs carry. */
  metrics: string[];
  /** The seed of the run's generator. */
  seed: number;
}

/** What {@link fit} returns, shaped as TF.js's `History`. */
export interface FitHistory {
  /** The 0-based epochs that ran. */
  epoch: number[];
  /** Each log's value per epoch: `loss`, `acc`, `base`, one per plugin with a term, `val_loss`, `val_acc`. */
  history: Record<string, number[]>;
  /** The parameters the callbacks received. */
  params: FitParams;
}

const KNOWN_OPTIONS = [
  'regularizers', 'optimizer', 'learningRate', 'epochs', 'initialEpoch', 'batchSize', 'validationSplit', 'validationData',
  'validationBatchSize', 'validationBatches', 'shuffle', 'batchesPerEpoch', 'callbacks', 'seed', 'verbose', 'augment',
  'clipNorm', 'weightDecay', 'yieldEvery', 'validateBatches',
] as const;
const CALLBACK_HOOKS = ['onTrainBegin', 'onTrainEnd', 'onEpochBegin', 'onEpochEnd', 'onBatchBegin', 'onBatchEnd'] as const;
const RESERVED_LOG_NAMES = ['loss', 'acc', 'batch', 'size'];

/**
 * Trains a model with a stack of regularizers the way `model.fit` does: one line of a TF.js program
 * changes, from `await model.fit(x, y, options)` to `await fit(model, x, y, { regularizers, optimizer, ...options })`.
 *
 * `model` is a `tf.LayersModel` (read through `classifierFromLayersModel`: its last layer must give
 * logits) or any `Classifier`. `x` and `y` are tensors (`y`: integer labels [N] or one-hot rows [N, K]),
 * or `x` is a `tf.data.Dataset` of batches `{ xs, ys }` and `y` is omitted. Each step runs the stack's
 * `gradients` (batch-norm running statistics are updated by the base pass alone), clips and decays
 * the gradients if asked, and applies the optimizer. Callbacks are called as TF.js calls them, and
 * `model.stopTraining = true` (what `tf.callbacks.earlyStopping` sets) ends training after the
 * current batch. Afterwards a LayersModel is an ordinary LayersModel: `predict`, `save`.
 *
 * Logs: `loss` (the stack's total), `acc` (the training pass's accuracy against the targets the
 * base loss used: their arg max, i.e. the dominant class of a mixed example),
 * `base` (the cross-entropy part), one entry per plugin with a term (by its name), and, with
 * validation, `val_loss` (mean cross-entropy, eval mode) and `val_acc`. Epoch logs average over
 * examples.
 *
 * @throws ConfigError naming the option for an unknown option or a bad value.
 * @throws DataError for data that do not fit: soft labels, mismatched counts, labels out of range.
 * @throws DivergenceError when the loss becomes NaN or Inf (before that step's update).
 */
export function fit(model: FitModel, x: tf.Tensor, y: tf.Tensor, options?: FitOptions): Promise<FitHistory>;
export function fit(model: FitModel, dataset: DatasetLike, options?: FitOptions): Promise<FitHistory>;
export function fit(model: FitModel, dataset: DatasetLike, y: undefined, options?: FitOptions): Promise<FitHistory>;
export async function fit(
  model: FitModel,
  x: tf.Tensor | DatasetLike,
  third?: tf.Tensor | FitOptions,
  fourth?: FitOptions,
): Promise<FitHistory> {
  const isDataset = isDatasetLike(x);
  let y: tf.Tensor | undefined;
  let options: FitOptions;
  if (isDataset) {
    if (third instanceof tf.Tensor) throw new ConfigError('y', 'omit y when x is a data set: its elements carry { xs, ys }');
    options = (third ?? fourth ?? {}) as FitOptions;
  } else {
    if (!(x instanceof tf.Tensor)) throw new ConfigError('x', 'expected a tf.Tensor of inputs or a tf.data.Dataset of { xs, ys } batches');
    if (!(third instanceof tf.Tensor)) throw new ConfigError('y', 'expected a tf.Tensor of labels: integer labels [N] or one-hot rows [N, K]');
    y = third;
    options = fourth ?? {};
  }
  const run = resolveFit(model, options, isDataset);
  const owned: tf.Tensor[] = [];
  try {
    const data = isDataset
      ? datasetSource(x as DatasetLike, run.classifier.numClasses, run, owned)
      : tensorSource(x as tf.Tensor, y!, run, owned);
    return await fitLoop(run, data);
  } finally {
    tf.dispose(owned);
    if (run.ownsOptimizer) disposeOptimizer(run.optimizer);
  }
}

/** A model.fit-style run, its options checked. */
interface ResolvedFit {
  layersModel: (LayersModelLike & { stopTraining?: boolean; isTraining?: boolean }) | null;
  classifier: Classifier;
  stack: RegularizerStack;
  optimizer: tf.Optimizer;
  ownsOptimizer: boolean;
  epochs: number;
  initialEpoch: number;
  batchSize: number | undefined;
  validationSplit: number | undefined;
  validationData: FitOptions['validationData'];
  validationBatchSize: number;
  validationBatches: number | undefined;
  shuffle: boolean;
  batchesPerEpoch: number | undefined;
  callbacks: FitCallback[];
  seed: number;
  verbose: 0 | 1 | 2;
  augment: AugmentFunction | undefined;
  clipNorm: number | null;
  weightDecay: number;
  yieldEvery: 'batch' | 'epoch' | 'never';
  validateBatches: boolean;
}

function isDatasetLike(value: unknown): value is DatasetLike {
  return value !== null && typeof value === 'object' && !(value instanceof tf.Tensor) && typeof (value as DatasetLike).iterator === 'function';
}

function isLayersModel(model: object): model is LayersModelLike {
  return 'trainableWeights' in model && 'outputs' in model && typeof (model as LayersModelLike).apply === 'function';
}

function resolveFit(model: FitModel, options: FitOptions, isDataset: boolean): ResolvedFit {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new ConfigError('options', 'expected an options object');
  assertKnownOptions('fit', options, KNOWN_OPTIONS);
  if (model === null || typeof model !== 'object') throw new ConfigError('model', 'expected a tf.LayersModel or a Classifier');
  let layersModel: ResolvedFit['layersModel'] = null;
  let classifier: Classifier;
  if (isLayersModel(model)) {
    layersModel = model;
    classifier = classifierFromLayersModel(model);
  } else if (typeof (model as Classifier).apply === 'function' && 'trainableVariables' in model && typeof (model as Classifier).numClasses === 'number') {
    classifier = model as Classifier;
  } else {
    throw new ConfigError('model', 'expected a tf.LayersModel or a Classifier (see classifierFromFunction)');
  }

  const regularizers = options.regularizers;
  const stack: RegularizerStack = regularizers === undefined || Array.isArray(regularizers)
    ? composeRegularizers((regularizers ?? []) as RegularizerPlugin[])
    : (regularizers as RegularizerStack);
  if (!stack || typeof stack.gradients !== 'function' || !Array.isArray(stack.plugins)) {
    throw new ConfigError('regularizers', 'expected an array of regularizer plugins or a stack from composeRegularizers');
  }
  for (const plugin of stack.plugins) {
    if (RESERVED_LOG_NAMES.includes(plugin.name) || plugin.name.startsWith('val_')) {
      throw new ConfigError('regularizers', `a plugin named '${plugin.name}' would overwrite fit's own log of that name; rename it`);
    }
  }

  const epochs = assertNumber('epochs', options.epochs ?? 1, { min: 1, integer: true });
  const initialEpoch = assertNumber('initialEpoch', options.initialEpoch ?? 0, { min: 0, integer: true });
  if (initialEpoch >= epochs) throw new ConfigError('initialEpoch', `must be < epochs (${epochs}), got ${initialEpoch}`);
  const only = (field: keyof FitOptions, why: string) => {
    if (options[field] !== undefined) throw new ConfigError(field, why);
  };
  if (isDataset) {
    only('batchSize', 'does not apply to a data set, whose elements are batches already (batch it with dataset.batch(n))');
    only('validationSplit', 'needs tensors; with a data set, pass validationData');
    only('shuffle', 'needs tensors; shuffle a data set with dataset.shuffle(bufferSize)');
  } else {
    only('batchesPerEpoch', 'applies to a data set only');
  }
  const batchSize = isDataset ? undefined : assertNumber('batchSize', options.batchSize ?? 32, { min: 1, integer: true });
  const validationSplit = options.validationSplit === undefined
    ? undefined
    : assertNumber('validationSplit', options.validationSplit, { min: 0, max: 1, minExclusive: true, maxExclusive: true });
  if (validationSplit !== undefined && options.validationData !== undefined) {
    throw new ConfigError('validationSplit', 'give validationSplit or validationData, not both');
  }
  const validationData = options.validationData;
  if (validationData !== undefined && !isDatasetLike(validationData)) {
    if (!Array.isArray(validationData) || validationData.length !== 2 || !(validationData[0] instanceof tf.Tensor) || !(validationData[1] instanceof tf.Tensor)) {
      throw new ConfigError('validationData', 'expected [x, y] tensors or a tf.data.Dataset of { xs, ys } batches');
    }
  }
  const validationBatchSize = assertNumber('validationBatchSize', options.validationBatchSize ?? batchSize ?? 32, { min: 1, integer: true });
  const validationBatches = options.validationBatches === undefined ? undefined : assertNumber('validationBatches', options.validationBatches, { min: 1, integer: true });
  if (validationBatches !== undefined && !isDatasetLike(validationData)) {
    throw new ConfigError('validationBatches', 'applies to a validationData data set only');
  }
  const shuffle = options.shuffle ?? true;
  if (typeof shuffle !== 'boolean') throw new ConfigError('shuffle', `expected true or false, got ${String(shuffle)}`);
  const batchesPerEpoch = options.batchesPerEpoch === undefined ? undefined : assertNumber('batchesPerEpoch', options.batchesPerEpoch, { min: 1, integer: true });
  const seed = options.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : assertNumber('seed', options.seed, { integer: true });
  const verbose = options.verbose ?? 0;
  if (verbose !== 0 && verbose !== 1 && verbose !== 2) throw new ConfigError('verbose', `expected 0, 1 or 2, got ${String(verbose)}`);
  if (options.augment !== undefined && typeof options.augment !== 'function') throw new ConfigError('augment', 'expected a function (inputs, random) => tensor');
  const clipNorm = options.clipNorm === undefined || options.clipNorm === null
    ? null
    : assertNumber('clipNorm', options.clipNorm, { min: 0, minExclusive: true });
  const weightDecay = assertNumber('weightDecay', options.weightDecay ?? 0, { min: 0 });
  const yieldEvery = assertChoice('yieldEvery', options.yieldEvery ?? 'never', ['batch', 'epoch', 'never'] as const);
  const validateBatches = options.validateBatches ?? true;
  if (typeof validateBatches !== 'boolean') throw new ConfigError('validateBatches', `expected true or false, got ${String(validateBatches)}`);
  const callbacks = checkCallbacks(options.callbacks);

  // Last: a named optimizer holds tensors, which an error above would leave behind.
  let optimizer: tf.Optimizer;
  let ownsOptimizer = false;
  if (typeof options.optimizer === 'string') {
    const choice = assertChoice('optimizer', options.optimizer, Object.keys(FIT_OPTIMIZERS) as FitOptimizerName[]);
    const entry = FIT_OPTIMIZERS[choice];
    const learningRate = assertNumber('learningRate', options.learningRate ?? entry.learningRate, { min: 0, minExclusive: true });
    optimizer = entry.create(learningRate);
    ownsOptimizer = true;
  } else {
    if (options.learningRate !== undefined) {
      throw new ConfigError('learningRate', 'only applies to an optimizer given by name; an optimizer object carries its own learning rate');
    }
    const given = options.optimizer ?? (layersModel as { optimizer?: tf.Optimizer } | null)?.optimizer;
    if (given === undefined || given === null) {
      throw new ConfigError('optimizer', `required: a tf.Optimizer (e.g. tf.train.adam(1e-3)) or a name (${Object.keys(FIT_OPTIMIZERS).join(', ')}), unless the LayersModel was compiled with one`);
    }
    if (typeof (given as tf.Optimizer).applyGradients !== 'function') {
      throw new ConfigError('optimizer', `expected a tf.Optimizer or one of ${Object.keys(FIT_OPTIMIZERS).join(', ')}, got ${String(given)}`);
    }
    optimizer = given as tf.Optimizer;
  }

  return {
    layersModel,
    classifier,
    stack,
    optimizer,
    ownsOptimizer,
    epochs,
    initialEpoch,
    batchSize,
    validationSplit,
    validationData,
    validationBatchSize,
    validationBatches,
    shuffle,
    batchesPerEpoch,
    callbacks,
    seed,
    verbose,
    augment: options.augment,
    clipNorm,
    weightDecay,
    yieldEvery,
    validateBatches,
  };
}

function checkCallbacks(callbacks: FitOptions['callbacks']): FitCallback[] {
  if (callbacks === undefined) return [];
  const list = (Array.isArray(callbacks) ? callbacks : [callbacks]) as FitCallback[];
  list.forEach((callback, index) => {
    const field = `callbacks[${index}]`;
    if (callback === null || typeof callback !== 'object') throw new ConfigError(field, 'expected a callback object (e.g. { onEpochEnd(epoch, logs) {} })');
    const record = callback as Record<string, unknown>;
    for (const hook of [...CALLBACK_HOOKS, 'setParams', 'setModel']) {
      if (record[hook] !== undefined && typeof record[hook] !== 'function') throw new ConfigError(`${field}.${hook}`, 'expected a function');
    }
    // A plain object's other keys are typos (onEpochEnds); a TF.js callback object carries its own state.
    if (Object.getPrototypeOf(callback) === Object.prototype) {
      for (const key of Object.keys(callback)) {
        if (!(CALLBACK_HOOKS as readonly string[]).includes(key) && key !== 'setParams' && key !== 'setModel') {
          throw new ConfigError(`${field}.${key}`, `unknown callback hook; known hooks: ${CALLBACK_HOOKS.join(', ')}`);
        }
      }
    }
    if (![...CALLBACK_HOOKS, 'setModel'].some((hook) => typeof record[hook] === 'function')) {
      throw new ConfigError(field, `has none of the hooks ${CALLBACK_HOOKS.join(', ')}`);
    }
  });
  return list;
}

/** Where an epoch's batches come from; every batch handed out is the caller's to dispose. */
interface FitData {
  samples: number | undefined;
  stepsPerEpoch: number | undefined;
  /** The batches of one epoch, drawn in the order `random` gives (tensors with shuffle). */
  epochBatches(random: Random): AsyncGenerator<Batch>;
  /** Set when a data set with batchesPerEpoch ran out: training ends, as fitDataset's does. */
  ranOut: boolean;
  validation: { batches(): AsyncGenerator<Batch> } | null;
}

function tensorSource(x: tf.Tensor, y: tf.Tensor, run: ResolvedFit, owned: tf.Tensor[]): FitData {
  const numClasses = run.classifier.numClasses;
  const own = <T extends tf.Tensor>(tensor: T): T => {
    owned.push(tensor);
    return tensor;
  };
  const converted = floatInputs('x', x); // the user's tensor when it is float32 already: no copy of the data set
  if (converted.copied) own(converted.inputs);
  const inputs = converted.inputs;
  const labels = own(labelsFrom('y', y, numClasses));
  if (labels.shape[0] !== inputs.shape[0]) throw new DataError('y', `has ${labels.shape[0]} labels for ${inputs.shape[0]} inputs`);
  let validation: FitData['validation'] = null;
  if (run.validationSplit !== undefined) {
    // Keras: the last fraction, taken before any shuffling.
    const count = inputs.shape[0]!;
    const split = Math.floor(count * (1 - run.validationSplit));
    if (split < 1 || split >= count) {
      throw new DataError('validationSplit', `${run.validationSplit} of ${count} examples leaves ${split} for training and ${count - split} for validation; both need at least one`);
    }
    const held = tensorData(own(tf.slice(inputs, 0, split)), own(tf.slice(labels, 0, split)));
    const validationSource = tensorData(own(tf.slice(inputs, split)), own(tf.slice(labels, split)));
    validation = { batches: () => sourceBatches(validationSource, identity(validationSource.size), run.validationBatchSize) };
    return withTraining(held);
  }
  if (run.validationData !== undefined) validation = validationOf(run, owned);
  return withTraining(tensorData(inputs, labels));

  function withTraining(source: DataSource): FitData {
    return {
      samples: source.size,
      stepsPerEpoch: Math.ceil(source.size / run.batchSize!),
      ranOut: false,
      epochBatches: (random) => sourceBatches(source, run.shuffle ? random.permutation(source.size) : identity(source.size), run.batchSize!),
      validation,
    };
  }
}

function validationOf(run: ResolvedFit, owned: tf.Tensor[]): FitData['validation'] {
  const data = run.validationData!;
  const numClasses = run.classifier.numClasses;
  if (isDatasetLike(data)) {
    return {
      async *batches() {
        const iterator = await data.iterator();
        for (let index = 0; run.validationBatches === undefined || index < run.validationBatches; index++) {
          const next = await iterator.next();
          if (next.done) break;
          yield elementBatch('validationData', next.value, numClasses);
        }
      },
    };
  }
  const { inputs, copied } = floatInputs('validationData[0]', data[0]);
  if (copied) owned.push(inputs);
  const labels = labelsFrom('validationData[1]', data[1], numClasses);
  owned.push(labels);
  if (labels.shape[0] !== inputs.shape[0]) throw new DataError('validationData[1]', `has ${labels.shape[0]} labels for ${inputs.shape[0]} inputs`);
  const source = tensorData(inputs, labels);
  return { batches: () => sourceBatches(source, identity(source.size), run.validationBatchSize) };
}

function datasetSource(dataset: DatasetLike, numClasses: number, run: ResolvedFit, owned: tf.Tensor[]): FitData {
  const validation = run.validationData !== undefined ? validationOf(run, owned) : null;
  let shared: { next(): Promise<IteratorResult<unknown>> } | null = null;
  const data: FitData = {
    samples: undefined,
    stepsPerEpoch: run.batchesPerEpoch,
    ranOut: false,
    async *epochBatches() {
      // As fitDataset: with batchesPerEpoch one iterator runs on across epochs, otherwise each epoch starts afresh.
      const iterator = run.batchesPerEpoch === undefined ? await dataset.iterator() : (shared ??= await dataset.iterator());
      for (let index = 0; run.batchesPerEpoch === undefined || index < run.batchesPerEpoch; index++) {
        const next = await iterator.next();
        if (next.done) {
          if (run.batchesPerEpoch !== undefined) data.ranOut = true;
          break;
        }
        yield elementBatch('x', next.value, numClasses);
      }
    },
    validation,
  };
  return data;
}

/** One data-set element as a batch of our own tensors (the element's tensors are disposed, as `fitDataset` does). */
function elementBatch(field: string, element: unknown, numClasses: number): Batch {
  let xs: unknown;
  let ys: unknown;
  if (Array.isArray(element) && element.length === 2) [xs, ys] = element;
  else if (element !== null && typeof element === 'object') ({ xs, ys } = element as { xs?: unknown; ys?: unknown });
  if (!(xs instanceof tf.Tensor) || !(ys instanceof tf.Tensor)) {
    tf.dispose(element as tf.TensorContainer);
    throw new DataError(field, 'each element must be { xs, ys } (or [xs, ys]) tensors; build it with tf.data.zip({ xs, ys }).batch(n)');
  }
  let inputs: tf.Tensor | null = null;
  try {
    inputs = floatInputs(`${field}.xs`, xs).inputs;
    const labels = labelsFrom(`${field}.ys`, ys, numClasses);
    if (labels.shape[0] !== inputs.shape[0]) {
      labels.dispose();
      throw new DataError(`${field}.ys`, `has ${labels.shape[0]} labels for ${inputs.shape[0]} inputs`);
    }
    return { inputs, labels };
  } catch (error) {
    inputs?.dispose();
    throw error;
  } finally {
    // The element's own tensors, except the inputs when they are handed on as they are.
    tf.dispose(xs === inputs ? [ys] : [xs, ys]);
  }
}

/** The inputs as float32 after checking their shape: the tensor itself, or a cast copy (then `copied`). */
function floatInputs(field: string, inputs: unknown): { inputs: tf.Tensor; copied: boolean } {
  if (!(inputs instanceof tf.Tensor)) throw new DataError(field, 'expected a tf.Tensor');
  if (inputs.rank < 2) throw new DataError(field, `expected [examples, ...features], got shape [${inputs.shape}]`);
  if (inputs.shape[0] === 0) throw new DataError(field, 'holds no examples');
  return inputs.dtype === 'float32' ? { inputs, copied: false } : { inputs: tf.cast(inputs, 'float32'), copied: true };
}

/**
 * Integer labels (int32, owned by the caller) from integer labels [N] or one-hot rows [N, K]. Soft
 * rows are refused: the stack builds soft targets itself (label smoothing, mixup), from hard labels.
 */
function labelsFrom(field: string, y: unknown, numClasses: number): tf.Tensor1D {
  if (!(y instanceof tf.Tensor)) throw new DataError(field, 'expected a tf.Tensor');
  const values = y.dataSync();
  if (y.rank === 1) {
    for (let i = 0; i < values.length; i++) {
      const label = values[i] as number;
      if (!Number.isInteger(label) || label < 0 || label >= numClasses) {
        throw new DataError(field, `label ${label} at index ${i} is not an integer class in [0, ${numClasses})`);
      }
    }
    return tf.cast(y, 'int32') as tf.Tensor1D;
  }
  if (y.rank !== 2) throw new DataError(field, `expected integer labels [N] or one-hot rows [N, ${numClasses}], got shape [${y.shape}]`);
  const [count, width] = y.shape as [number, number];
  if (width !== numClasses) throw new DataError(field, `has ${width} columns but the model has ${numClasses} classes`);
  const labels = new Int32Array(count);
  for (let row = 0; row < count; row++) {
    let hot = -1;
    for (let k = 0; k < width; k++) {
      const value = values[row * width + k] as number;
      if (value === 1 && hot === -1) hot = k;
      else if (value !== 0) hot = -2;
    }
    if (hot < 0) {
      const shown = Array.from(values.slice(row * width, row * width + Math.min(width, 6)) as ArrayLike<number>, (v) => Number(v.toFixed(4)));
      throw new DataError(
        field,
        `row ${row} [${shown.join(', ')}${width > 6 ? ', …' : ''}] is not one-hot: fit takes integer labels or one-hot rows. ` +
          'Soft targets come from the regularizers (labelSmoothing, mixup), which build them from hard labels',
      );
    }
    labels[row] = hot;
  }
  return tf.tensor1d(labels, 'int32');
}

function identity(size: number): Int32Array {
  return Int32Array.from({ length: size }, (_, i) => i);
}

async function* sourceBatches(source: DataSource, order: ArrayLike<number>, batchSize: number): AsyncGenerator<Batch> {
  for (const indices of batchIndices(order, batchSize)) yield source.batch(indices);
}

/**
 * Taps for the step's training accuracy without another forward pass. The classifier's
 * training-mode pass: the stack runs exactly one per step (the base loss; plugins use
 * `frozen-stats` or `eval`). The stack's transforms: the targets the base loss used, whose arg max
 * is the class to predict (under mixup the dominant one; a Keras user mixing in the data pipeline
 * sees the same), where there are transforms; the batch's labels otherwise.
 */
function withTrainingAccuracy(model: Classifier, stack: RegularizerStack) {
  let labels: tf.Tensor1D | null = null;
  let targetClasses: tf.Tensor1D | null = null;
  let correct: tf.Scalar | null = null;
  const tapped: Classifier = {
    get numClasses() {
      return model.numClasses;
    },
    get trainableVariables() {
      return model.trainableVariables;
    },
    get nonTrainableVariables() {
      return model.nonTrainableVariables;
    },
    get stochastic() {
      return model.stochastic;
    },
    apply(inputs, options) {
      const output = model.apply(inputs, options);
      const reference = targetClasses ?? labels;
      if (options.mode === 'train' && reference !== null && correct === null && output.logits.shape[0] === reference.shape[0]) {
        // Kept: this runs inside the stack's gradient tape and tidy scopes.
        correct = tf.keep(tf.tidy(() => tf.sum(tf.cast(tf.equal(tf.argMax(output.logits, 1), reference), 'float32')) as tf.Scalar));
      }
      return output;
    },
  };
  const recordTargets = (targets: tf.Tensor2D) => {
    targetClasses?.dispose();
    targetClasses = tf.keep(tf.argMax(targets, 1) as tf.Tensor1D);
  };
  // Each transform plugin, seen through an object that delegates to it and records what it returns.
  const tappedStack = stack.plugins.some((plugin) => plugin.transformBatch || plugin.transformTargets)
    ? composeRegularizers(
        stack.plugins.map((plugin) => {
          if (!plugin.transformBatch && !plugin.transformTargets) return plugin;
          const view = Object.create(plugin) as RegularizerPlugin;
          if (plugin.transformBatch) {
            view.transformBatch = (batch, context) => {
              const result = plugin.transformBatch!(batch, context);
              recordTargets(result.targets);
              return result;
            };
          }
          if (plugin.transformTargets) {
            view.transformTargets = (targets, context) => {
              const result = plugin.transformTargets!(targets, context);
              recordTargets(result);
              return result;
            };
          }
          return view;
        }),
      )
    : stack;
  return {
    model: tapped,
    stack: tappedStack,
    begin(batchLabels: tf.Tensor1D) {
      labels = batchLabels;
      correct = null;
    },
    /** Correct predictions of the step's training pass (NaN if it made none). */
    end(): number {
      const count = correct === null ? NaN : correct.dataSync()[0]!;
      correct?.dispose();
      targetClasses?.dispose();
      correct = null;
      targetClasses = null;
      labels = null;
      return count;
    },
  };
}

async function fitLoop(run: ResolvedFit, data: FitData): Promise<FitHistory> {
  const { classifier, stack, optimizer, layersModel } = run;
  const random = new Random(run.seed);
  const tap = withTrainingAccuracy(classifier, stack);
  const variables = classifier.trainableVariables as tf.Variable[];
  const doValidation = data.validation !== null;
  const termNames = stack.plugins.filter((plugin) => plugin.loss !== undefined).map((plugin) => plugin.name);
  const trainNames = ['loss', 'acc', 'base', ...termNames];
  const params: FitParams = {
    epochs: run.epochs,
    initialEpoch: run.initialEpoch,
    samples: data.samples,
    steps: data.stepsPerEpoch,
    batchSize: run.batchSize,
    verbose: run.verbose,
    doValidation,
    metrics: doValidation ? [...trainNames, 'val_loss', 'val_acc'] : trainNames,
    seed: run.seed,
  };
  const history: FitHistory = { epoch: [], history: {}, params };
  // A Classifier has no stopTraining of its own: callbacks get this stand-in, which has one.
  const controller: { stopTraining?: boolean } = layersModel ?? { stopTraining: false };
  if (layersModel?.isTraining) throw new ConfigError('model', 'is being trained by another fit() call; wait for it to end');
  // A tf.Sequential builds its inner model (which holds stopTraining) only when compiled or built;
  // fit needs no compile, so build it here (compile would do the same).
  const sequential = layersModel as { model?: unknown; build?: () => void; constructor: { className?: string } } | null;
  if (sequential && sequential.constructor.className === 'Sequential' && sequential.model == null) sequential.build?.();
  const callbacks = run.callbacks;
  for (const callback of callbacks) callback.setParams?.(params as unknown as Record<string, unknown>);
  callbacks.forEach((callback, index) => {
    if (!callback.setModel) return;
    try {
      callback.setModel(layersModel ?? controller);
    } catch (error) {
      // tfjs-layers' callbacks accept a LayersModel only; what they use of it is `stopTraining`.
      if (!layersModel && 'model' in callback) (callback as { model: unknown }).model = controller;
      else throw new ConfigError(`callbacks[${index}]`, 'setModel refused the model', { cause: error });
    }
  });
  const call = async (hook: (typeof CALLBACK_HOOKS)[number], ...args: unknown[]) => {
    for (const callback of callbacks) {
      const method = callback[hook] as ((...values: unknown[]) => unknown) | undefined;
      if (method) await method.apply(callback, args);
    }
  };

  if (layersModel) layersModel.isTraining = true;
  let step = 0;
  let lastEpochBatches = data.stepsPerEpoch;
  try {
    await call('onTrainBegin', {});
    controller.stopTraining = false;
    for (let epoch = run.initialEpoch; epoch < run.epochs; epoch++) {
      await call('onEpochBegin', epoch, {});
      const started = performance.now();
      const sums: Record<string, number> = {};
      let seen = 0;
      let index = 0;
      for await (const batch of data.epochBatches(random)) {
        const size = batch.inputs.shape[0]!;
        let logs: FitLogs;
        try {
          await call('onBatchBegin', index, { batch: index, size });
          logs = { batch: index, size, ...trainStep(run, tap, variables, batch, random, step, epoch + (lastEpochBatches ? index / lastEpochBatches : 0)) };
        } finally {
          tf.dispose([batch.inputs, batch.labels]);
        }
        for (const name of trainNames) sums[name] = (sums[name] ?? 0) + (logs[name] ?? NaN) * size;
        seen += size;
        step++;
        index++;
        await call('onBatchEnd', index - 1, logs);
        if (run.yieldEvery === 'batch') await tf.nextFrame();
        if (controller.stopTraining) break;
      }
      lastEpochBatches = index;
      if (index === 0) throw new DataError('x', `yielded no batches in epoch ${epoch}`);
      const epochLogs: FitLogs = Object.fromEntries(trainNames.map((name) => [name, sums[name]! / seen]));
      if (data.validation) Object.assign(epochLogs, await validate(classifier, data.validation.batches()));
      history.epoch.push(epoch);
      for (const [name, value] of Object.entries(epochLogs)) (history.history[name] ??= []).push(value);
      if (run.verbose > 0) {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        console.log(`Epoch ${epoch + 1}/${run.epochs} - ${seconds}s - ${Object.entries(epochLogs).map(([name, value]) => `${name}: ${value.toFixed(4)}`).join(' - ')}`);
      }
      await call('onEpochEnd', epoch, { ...epochLogs });
      if (run.yieldEvery === 'epoch') await tf.nextFrame();
      if (data.ranOut) {
        console.warn(`fit: the data set ran out after ${index} batches of epoch ${epoch} (batchesPerEpoch ${run.batchesPerEpoch}); training stops. Use dataset.repeat() for ${run.batchesPerEpoch! * run.epochs} batches in all.`);
        break;
      }
      if (controller.stopTraining) break;
    }
    await call('onTrainEnd', {});
    return history;
  } finally {
    if (layersModel) layersModel.isTraining = false;
  }
}

/** One optimizer step; returns the batch's logs (loss, acc, base, the plugins' terms). */
function trainStep(
  run: ResolvedFit,
  tap: ReturnType<typeof withTrainingAccuracy>,
  variables: tf.Variable[],
  batch: Batch,
  random: Random,
  step: number,
  epoch: number,
): FitLogs {
  tap.begin(batch.labels);
  let correct = NaN;
  let terms: Record<string, number>;
  try {
    const result = tap.stack.gradients({
      model: tap.model,
      batch,
      random,
      step,
      epoch,
      ...(run.augment ? { augment: run.augment } : {}),
      validate: run.validateBatches,
    });
    terms = result.terms;
    result.value.dispose();
    const grads = result.grads;
    if (!Number.isFinite(terms.total)) {
      tf.dispose(Object.values(grads));
      throw new DivergenceError('loss', `became ${terms.total} at epoch ${Math.floor(epoch)}, step ${step}; training stopped before the update`);
    }
    const clipped = run.clipNorm === null ? grads : clipByGlobalNorm(grads, run.clipNorm).grads;
    const decayed = run.weightDecay > 0 ? addWeightDecay(clipped, variables, run.weightDecay) : clipped;
    run.optimizer.applyGradients(decayed as Parameters<tf.Optimizer['applyGradients']>[0]);
    tf.dispose([...new Set([...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)])]);
  } finally {
    correct = tap.end();
  }
  const { total, ...named } = terms;
  return { loss: total!, acc: correct / batch.inputs.shape[0]!, ...named };
}

/** Mean cross-entropy and accuracy in eval mode. */
async function validate(model: Classifier, batches: AsyncGenerator<Batch>): Promise<FitLogs> {
  const accumulator = new MetricsAccumulator();
  for await (const batch of batches) {
    try {
      const logProbabilities = tf.tidy(() => tf.logSoftmax(model.apply(batch.inputs, { mode: 'eval' }).logits));
      accumulator.add(logProbabilities.dataSync(), batch.labels.dataSync(), model.numClasses);
      logProbabilities.dispose();
    } finally {
      tf.dispose([batch.inputs, batch.labels]);
    }
  }
  const { nll, accuracy, count } = accumulator.result();
  if (count === 0) throw new DataError('validationData', 'holds no examples');
  return { val_loss: nll, val_acc: accuracy };
}

/**
 * Frees everything an optimizer holds. Some TF.js 4.22 optimizers' `dispose` skips what their parent
 * classes hold (MomentumOptimizer leaves SGD's learning-rate scalar and the iteration counter), so
 * every class's own `dispose` in the chain runs; freeing a tensor twice is a no-op.
 */
export function disposeOptimizer(optimizer: tf.Optimizer): void {
  for (let prototype = Object.getPrototypeOf(optimizer); prototype && prototype !== Object.prototype; prototype = Object.getPrototypeOf(prototype)) {
    if (Object.prototype.hasOwnProperty.call(prototype, 'dispose')) (prototype.dispose as () => void).call(optimizer);
  }
}
