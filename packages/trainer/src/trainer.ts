import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigError,
  DataError,
  DivergenceError,
  Random,
  addWeightDecay,
  holdOutIndices,
  assertClassifier,
  assertKnownOptions,
  assertNumber,
  clipByGlobalNorm,
  composeRegularizers,
  resolveSchedule,
  schedules,
  validateSchedulable,
  type Classifier,
  type RegularizerPlugin,
  type RegularizerStack,
  type Schedulable,
} from '@regstack/regularizer';
import {
  checkpointTensors,
  serializeCheckpoint,
  verifyCheckpoint,
  type CheckpointStore,
  type SerializedCheckpoint,
  type TrainingState,
} from './checkpoint.js';
import { batchIndices, type DataSource } from './data.js';
import { MetricsAccumulator, type ClassificationMetrics, type EpochRecord } from './metrics.js';

export type { EpochRecord } from './metrics.js';

/** Augmentation of a batch of raw inputs, drawing from the run's generator (e.g. `standardAugmentation` of `@regstack/datasets`). */
export type AugmentFunction = (inputs: tf.Tensor, random: Random) => tf.Tensor;

/** What the trainer reports after each optimizer step. */
export interface BatchInfo {
  epoch: number;
  batch: number;
  batches: number;
  step: number;
  /** Named loss terms of the step (`base`, one per plugin, `total`). */
  terms: Record<string, number>;
}

/** What `train` returns. */
export interface TrainResult {
  history: EpochRecord[];
  /** 1-based epoch of the restored best-validation weights; the last epoch when there is no validation set. */
  bestEpoch: number;
  /** Validation metrics of the restored weights; absent when there is no validation set. */
  validation?: ClassificationMetrics;
  /** Test metrics of the returned weights (best-validation, or final without validation), when a test set was given. */
  test?: ClassificationMetrics;
  /** Optimizer steps taken in total. */
  steps: number;
}

/** Options of {@link train}. Defaults are the RCAD paper's recipe (see the package README). */
export interface TrainOptions {
  /** The model to train (see `@regstack/models` or the adapters of `@regstack/regularizer`). */
  model: Classifier;
  /** Training data: raw, un-augmented inputs in [0,1] and integer labels. */
  train: DataSource;
  /**
   * Validation data; when absent, `validationFraction` of `train` is held out (seeded). With
   * `validationFraction: 0` and no `validation`, the run trains on all of `train`, evaluates nothing
   * between epochs and keeps the final epoch's weights (the reference script's protocol).
   */
  validation?: DataSource;
  /** Test data, evaluated once at the end with the best-validation weights. */
  test?: DataSource;
  /** The regularizers, as plugins (composed here) or an already composed stack. Default: none (ERM). */
  regularizers?: readonly RegularizerPlugin[] | RegularizerStack;
  /** Epochs. Default 200. */
  epochs?: number;
  /** Batch size. Default 128. */
  batchSize?: number;
  /** Learning rate or schedule. Default 0.1, ×0.1 at 50%, 75% and 90% of the epochs (100, 150, 180 of 200). */
  learningRate?: Schedulable;
  /** SGD momentum. Default 0.9. */
  momentum?: number;
  /** Nesterov momentum. Default true. */
  nesterov?: boolean;
  /** Coupled weight decay added after clipping, on every parameter. Default 5e-4. */
  weightDecay?: number;
  /** Global gradient-norm clip, applied before weight decay; `null` disables. Default 1.0. */
  clipNorm?: number | null;
  /** Data augmentation: off is ERM; on is the paper's "data augmentation" baseline. */
  augment?: AugmentFunction;
  /** `single` (CE on the augmented batch) or `two-view` (the reference's 0.5·[CE(x) + CE(aug x)]). Default single. */
  baseLoss?: 'single' | 'two-view';
  /** Seed of the run's generator: shuffling, hold-out, augmentation, mixing, dropout. Default 0. */
  seed?: number;
  /** Fraction held out for validation when `validation` is absent, in [0, 1); 0: no validation. Default 0.1. */
  validationFraction?: number;
  /** Batch size for evaluation. Default 512. */
  evaluationBatchSize?: number;
  /** Where checkpoints go each epoch (`fileCheckpointStore` of `@regstack/trainer/node`). */
  checkpoints?: CheckpointStore;
  /** Continue from the store's checkpoint if there is one. Default false. */
  resume?: boolean;
  /** Called after every optimizer step. */
  onBatchEnd?: (info: BatchInfo) => void;
  /** Called after every epoch (after its checkpoint is saved). */
  onEpochEnd?: (record: EpochRecord) => void | Promise<void>;
  /** Validate every batch (labels in range, finite inputs). Default true. */
  validateBatches?: boolean;
}

const KNOWN_OPTIONS = [
  'model', 'train', 'validation', 'test', 'regularizers', 'epochs', 'batchSize', 'learningRate', 'momentum',
  'nesterov', 'weightDecay', 'clipNorm', 'augment', 'baseLoss', 'seed', 'validationFraction',
  'evaluationBatchSize', 'checkpoints', 'resume', 'onBatchEnd', 'onEpochEnd', 'validateBatches',
] as const;

/** The paper's learning-rate milestones (100, 150, 180 of 200 epochs) as fractions of the run. */
export const RECIPE_MILESTONE_FRACTIONS = [0.5, 0.75, 0.9] as const;

/** Evaluates a model in eval mode, batch by batch. */
export function evaluate(model: Classifier, data: DataSource, batchSize = 512): ClassificationMetrics {
  const accumulator = new MetricsAccumulator();
  const order = Int32Array.from({ length: data.size }, (_, i) => i);
  for (const indices of batchIndices(order, batchSize)) {
    const batch = data.batch(indices);
    const logProbabilities = tf.tidy(() => tf.logSoftmax(model.apply(batch.inputs, { mode: 'eval' }).logits));
    accumulator.add(logProbabilities.dataSync(), batch.labels.dataSync(), model.numClasses);
    tf.dispose([logProbabilities, batch.inputs, batch.labels]);
  }
  return accumulator.result();
}

/** A view of `source` restricted to `indices`. */
function subsetOf(source: DataSource, indices: Int32Array): DataSource {
  return { size: indices.length, batch: (positions) => source.batch(Array.from(positions, (p) => indices[p]!)) };
}

/**
 * Trains a classifier with a stack of regularizers. Each step: prepare the stack outside the tape,
 * take the gradients of the total loss, clip them by global norm, add weight decay, and apply SGD
 * with Nesterov momentum. After each epoch: evaluate on validation, keep the best weights, save a
 * checkpoint. At the end the best-validation weights are restored and the test set evaluated.
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  assertKnownOptions('train', options, KNOWN_OPTIONS);
  const { model } = options;
  assertClassifier(model); // a raw tf.LayersModel is told to use classifierFromLayersModel (or fit)
  checkSource('train', options.train);
  if (options.validation) checkSource('validation', options.validation);
  if (options.test) checkSource('test', options.test);
  const epochs = assertNumber('epochs', options.epochs ?? 200, { min: 1, integer: true });
  const batchSize = assertNumber('batchSize', options.batchSize ?? 128, { min: 1, integer: true });
  const momentum = assertNumber('momentum', options.momentum ?? 0.9, { min: 0, max: 1, maxExclusive: true });
  const weightDecay = assertNumber('weightDecay', options.weightDecay ?? 5e-4, { min: 0 });
  const clipNorm = options.clipNorm === null ? null : assertNumber('clipNorm', options.clipNorm ?? 1, { min: 0, minExclusive: true });
  const seed = assertNumber('seed', options.seed ?? 0, { integer: true });
  const validationFraction = assertNumber('validationFraction', options.validationFraction ?? 0.1, { min: 0, max: 1, maxExclusive: true });
  const evaluationBatchSize = assertNumber('evaluationBatchSize', options.evaluationBatchSize ?? 512, { min: 1, integer: true });
  const baseLoss = options.baseLoss ?? 'single'; // checked by the stack, at the first step, before any update
  const learningRate = validateSchedulable(
    'learningRate',
    options.learningRate ?? schedules.multiStep(0.1, RECIPE_MILESTONE_FRACTIONS.map((fraction) => fraction * epochs)),
  );
  const initialLearningRate = resolveSchedule(learningRate, { step: 0, epoch: 0 });
  if (!(initialLearningRate >= 0)) throw new ConfigError('learningRate', `must be ≥ 0 at the start, got ${initialLearningRate}`);
  if (options.resume && !options.checkpoints) throw new ConfigError('resume', 'needs a checkpoint store (option checkpoints)');
  const stack: RegularizerStack = Array.isArray(options.regularizers) || options.regularizers === undefined
    ? composeRegularizers((options.regularizers ?? []) as RegularizerPlugin[])
    : (options.regularizers as RegularizerStack);

  // The hold-out draws from its own generator so it does not depend on the training stream.
  let trainData = options.train;
  let validationData = options.validation;
  if (!validationData && validationFraction > 0) {
    const split = holdOutIndices(trainData.size, validationFraction, new Random(seed ^ 0x5eed));
    if (split.train.length === 0) throw new DataError('train', `too few examples (${trainData.size}) to hold out a validation set`);
    validationData = subsetOf(options.train, split.validation);
    trainData = subsetOf(options.train, split.train);
  }

  // What a checkpoint must agree with to be resumed: a run continued with other settings would be
  // labelled with settings it was not trained with. Epochs may grow; the schedule is checked below.
  const settings: Record<string, unknown> = {
    seed, batchSize, momentum, nesterov: options.nesterov ?? true, weightDecay, clipNorm, baseLoss,
    augment: options.augment !== undefined,
    regularizers: stack.plugins.map((plugin) => plugin.name),
    trainSize: trainData.size,
    validationSize: validationData?.size ?? 0,
  };

  const variables = model.trainableVariables as tf.Variable[];
  const stateVariables = [...variables, ...model.nonTrainableVariables];
  const optimizer = tf.train.momentum(resolveSchedule(learningRate, { step: 0, epoch: 0 }), momentum, options.nesterov ?? true);
  let random = new Random(seed);
  let state: TrainingState = { epoch: 0, step: 0, random: random.getState(), bestEpoch: 0, bestValidationAccuracy: -1, history: [] };
  let best: tf.Tensor[] | null = null;

  try {
    if (options.resume) {
      const checkpoint = await options.checkpoints!.load();
      if (checkpoint) {
        await verifyCheckpoint(checkpoint);
        checkResumable(checkpoint, settings, epochs, (epoch) => resolveSchedule(learningRate, { step: epoch * Math.ceil(trainData.size / batchSize), epoch }));
        best = await restoreCheckpoint(checkpoint, stateVariables, optimizer);
        state = structuredClone(checkpoint.manifest.state);
        random = Random.fromState(state.random);
      }
    }
    const batchesPerEpoch = Math.ceil(trainData.size / batchSize);
    for (let epoch = state.epoch; epoch < epochs; epoch++) {
      const epochLearningRate = resolveSchedule(learningRate, { step: state.step, epoch });
      const sums: Record<string, number> = {};
      const order = random.permutation(trainData.size);
      const batches = batchIndices(order, batchSize);
      const started = performance.now();
      for (const [index, indices] of batches.entries()) {
        const progress = { step: state.step, epoch: epoch + index / batchesPerEpoch };
        optimizer.setLearningRate(resolveSchedule(learningRate, progress));
        const batch = trainData.batch(indices);
        let terms: Record<string, number>;
        try {
          // The stack's gradients(): the cheaper fused pass where it is exact (see RegularizerStack.gradients).
          const { value, grads, terms: stepTerms } = stack.gradients({
            model, batch, random, ...progress, baseLoss,
            ...(options.augment ? { augment: options.augment } : {}),
            validate: options.validateBatches ?? true,
          });
          const loss = value.dataSync()[0]!;
          value.dispose();
          if (!Number.isFinite(loss)) {
            tf.dispose(Object.values(grads));
            const kept = !options.checkpoints
              ? 'no checkpoints are kept (option checkpoints)'
              : state.epoch === 0
                ? 'no checkpoint was saved (it diverged in the first epoch)'
                : `the last checkpoint (end of epoch ${state.epoch}) is intact`;
            throw new DivergenceError('loss', `became ${loss} at epoch ${epoch + 1}, step ${state.step}; training stopped and ${kept}`);
          }
          const clipped = clipNorm === null ? grads : clipByGlobalNorm(grads, clipNorm).grads;
          const decayed = addWeightDecay(clipped, variables, weightDecay);
          optimizer.applyGradients(decayed as Parameters<typeof optimizer.applyGradients>[0]);
          tf.dispose([...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)]);
          terms = stepTerms;
        } finally {
          tf.dispose([batch.inputs, batch.labels]);
        }
        for (const [name, value] of Object.entries(terms)) sums[name] = (sums[name] ?? 0) + value;
        state.step++;
        options.onBatchEnd?.({ epoch: epoch + 1, batch: index + 1, batches: batches.length, step: state.step, terms });
      }
      const trainSeconds = (performance.now() - started) / 1000;
      const validation = validationData ? withoutReliability(evaluate(model, validationData, evaluationBatchSize)) : undefined;
      // Without validation the final weights are the result: nothing to keep a copy of.
      const improved = validation === undefined || validation.accuracy > state.bestValidationAccuracy;
      if (validation && improved) {
        tf.dispose(best ?? []);
        best = stateVariables.map((variable) => tf.keep(tf.clone(variable)));
        state.bestEpoch = epoch + 1;
        state.bestValidationAccuracy = validation.accuracy;
      } else if (!validation) {
        state.bestEpoch = epoch + 1;
      }
      const record: EpochRecord = {
        epoch: epoch + 1,
        learningRate: epochLearningRate,
        terms: Object.fromEntries(Object.entries(sums).map(([name, sum]) => [name, sum / batches.length])),
        ...(validation ? { validation } : {}),
        trainSeconds,
        secondsPerStep: trainSeconds / batches.length,
        best: improved,
      };
      state.history.push(record);
      state.epoch = epoch + 1;
      state.random = random.getState();
      if (options.checkpoints) await options.checkpoints.save(await snapshot(state, stateVariables, optimizer, best, settings));
      await options.onEpochEnd?.(record);
    }
    if (best) stateVariables.forEach((variable, i) => variable.assign(best![i]!));
    const result: TrainResult = { history: state.history, bestEpoch: state.bestEpoch, steps: state.step };
    if (validationData) result.validation = evaluate(model, validationData, evaluationBatchSize);
    if (options.test) result.test = evaluate(model, options.test, evaluationBatchSize);
    return result;
  } finally {
    tf.dispose(best ?? []);
    disposeMomentumOptimizer(optimizer);
  }
}

/**
 * TF.js 4.22's `MomentumOptimizer.dispose` frees its momentum buffers but not the learning-rate
 * scalar and iteration counter its parents hold (it does not call `super.dispose()`): free those too.
 */
function disposeMomentumOptimizer(optimizer: tf.MomentumOptimizer): void {
  optimizer.dispose();
  tf.SGDOptimizer.prototype.dispose.call(optimizer);
  tf.Optimizer.prototype.dispose.call(optimizer);
}

function withoutReliability({ reliability: _, ...metrics }: ClassificationMetrics): Omit<ClassificationMetrics, 'reliability'> {
  return metrics;
}

function checkSource(field: string, source: DataSource | undefined): void {
  if (!source || typeof source.batch !== 'function' || !Number.isInteger(source.size)) {
    throw new ConfigError(field, 'expected a data source with `size` and `batch(indices)` (a Dataset, or tensorData(inputs, labels))');
  }
  if (source.size < 1) throw new DataError(field, 'is empty');
}

async function snapshot(
  state: TrainingState,
  variables: readonly tf.Variable[],
  optimizer: tf.MomentumOptimizer,
  best: readonly tf.Tensor[] | null,
  settings: Record<string, unknown>,
): Promise<SerializedCheckpoint> {
  const optimizerWeights = await optimizer.getWeights();
  return serializeCheckpoint(state, {
    model: variables.map((variable, i) => ({ name: `${i}`, tensor: variable })),
    optimizer: optimizerWeights.map(({ name, tensor }) => ({ name, tensor })),
    best: (best ?? []).map((tensor, i) => ({ name: `${i}`, tensor })),
  }, settings);
}

/**
 * Throws a ConfigError listing every difference between the run that wrote `checkpoint` and this
 * one: its settings, more epochs done than asked for, and the learning rate of each completed
 * epoch (so a changed rate or milestone shows even though the schedule is a function).
 */
function checkResumable(
  checkpoint: SerializedCheckpoint,
  settings: Record<string, unknown>,
  epochs: number,
  learningRateAt: (epoch: number) => number,
): void {
  const { state } = checkpoint.manifest;
  const differences: string[] = [];
  const stored = checkpoint.manifest.settings;
  if (stored) {
    for (const key of Object.keys(settings)) {
      const [before, now] = [JSON.stringify(stored[key]), JSON.stringify(settings[key])];
      if (before !== now) differences.push(`${key} ${before} → ${now}`);
    }
  }
  if (state.epoch > epochs) differences.push(`epochs: ${state.epoch} done, ${epochs} asked for`);
  for (const record of state.history) {
    const now = learningRateAt(record.epoch - 1);
    if (Math.abs(now - record.learningRate) > 1e-12 * Math.max(1, Math.abs(now))) {
      differences.push(`learningRate at epoch ${record.epoch} ${record.learningRate} → ${now}`);
      break;
    }
  }
  if (differences.length > 0) {
    throw new ConfigError('resume', `the checkpoint${checkpoint.source ? ` in ${checkpoint.source}` : ''} was written by a different run: ${differences.join('; ')}`);
  }
}

/** Loads a checkpoint into the model and optimizer; returns the best-weights snapshot it holds. */
async function restoreCheckpoint(
  checkpoint: SerializedCheckpoint,
  variables: readonly tf.Variable[],
  optimizer: tf.MomentumOptimizer,
): Promise<tf.Tensor[] | null> {
  const stored = checkpointTensors(checkpoint, 'model');
  let best: ReturnType<typeof checkpointTensors> = [];
  try {
    best = checkpointTensors(checkpoint, 'best');
  } catch (error) {
    tf.dispose(stored.map((entry) => entry.tensor));
    throw error;
  }
  const release = () => tf.dispose([...stored, ...best].map((entry) => entry.tensor));
  if (stored.length !== variables.length) {
    release();
    throw new DataError('checkpoint', `holds ${stored.length} variables but the model has ${variables.length}: is it the same model?`);
  }
  for (const [i, variable] of variables.entries()) {
    const { tensor } = stored[i]!;
    if (tensor.shape.join() !== variable.shape.join()) {
      release();
      throw new DataError(`checkpoint.model.${i}`, `has shape [${tensor.shape}] but the model's variable ${variable.name} has [${variable.shape}]`);
    }
  }
  let optimizerWeights: ReturnType<typeof checkpointTensors>;
  try {
    optimizerWeights = checkpointTensors(checkpoint, 'optimizer');
  } catch (error) {
    release();
    throw error;
  }
  variables.forEach((variable, i) => variable.assign(stored[i]!.tensor));
  tf.dispose(stored.map((entry) => entry.tensor));
  if (optimizerWeights.length > 0) await optimizer.setWeights(optimizerWeights);
  tf.dispose(optimizerWeights.map((entry) => entry.tensor));
  return best.length > 0 ? best.map((entry) => tf.keep(entry.tensor)) : null;
}
