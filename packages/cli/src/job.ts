import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { useBackend, type BackendName } from '@regstack/backend';
import { standardAugmentation } from '@regstack/datasets';
import { createModel, type ModelName } from '@regstack/models';
import { schedules } from '@regstack/regularizer';
import { train, type CheckpointStore, type ClassificationMetrics, type EpochRecord } from '@regstack/trainer';
import { consoleReporter, fileCheckpointStore } from '@regstack/trainer/node';
import { loadData, type DataSpec } from './data.js';
import { createRegularizers } from './registry.js';
import { formatStackSpec, type StackSpec } from './spec.js';

/** The training recipe of a job. Defaults (in the command line) are the paper's, scaled by epochs. */
export interface Recipe {
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Epochs at which the learning rate is multiplied by 0.1; default 50%, 75%, 90% of the run. */
  milestones?: number[];
  momentum: number;
  weightDecay: number;
  clipNorm: number | null;
  /** `none` (ERM), `crop-flip` (random crop with 4-pixel zero padding + flip), `two-view` (the reference's base loss). */
  augment: 'none' | 'crop-flip' | 'two-view';
  /**
   * `hold-out` (default): 10% of the training set validates each epoch and the best-validation weights
   * are tested. `none`: train on all of it and test the final epoch's weights (the reference script's protocol).
   */
  validation?: 'hold-out' | 'none';
}

/** Everything one training run needs; written as JSON so a worker process can run it. */
export interface JobSpec {
  /** Unique, file-name safe. */
  id: string;
  data: DataSpec;
  model: { name: ModelName; options: Record<string, unknown> };
  stack: StackSpec;
  recipe: Recipe;
  seed: number;
  backend: BackendName;
  /** wasm in Node: threads for the job (the main one and convolution workers); absent means 1. */
  threads?: number;
  /** The job's folder: checkpoint, log and result. */
  directory: string;
  /** Continue from the job's checkpoint (and skip it if its result exists). */
  resume: boolean;
}

/** What a finished job writes to `result.json`. */
export interface JobResult {
  id: string;
  stack: string;
  seed: number;
  data: DataSpec;
  model: JobSpec['model'];
  recipe: Recipe;
  backend: string;
  bestEpoch: number;
  /** Metrics of the tested weights on the hold-out; absent with `recipe.validation: 'none'`. */
  validation?: ClassificationMetrics;
  test: ClassificationMetrics;
  history: EpochRecord[];
  /** Mean wall-clock seconds of an epoch's training steps. */
  secondsPerEpoch: number;
  secondsPerStep: number;
  steps: number;
}

/** Both epoch callbacks, in order. */
const chain =
  (first: ((record: EpochRecord) => void) | undefined, second: (record: EpochRecord) => void | Promise<void>) =>
  async (record: EpochRecord) => {
    first?.(record);
    await second(record);
  };

/** The command that reruns a job alone. */
export function jobCommand(spec: JobSpec): string {
  const modelOptions = Object.entries(spec.model.options).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(';') : v}`).join(',');
  const parts = [
    'regstack train',
    `--data ${spec.data.name}`,
    spec.data.directory ? `--data-dir ${spec.data.directory}` : '',
    spec.data.trainSize !== undefined ? `--train-size ${spec.data.trainSize}` : '',
    spec.data.testSize !== undefined ? `--test-size ${spec.data.testSize}` : '',
    `--model ${spec.model.name}`,
    modelOptions ? `--model-options ${modelOptions}` : '',
    ...spec.stack.regularizers.map((r) => `--reg '${formatStackSpec([r])}'`),
    `--epochs ${spec.recipe.epochs} --batch-size ${spec.recipe.batchSize} --lr ${spec.recipe.learningRate}`,
    spec.recipe.milestones ? `--milestones ${spec.recipe.milestones.join(',')}` : '',
    `--augment ${spec.recipe.augment}`,
    spec.recipe.validation === 'none' ? '--validation none' : '',
    `--seed ${spec.seed} --backend ${spec.backend}`,
    spec.threads !== undefined ? `--threads ${spec.threads}` : '',
    `--out ${spec.directory}`,
  ];
  return parts.filter(Boolean).join(' ');
}

/** Options of {@link runJob}. */
export interface RunJobOptions {
  /** No progress output. */
  quiet?: boolean;
  /** Where checkpoints go; default files in the job's folder. Queue workers keep them in Redis. */
  checkpoints?: CheckpointStore;
  /** Called after each epoch, once its checkpoint is saved. */
  onEpochEnd?: (record: EpochRecord) => void | Promise<void>;
}

/**
 * Runs one job in this process: loads the data, builds the model and stack, trains with a
 * checkpoint each epoch, evaluates the best-validation weights on the test set, writes result.json.
 */
export async function runJob(spec: JobSpec, options: RunJobOptions = {}): Promise<JobResult> {
  const resultPath = join(spec.directory, 'result.json');
  if (spec.resume && existsSync(resultPath)) return JSON.parse(await readFile(resultPath, 'utf8')) as JobResult;
  await mkdir(spec.directory, { recursive: true });
  await writeFile(join(spec.directory, 'job.json'), JSON.stringify(spec, null, 2));
  await useBackend(spec.backend, spec.threads !== undefined ? { threads: spec.threads } : {});
  const regularizers = createRegularizers(spec.stack.regularizers); // before loading data: option errors come first
  const holdOut = spec.recipe.validation !== 'none';
  const data = await loadData(spec.data, { holdOut });
  const model = createModel(spec.model.name, {
    ...spec.model.options,
    inputShape: [...data.info.imageShape] as [number, number, number],
    numClasses: data.info.numClasses,
    mean: [...data.info.normalization.mean],
    std: [...data.info.normalization.std],
    seed: spec.seed,
  } as never);
  try {
    const { recipe } = spec;
    const milestones = recipe.milestones ?? [0.5, 0.75, 0.9].map((fraction) => fraction * recipe.epochs);
    const reporter: Partial<ReturnType<typeof consoleReporter>> = options.quiet ? {} : consoleReporter({ fields: { job: spec.id } });
    const result = await train({
      model,
      train: data.train,
      ...(holdOut ? { validation: data.validation } : { validationFraction: 0 }),
      test: data.test,
      regularizers,
      epochs: recipe.epochs,
      batchSize: recipe.batchSize,
      learningRate: schedules.multiStep(recipe.learningRate, milestones),
      momentum: recipe.momentum,
      weightDecay: recipe.weightDecay,
      clipNorm: recipe.clipNorm,
      seed: spec.seed,
      ...(recipe.augment !== 'none' ? { augment: standardAugmentation } : {}),
      baseLoss: recipe.augment === 'two-view' ? 'two-view' : 'single',
      checkpoints: options.checkpoints ?? fileCheckpointStore(join(spec.directory, 'checkpoint')),
      resume: spec.resume,
      validateBatches: false, // the loaders validate labels and ranges once, when they build the data set
      ...reporter,
      ...(options.onEpochEnd ? { onEpochEnd: chain(reporter.onEpochEnd, options.onEpochEnd) } : {}),
    });
    const trainSeconds = result.history.reduce((sum, record) => sum + record.trainSeconds, 0);
    const stepsPerEpoch = result.steps / Math.max(1, result.history.length);
    const jobResult: JobResult = {
      id: spec.id,
      stack: spec.stack.label,
      seed: spec.seed,
      data: spec.data,
      model: spec.model,
      recipe: spec.recipe,
      backend: spec.backend,
      bestEpoch: result.bestEpoch,
      ...(result.validation ? { validation: result.validation } : {}),
      test: result.test!,
      history: result.history,
      secondsPerEpoch: trainSeconds / result.history.length,
      secondsPerStep: trainSeconds / result.history.length / stepsPerEpoch,
      steps: result.steps,
    };
    await writeFile(resultPath, JSON.stringify(jobResult, null, 1));
    return jobResult;
  } finally {
    model.dispose();
  }
}
