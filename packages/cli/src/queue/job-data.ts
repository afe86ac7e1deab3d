import { BACKEND_NAMES, type BackendName } from '@regstack/backend';
import { modelNames, type ModelName } from '@regstack/models';
import { ConfigError, assertChoice, assertNumber } from '@regstack/regularizer';
import { DATASET_NAMES, type DataSpec } from '../data.js';
import type { JobSpec, Recipe } from '../job.js';
import { checkStack } from '../compare.js';
import { parseStackSpec } from '../spec.js';

/** Version of the job data below; a worker refuses data of another version. */
export const JOB_DATA_FORMAT = 1;

/**
 * What one queued job carries: everything a worker needs to train it, and nothing that names a
 * place on the worker's disk (workers read data from their own `--data-dir`).
 */
export interface QueuedJobData {
  format: typeof JOB_DATA_FORMAT;
  /** The study (`--name`) the job belongs to. */
  study: string;
  /** The job's id within its study, as a local `compare` names its run folder: `<stack>__seed<n>`. */
  run: string;
  /** The stack as written on the command line; parsed again by the worker. */
  stack: string;
  seed: number;
  data: Omit<DataSpec, 'directory'>;
  model: JobSpec['model'];
  recipe: Recipe;
  backend: BackendName;
}

/** Study names: they become Redis key parts and folder names, so a conservative alphabet. */
export const STUDY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** Run ids as made by {@link runId}. */
const RUN_ID = /^[A-Za-z0-9=-][A-Za-z0-9.=_-]{0,95}$/;

const slug = (text: string) => text.replace(/[^a-zA-Z0-9.=-]+/g, '_').slice(0, 80);

/** A run's id in its study, the same as the folder a local `compare` gives it. */
export function runId(stackLabel: string, seed: number): string {
  return `${slug(stackLabel)}__seed${seed}`;
}

/** The BullMQ job id: deterministic, so enqueuing a study twice finds the jobs already there. */
export function queueJobId(study: string, run: string): string {
  return `${study}/${run}`;
}

/** Throws unless `name` is a valid study name. */
export function checkStudyName(name: string, field = '--name'): string {
  if (!STUDY_NAME.test(name) || name.includes('..')) {
    throw new ConfigError(field, `'${name}' is not a study name: letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit`);
  }
  return name;
}

const isPlainObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value) && Object.getPrototypeOf(value) === Object.prototype;

function object(field: string, value: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (!isPlainObject(value)) throw new ConfigError(field, `expected an object, got ${value === null ? 'null' : typeof value}`);
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) throw new ConfigError(`${field}.${key}`, `unknown field; known: ${allowed.join(', ')}`);
  }
  return value;
}

const optionalInteger = (field: string, value: unknown, min: number) =>
  value === undefined ? undefined : assertNumber(field, value, { integer: true, min });

/**
 * Checks job data read from the queue, which anyone with access to Redis can write: every field's
 * type and range, the stack through the command line's own parser and each regularizer's option
 * checks, and names that become folders through a strict alphabet. Returns a fresh object holding
 * only the checked fields. Throws a ConfigError naming the field.
 */
export function validateQueuedJob(untrusted: unknown): QueuedJobData {
  const job = object('job', untrusted, ['format', 'study', 'run', 'stack', 'seed', 'data', 'model', 'recipe', 'backend']);
  if (job.format !== JOB_DATA_FORMAT) throw new ConfigError('job.format', `expected ${JOB_DATA_FORMAT}, got ${String(job.format)}: enqueued by another regstack version`);
  if (typeof job.study !== 'string') throw new ConfigError('job.study', 'expected a string');
  const study = checkStudyName(job.study, 'job.study');
  if (typeof job.stack !== 'string' || job.stack.length > 1000) throw new ConfigError('job.stack', 'expected a stack as written on the command line');
  const stack = parseStackSpec(job.stack, 'job.stack');
  checkStack(stack); // every option checked by its plugin, and the stack composed, as by a local compare
  const seed = assertNumber('job.seed', job.seed, { integer: true, min: 0, max: 2 ** 31 - 1 });
  const run = runId(stack.label, seed);
  if (job.run !== run || !RUN_ID.test(run)) throw new ConfigError('job.run', `expected '${run}' for stack '${stack.label}' and seed ${seed}, got '${String(job.run)}'`);

  const data = object('job.data', job.data, ['name', 'trainSize', 'testSize', 'includeExtra']);
  const dataSpec: Omit<DataSpec, 'directory'> = { name: assertChoice('job.data.name', data.name, DATASET_NAMES) };
  const trainSize = optionalInteger('job.data.trainSize', data.trainSize, 1);
  const testSize = optionalInteger('job.data.testSize', data.testSize, 1);
  if (trainSize !== undefined) dataSpec.trainSize = trainSize;
  if (testSize !== undefined) dataSpec.testSize = testSize;
  if (data.includeExtra !== undefined) {
    if (typeof data.includeExtra !== 'boolean') throw new ConfigError('job.data.includeExtra', 'expected true or false');
    dataSpec.includeExtra = data.includeExtra;
  }

  const model = object('job.model', job.model, ['name', 'options']);
  const modelOptions = object('job.model.options', model.options ?? {}, Object.keys(model.options ?? {}));
  const options: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(modelOptions)) {
    // Model options are numbers, booleans, strings and lists of numbers (as --model-options writes
    // them); the model checks names and ranges when the worker builds it.
    if (!/^[a-zA-Z][a-zA-Z0-9]{0,63}$/.test(key)) throw new ConfigError(`job.model.options.${key}`, 'not an option name');
    const scalar = (v: unknown) => v === null || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && v.length <= 200);
    if (!(scalar(value) || (Array.isArray(value) && value.length <= 64 && value.every((v) => typeof v === 'number' && Number.isFinite(v))))) {
      throw new ConfigError(`job.model.options.${key}`, 'expected a number, boolean, short string or list of numbers');
    }
    options[key] = Array.isArray(value) ? [...value] : value;
  }

  const recipe = object('job.recipe', job.recipe, ['epochs', 'batchSize', 'learningRate', 'milestones', 'momentum', 'weightDecay', 'clipNorm', 'augment', 'validation']);
  const epochs = assertNumber('job.recipe.epochs', recipe.epochs, { integer: true, min: 1, max: 100_000 });
  const checkedRecipe: Recipe = {
    epochs,
    batchSize: assertNumber('job.recipe.batchSize', recipe.batchSize, { integer: true, min: 1, max: 1_000_000 }),
    learningRate: assertNumber('job.recipe.learningRate', recipe.learningRate, { min: 0, minExclusive: true }),
    momentum: assertNumber('job.recipe.momentum', recipe.momentum, { min: 0, max: 1, maxExclusive: true }),
    weightDecay: assertNumber('job.recipe.weightDecay', recipe.weightDecay, { min: 0 }),
    clipNorm: recipe.clipNorm === null ? null : assertNumber('job.recipe.clipNorm', recipe.clipNorm, { min: 0, minExclusive: true }),
    augment: assertChoice('job.recipe.augment', recipe.augment, ['none', 'crop-flip', 'two-view'] as const),
  };
  if (recipe.validation !== undefined) checkedRecipe.validation = assertChoice('job.recipe.validation', recipe.validation, ['hold-out', 'none'] as const);
  if (recipe.milestones !== undefined) {
    if (!Array.isArray(recipe.milestones) || recipe.milestones.length > 100) throw new ConfigError('job.recipe.milestones', 'expected a list of epochs');
    checkedRecipe.milestones = recipe.milestones.map((value, i) => assertNumber(`job.recipe.milestones[${i}]`, value, { min: 0, max: epochs }));
  }
  return {
    format: JOB_DATA_FORMAT,
    study,
    run,
    stack: stack.label,
    seed,
    data: dataSpec,
    model: { name: assertChoice('job.model.name', model.name, modelNames as readonly ModelName[]), options },
    recipe: checkedRecipe,
    backend: assertChoice('job.backend', job.backend, BACKEND_NAMES),
  };
}

/** The job data for one (stack, seed) of a local job template. */
export function queuedJobFromSpec(study: string, spec: Pick<JobSpec, 'stack' | 'seed' | 'data' | 'model' | 'recipe' | 'backend'>): QueuedJobData {
  const { directory: _, ...data } = spec.data;
  return validateQueuedJob({
    format: JOB_DATA_FORMAT,
    study,
    run: runId(spec.stack.label, spec.seed),
    stack: spec.stack.label,
    seed: spec.seed,
    data,
    model: spec.model,
    recipe: spec.recipe,
    backend: spec.backend,
  });
}

/** The local job a worker runs for checked job data: its folder and data folder are the worker's own. */
export function jobSpecFor(job: QueuedJobData, worker: { directory: string; dataDirectory?: string; threads?: number }): JobSpec {
  return {
    id: job.run,
    data: { ...job.data, ...(worker.dataDirectory ? { directory: worker.dataDirectory } : {}) },
    model: job.model,
    stack: parseStackSpec(job.stack),
    recipe: job.recipe,
    seed: job.seed,
    backend: job.backend,
    ...(worker.threads && worker.threads > 1 ? { threads: worker.threads } : {}),
    directory: worker.directory,
    resume: true,
  };
}
