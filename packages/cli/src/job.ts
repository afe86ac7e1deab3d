import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { useBackend, type BackendName } from '@regstack/backend';
import { standardAugmentation } from '@regstack/datasets';
import { createModel, type ModelName } from '@regstack/models';
import { ConfigError, DataError, schedules } from '@regstack/regularizer';
import { train, type CheckpointStore, type ClassificationMetrics, type EpochRecord } from '@regstack/trainer';
import { consoleReporter, fileCheckpointStore } from '@regstack/trainer/node';
import { loadData, type DataSpec } from './data.js';
import { createRegularizers } from './registry.js';
import { RunFolderError, lockFolder, prepareFolder, writeFileAtomically } from './run-folder.js';
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
  /** Continue from the job's checkpoint (and skip it if its result exists); see {@link specDifferences} for what may change. */
  resume: boolean;
  /** Start over in a folder that holds a run (deletes its job.json, checkpoint, log and result). */
  overwrite?: boolean;
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

/** Learning-rate milestones as run: the given ones, or 50%, 75% and 90% of the epochs. */
export function resolvedMilestones(recipe: Recipe): number[] {
  return recipe.milestones ?? [0.5, 0.75, 0.9].map((fraction) => fraction * recipe.epochs);
}

/** Fields that may differ between the run in a folder and a `--resume` of it: where things are, not what is computed. */
const MAY_CHANGE = new Set(['id', 'directory', 'resume', 'overwrite', 'threads', 'data.directory']);

function flatten(value: unknown, prefix: string, into: Map<string, string>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, into);
  } else if (value !== undefined) {
    into.set(prefix, JSON.stringify(value));
  }
}

/**
 * What differs between the spec a run folder records and the one a `--resume` asks for, as
 * `field: before → now` lines; empty when the resume is allowed. The rule: everything that shapes
 * the numbers must be equal (data, model, stack, seed, recipe, backend); the folder, the thread
 * count and the data folder may change; the epochs may grow if the learning-rate milestones stay
 * the same (the default milestones are fractions of the epochs, so extending a run needs
 * `--milestones` given explicitly).
 */
export function specDifferences(stored: JobSpec, requested: JobSpec): string[] {
  const describe = (spec: JobSpec) => {
    const fields = new Map<string, string>();
    const { stack, recipe, ...rest } = spec;
    const { epochs: _, milestones: __, ...recipeRest } = recipe;
    flatten({ ...rest, recipe: recipeRest }, '', fields);
    fields.set('stack', formatStackSpec(stack.regularizers));
    fields.set('recipe.milestones', resolvedMilestones(recipe).join(','));
    return fields;
  };
  const [before, now] = [describe(stored), describe(requested)];
  const differences: string[] = [];
  for (const key of new Set([...before.keys(), ...now.keys()])) {
    if (MAY_CHANGE.has(key) || before.get(key) === now.get(key)) continue;
    differences.push(`${key}: ${before.get(key) ?? '(absent)'} → ${now.get(key) ?? '(absent)'}`);
  }
  if (requested.recipe.epochs < stored.recipe.epochs) differences.push(`recipe.epochs: ${stored.recipe.epochs} → ${requested.recipe.epochs} (epochs may only grow)`);
  if (requested.recipe.epochs !== stored.recipe.epochs && stored.recipe.milestones === undefined && requested.recipe.milestones === undefined) {
    differences.push(`recipe.epochs: ${stored.recipe.epochs} → ${requested.recipe.epochs} moves the default milestones; to extend the run give --milestones ${resolvedMilestones(stored.recipe).join(',')}`);
  }
  return differences;
}

/** What a run folder holds. */
export interface RunFolderState {
  /** The spec it records (job.json), if any. */
  job?: JobSpec;
  /** Its result (result.json), if finished. */
  result?: JobResult;
  /** Whether a run was started there (a checkpoint or a result). */
  started: boolean;
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT' || (error as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw error;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new DataError(path, 'is not valid JSON (a run folder file was damaged; use --overwrite to start the run over)');
  }
}

/** Reads what `directory` holds of a run. */
export async function readRunFolder(directory: string): Promise<RunFolderState> {
  const job = await readJson<JobSpec>(join(directory, 'job.json'));
  const result = await readJson<JobResult>(join(directory, 'result.json'));
  const started = result !== undefined || existsSync(join(directory, 'checkpoint', 'checkpoint.json'));
  return { ...(job ? { job } : {}), ...(result ? { result } : {}), started };
}

/**
 * Decides what a job does with its folder: `'finished'` (resume of a finished run with the same
 * spec: read it back), `'run'` (start, continue or start over). Throws a RunFolderError when the
 * folder holds a run and neither --resume nor --overwrite is given, or when --resume asks for a
 * run with another spec (listing the differences).
 */
export function planRun(spec: JobSpec, folder: RunFolderState): 'finished' | 'run' {
  if (spec.resume && spec.overwrite) throw new ConfigError('--overwrite', 'cannot be combined with --resume');
  if (!spec.resume) {
    if (folder.started && !spec.overwrite) {
      throw new RunFolderError(spec.directory, `holds a run already (${folder.result ? 'finished' : 'a checkpoint'}): add --resume to continue it${folder.result ? ' or read it back' : ''}, or --overwrite to start over`);
    }
    return 'run';
  }
  if (folder.job) {
    const differences = specDifferences(folder.job, spec);
    if (differences.length > 0) {
      throw new RunFolderError(spec.directory, `was run with another spec, and --resume continues only the same run: ${differences.join('; ')}`);
    }
  }
  const finishedEpochs = folder.result?.history.length ?? 0;
  return folder.result && (!folder.job || folder.job.recipe.epochs === spec.recipe.epochs || finishedEpochs >= spec.recipe.epochs) ? 'finished' : 'run';
}

/** Deletes what a run wrote in its folder (and nothing else there). */
async function clearRun(directory: string): Promise<void> {
  for (const name of ['result.json', 'job.json', 'log.jsonl', 'checkpoint']) await rm(join(directory, name), { recursive: true, force: true });
}

/**
 * Runs one job in this process: checks the folder (see {@link planRun}), loads the data, builds
 * the model and stack, then takes the folder's lock, records the spec in job.json, trains with a
 * checkpoint each epoch, evaluates the best-validation weights on the test set and writes
 * result.json. Nothing is written to the folder before the job's options and data are checked.
 */
export async function runJob(spec: JobSpec, options: RunJobOptions = {}): Promise<JobResult> {
  const resultPath = join(spec.directory, 'result.json');
  const regularizers = createRegularizers(spec.stack.regularizers); // option errors come first
  const before = await readRunFolder(spec.directory);
  if (planRun(spec, before) === 'finished') return before.result!;
  await useBackend(spec.backend, spec.threads !== undefined ? { threads: spec.threads } : {});
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
    await prepareFolder(spec.directory);
    const lock = lockFolder(spec.directory, jobCommand(spec));
    try {
      // Again under the lock: another process may have used the folder since the first look.
      const folder = await readRunFolder(spec.directory);
      if (planRun(spec, folder) === 'finished') return folder.result!;
      if (!spec.resume && spec.overwrite) await clearRun(spec.directory);
      await writeFileAtomically(join(spec.directory, 'job.json'), JSON.stringify(spec, null, 2));
      const { recipe } = spec;
      const reporter: Partial<ReturnType<typeof consoleReporter>> = options.quiet ? {} : consoleReporter({ fields: { job: spec.id } });
      const result = await train({
        model,
        train: data.train,
        ...(holdOut ? { validation: data.validation } : { validationFraction: 0 }),
        test: data.test,
        regularizers,
        epochs: recipe.epochs,
        batchSize: recipe.batchSize,
        learningRate: schedules.multiStep(recipe.learningRate, resolvedMilestones(recipe)),
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
      await writeFileAtomically(resultPath, JSON.stringify(jobResult, null, 1));
      return jobResult;
    } finally {
      lock.release();
    }
  } finally {
    model.dispose();
  }
}
