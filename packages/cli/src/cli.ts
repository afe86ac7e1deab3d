#!/usr/bin/env node
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import Table from 'cli-table3';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { BACKEND_NAMES, listBackends, type BackendName } from '@regstack/backend';
import { modelNames, type ModelName } from '@regstack/models';
import { ConfigError, DataError, DivergenceError, RegstackError, describeError } from '@regstack/regularizer';
import { JobsFailedError, compare, stopWorkers } from './compare.js';
import { DATASET_NAMES, type DatasetName } from './data.js';
import { runJob, type JobSpec, type Recipe } from './job.js';
import { regularizerRegistry } from './registry.js';
import { addQueueCommands, compareOnQueue } from './queue/commands.js';
import { FileSystemError, RunFolderError, asFileSystemError, isFileSystemError, releaseAllLocks } from './run-folder.js';
import { parseOptions, parseRegularizerSpec, parseStackSpec, type RegularizerSpec, type StackSpec } from './spec.js';
import { SUMMARY_HEADERS, formatRow } from './summary.js';

/** The quick demonstration the README runs: fits in about ten minutes on two cores. */
export const QUICK_PRESET = {
  data: 'fashion-mnist-embedded' as DatasetName,
  model: 'small-cnn' as ModelName,
  modelOptions: { width: 8 },
  epochs: 6,
  batchSize: 64,
  learningRate: 0.05,
  seeds: [0],
  stacks: [
    'erm',
    'label-smoothing:epsilon=0.1',
    'mixup',
    'adversarial-training:attack=fgsm,epsilon=0.03',
    'entropy-min',
    'rcad:alpha=0.5',
    'rcad:alpha=0.5+label-smoothing:epsilon=0.1',
  ],
};

/** Bounds of a numeric argument. */
interface Bounds {
  integer?: boolean;
  min?: number;
  /** `min` itself is not allowed. */
  above?: boolean;
  /** Exclusive upper bound. */
  below?: number;
}

const number = (name: string, bounds: Bounds | boolean = {}) => (text: string) => {
  const { integer = false, min, above = false, below } = typeof bounds === 'boolean' ? { integer: bounds } : bounds;
  const value = text.trim() === '' ? Number.NaN : Number(text);
  const kind = integer ? 'an integer' : 'a number';
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) throw new InvalidArgumentError(`${name} must be ${kind}, got '${text}'`);
  if (min !== undefined && (above ? value <= min : value < min)) throw new InvalidArgumentError(`${name} must be ${kind} ${above ? '>' : '≥'} ${min}, got ${value}`);
  if (below !== undefined && value >= below) throw new InvalidArgumentError(`${name} must be ${kind} < ${below}, got ${value}`);
  return value;
};
const numberList = (name: string, bounds: Bounds = {}) => (text: string) => text.split(',').map((part) => number(name, bounds)(part.trim()));
const stackArgument = (text: string) => {
  if (text.trim() === '') throw new InvalidArgumentError("--stack is empty; write 'erm' for the stack without regularizers");
  return parseStackSpec(text);
};
const collect = <T>(parse: (text: string) => T) => (text: string, previous: T[] = []) => [...previous, parse(text)];
const asArgumentError = <T>(parse: (text: string) => T) => (text: string) => {
  try {
    return parse(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
};

/** Options shared by `train` and `compare`. */
function addCommonOptions(command: Command): Command {
  return command
    .addOption(new Option('--data <name>', 'data set').choices(DATASET_NAMES).default('fashion-mnist-embedded'))
    .option('--data-dir <dir>', 'folder of the official files (all but the embedded subset)')
    .option('--train-size <n>', 'keep this many training images (seeded subset)', number('--train-size', { integer: true, min: 1 }))
    .option('--test-size <n>', 'evaluate on the first n test images only (quick runs)', number('--test-size', { integer: true, min: 1 }))
    .addOption(new Option('--model <name>', 'architecture').choices(modelNames as string[]).default('small-cnn'))
    .option('--model-options <k=v,...>', 'model options, e.g. width=16 or dropout=0.3', asArgumentError((t) => parseOptions(t, '--model-options')), {})
    .option('--epochs <n>', 'epochs', number('--epochs', { integer: true, min: 1 }), 200)
    .option('--batch-size <n>', 'batch size', number('--batch-size', { integer: true, min: 1 }), 128)
    .option('--lr <x>', 'initial learning rate', number('--lr', { min: 0, above: true }), 0.1)
    .option('--milestones <e1,e2,...>', 'epochs where the learning rate is multiplied by 0.1 (default 50%, 75%, 90% of --epochs)', numberList('--milestones', { min: 0, above: true }))
    .option('--momentum <x>', 'Nesterov momentum', number('--momentum', { min: 0, below: 1 }), 0.9)
    .option('--weight-decay <x>', 'weight decay, added after clipping', number('--weight-decay', { min: 0 }), 5e-4)
    .option('--clip-norm <x>', 'global gradient-norm clip (0 disables)', number('--clip-norm', { min: 0 }), 1)
    .addOption(new Option('--augment <mode>', 'none = ERM, crop-flip = data augmentation, two-view = the reference base loss').choices(['none', 'crop-flip', 'two-view']).default('none'))
    .addOption(new Option('--validation <protocol>', "hold-out = 10% of the training set picks the best epoch, which is tested; none = train on all of it and test the final epoch (the reference script's protocol)").choices(['hold-out', 'none']).default('hold-out'))
    .addOption(new Option('--backend <name>', 'TF.js backend').choices([...BACKEND_NAMES]).default('wasm'))
    .option('--threads <n>', 'wasm in Node: threads per training job (n − 1 workers share each convolution\'s batch)', number('--threads', { integer: true, min: 1 }), 1)
    .option('--resume', 'continue the run in --out from its checkpoints (same spec; see the README for what may change); finished runs are read back', false)
    .option('--overwrite', 'start over in an --out that holds a run (deletes its checkpoints and results)', false);
}

interface CommonValues {
  data: DatasetName;
  dataDir?: string;
  trainSize?: number;
  testSize?: number;
  model: ModelName;
  modelOptions: Record<string, unknown>;
  epochs: number;
  batchSize: number;
  lr: number;
  milestones?: number[];
  momentum: number;
  weightDecay: number;
  clipNorm: number;
  augment: Recipe['augment'];
  validation: NonNullable<Recipe['validation']>;
  backend: BackendName;
  threads: number;
  resume: boolean;
  overwrite: boolean;
}

/** Options of `compare` for queued sweeps. */
interface QueueValues {
  queue?: string;
  name: string;
  wait: boolean;
  attempts: number;
}

function template(values: CommonValues): Omit<JobSpec, 'stack' | 'seed' | 'id' | 'directory'> {
  return {
    data: {
      name: values.data,
      ...(values.dataDir ? { directory: resolve(values.dataDir) } : {}),
      ...(values.trainSize !== undefined ? { trainSize: values.trainSize } : {}),
      ...(values.testSize !== undefined ? { testSize: values.testSize } : {}),
    },
    model: { name: values.model, options: values.modelOptions },
    recipe: {
      epochs: values.epochs,
      batchSize: values.batchSize,
      learningRate: values.lr,
      ...(values.milestones ? { milestones: values.milestones } : {}),
      momentum: values.momentum,
      weightDecay: values.weightDecay,
      clipNorm: values.clipNorm > 0 ? values.clipNorm : null,
      augment: values.augment,
      ...(values.validation === 'none' ? { validation: 'none' as const } : {}),
    },
    backend: values.backend,
    ...(values.threads > 1 ? { threads: values.threads } : {}),
    resume: values.resume,
    ...(values.overwrite ? { overwrite: true } : {}),
  };
}

/** Builds the `regstack` program (exported for tests). */
export function createProgram(): Command {
  const program = new Command('regstack')
    .description('Train and compare stacks of TF.js regularizers: RCAD, label smoothing, mixup, adversarial training, entropy minimisation, ME-ADA.')
    .showHelpAfterError();

  addCommonOptions(
    program
      .command('train')
      .description('train one model with a stack of regularizers; writes checkpoints, a JSON-lines log and result.json to --out')
      .option('--reg <name:k=v,...>', `a regularizer, repeatable: ${Object.keys(regularizerRegistry).join(', ')}`, collect(asArgumentError((t) => parseRegularizerSpec(t))), [])
      .option('--seed <n>', 'seed of initialisation, shuffling and every random draw', number('--seed', true), 0)
      .option('--out <dir>', 'output folder', 'runs/train'),
  ).action(async (values: CommonValues & { reg: RegularizerSpec[]; seed: number; out: string }) => {
    const stack: StackSpec = { label: values.reg.length ? values.reg.map((r) => r.name).join('+') : 'erm', regularizers: values.reg };
    const job: JobSpec = { ...template(values), stack, seed: values.seed, id: 'train', directory: resolve(values.out) };
    const result = await runJob(job);
    const { accuracy, nll, ece } = result.test;
    process.stderr.write(
      `${result.validation ? 'best' : 'final'} epoch ${result.bestEpoch}: test accuracy ${(100 * accuracy).toFixed(2)}%, NLL ${nll.toFixed(4)}, ECE ${ece.toFixed(4)}; ${result.secondsPerEpoch.toFixed(1)} s/epoch\n` +
        `result: ${join(job.directory, 'result.json')}\n`,
    );
  });

  addCommonOptions(
    program
      .command('compare')
      .description('train several stacks × seeds and write a table, learning curves, reliability diagrams and report.html')
      .option('--stack <reg+reg>', "a stack, repeatable: 'erm' or regularizers joined by + (e.g. 'rcad:alpha=1+label-smoothing:epsilon=0.6')", collect(asArgumentError(stackArgument)), [])
      .option('--seeds <s1,s2,...>', 'seeds', numberList('--seeds', { integer: true }), [0])
      .option('--workers <n>', 'parallel worker processes (one per core)', number('--workers', { integer: true, min: 1 }), 2)
      .option('--quick', 'the quick demonstration: embedded Fashion-MNIST subset, small CNN, 7 stacks, a few epochs (overrides data, model, recipe and stacks)', false)
      .option('--out <dir>', 'output folder', 'runs/compare')
      .option('--queue <url>', 'enqueue the runs on a Redis queue for `regstack worker`s instead of training here: redis://[user:password@]host:port/db or rediss://…')
      .option('--name <study>', 'with --queue: the study\'s name (enqueuing the same name again adds nothing)', 'default')
      .option('--wait', 'with --queue: show progress until the study ends, then write the table and report to --out', false)
      .option('--attempts <n>', 'with --queue: tries per run before it is marked failed', number('--attempts', { integer: true, min: 1 }), 2),
  ).action(async (values: CommonValues & QueueValues & { stack: StackSpec[]; seeds: number[]; workers: number; quick: boolean; out: string }, command: Command) => {
    if (values.quick) {
      Object.assign(values, {
        data: QUICK_PRESET.data,
        model: QUICK_PRESET.model,
        modelOptions: QUICK_PRESET.modelOptions,
        epochs: QUICK_PRESET.epochs,
        batchSize: QUICK_PRESET.batchSize,
        lr: QUICK_PRESET.learningRate,
        seeds: QUICK_PRESET.seeds,
      });
      if (values.stack.length === 0) values.stack = QUICK_PRESET.stacks.map((text) => parseStackSpec(text));
    }
    if (values.stack.length === 0) command.error('give at least one --stack (or --quick)');
    const directory = resolve(values.out);
    const note = values.quick
      ? `A quick demonstration: ${QUICK_PRESET.epochs} epochs of a small CNN on the 1,800 + 200 embedded Fashion-MNIST images, one seed. ` +
        'Differences of a point or two are noise at this size. For the full comparison run, e.g., ' +
        "`regstack compare --data cifar100-2k --data-dir DIR --model resnet18 --epochs 200 --batch-size 32 --augment crop-flip --seeds 0,1,2 --stack erm --stack label-smoothing:epsilon=0.6 --stack 'rcad+label-smoothing:epsilon=0.6' ...`."
      : `${values.seeds.length} seed(s) per stack.`;
    if (values.queue) {
      await compareOnQueue({
        queue: values.queue,
        study: values.name,
        wait: values.wait,
        attempts: values.attempts,
        stacks: values.stack,
        seeds: values.seeds,
        template: template(values),
        directory,
        title: values.quick ? 'regstack: quick comparison (demonstration)' : 'regstack comparison',
        note,
        command: ['regstack', ...process.argv.slice(2)].join(' ').replace(/(rediss?:\/\/[^:/@\s]*:)[^@\s]*@/, '$1***@'),
      });
      return;
    }
    const started = Date.now();
    const outcome = await compare({
      stacks: values.stack,
      seeds: values.seeds,
      workers: values.workers,
      template: template(values),
      directory,
      title: values.quick ? 'regstack: quick comparison (demonstration)' : 'regstack comparison',
      note,
      command: ['regstack', ...process.argv.slice(2)].join(' '),
      onJobEnd: (result, done, total) =>
        process.stderr.write(`[${done}/${total}] ${result.stack} seed ${result.seed}: test accuracy ${(100 * result.test.accuracy).toFixed(2)}% (${result.history.length} epochs, ${result.secondsPerEpoch.toFixed(1)} s/epoch)\n`),
      onJobFailed: (failure, done, total) => process.stderr.write(`[${done}/${total}] ${failure.stack} seed ${failure.seed}: failed: ${failure.message}\n`),
    });
    const table = new Table({ head: SUMMARY_HEADERS, style: { head: [], border: [] } });
    for (const row of outcome.rows) table.push(formatRow(row));
    process.stdout.write(`${table.toString()}\n`);
    process.stdout.write(`${note}\n`);
    process.stdout.write(`report: ${outcome.report}\nplots: ${outcome.images.learningCurves}.png, ${outcome.images.reliability}.png\n`);
    process.stdout.write(`total time: ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    if (outcome.failures.length > 0) {
      process.stderr.write(
        `regstack: ${outcome.failures.length} of ${outcome.failures.length + outcome.results.length} jobs failed (the table has the others): ` +
          `${outcome.failures.map((f) => `${f.stack} seed ${f.seed}: ${f.message}`).join(' | ')}\n`,
      );
      process.exitCode = EXIT_CODES.jobsFailed;
    }
  });

  program
    .command('list')
    .description('list the regularizers, models, data sets and backends')
    .action(() => {
      const lines = [
        'regularizers (--reg / --stack):',
        ...Object.entries(regularizerRegistry).map(([name, entry]) => `  ${name.padEnd(16)} ${entry.summary}`),
        `models (--model): ${modelNames.join(', ')}`,
        `data sets (--data): ${DATASET_NAMES.join(', ')}`,
        'backends (--backend):',
        ...listBackends().map((b) => `  ${b.name.padEnd(11)} ${b.summary}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  addQueueCommands(program);

  program
    .command('run-job', { hidden: true })
    .argument('<job>', 'the job as JSON text, or a job.json file')
    .action(async (job: string) => {
      // A worker of `compare`: if that process dies (even by SIGKILL) the channel closes; stop too.
      // The listener holds the channel open (Node refs it), so it goes when the job ends.
      const orphaned = () => exitOnSignal('SIGTERM');
      if (process.send) process.once('disconnect', orphaned);
      try {
        await runJob(JSON.parse(job.trimStart().startsWith('{') ? job : await readFile(job, 'utf8')) as JobSpec);
      } finally {
        process.off('disconnect', orphaned);
      }
    });

  // train, compare and their workers stop on SIGINT/SIGTERM ending workers and freeing run
  // folders; the queue's commands handle these signals themselves (a worker requeues its jobs).
  program.hook('preAction', (_program, action) => {
    if (!['train', 'compare', 'run-job'].includes(action.name())) return;
    process.once('SIGINT', exitOnSignal);
    process.once('SIGTERM', exitOnSignal);
  });

  // Usage errors are thrown, not exited on, so that `main` gives them their exit code.
  const throwUsageErrors = (command: Command) => {
    command.exitOverride();
    command.commands.forEach(throwUsageErrors);
  };
  throwUsageErrors(program);
  return program;
}

/** Exit codes of the `regstack` command (documented in the README). */
export const EXIT_CODES = {
  success: 0,
  /** An unexpected error: a bug (the stack trace is printed). */
  internal: 1,
  /** Bad arguments or options (usage, ConfigError). */
  usage: 2,
  /** Bad data or a damaged checkpoint (DataError). */
  data: 3,
  /** Training diverged (DivergenceError). */
  divergence: 4,
  /** A file or folder could not be created, read or written. */
  fileSystem: 5,
  /** The run folder is in use, holds a run (without --resume/--overwrite), or holds another run than --resume asks for. */
  runFolder: 6,
  /** `compare`: some jobs failed (the others are reported), or all did. */
  jobsFailed: 7,
  /** Stopped by SIGINT (128 + 2). */
  interrupted: 130,
  /** Stopped by SIGTERM (128 + 15). */
  terminated: 143,
} as const;

/** The exit code of a typed error. */
export function exitCodeOf(error: RegstackError): number {
  // isInstance, not instanceof: errors thrown by another copy of a regstack package count too.
  if (DivergenceError.isInstance(error)) return EXIT_CODES.divergence;
  if (DataError.isInstance(error)) return EXIT_CODES.data;
  if (FileSystemError.isInstance(error)) return EXIT_CODES.fileSystem;
  if (RunFolderError.isInstance(error)) return EXIT_CODES.runFolder;
  if (JobsFailedError.isInstance(error)) return EXIT_CODES.jobsFailed;
  if (ConfigError.isInstance(error)) return EXIT_CODES.usage;
  return EXIT_CODES.usage;
}

/** Ends worker processes and frees run folders, then exits with 128 + the signal's number. */
function exitOnSignal(signal: NodeJS.Signals): void {
  stopWorkers('SIGTERM');
  releaseAllLocks();
  process.stderr.write(`regstack: stopped by ${signal}; rerun with --resume to continue\n`);
  process.exit(signal === 'SIGINT' ? EXIT_CODES.interrupted : EXIT_CODES.terminated);
}

/**
 * Runs the program. Typed errors and file-system errors print as one line (`regstack: <path or
 * field>: <reason>`) with their exit code (see {@link EXIT_CODES}); during `train` and `compare`,
 * SIGINT and SIGTERM end the worker processes and free the run folders' locks.
 */
export async function main(argv = process.argv): Promise<void> {
  try {
    await createProgram().parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // commander printed the message (and the help) already.
      process.exitCode = error.exitCode === 0 ? 0 : EXIT_CODES.usage;
      return;
    }
    const typed = RegstackError.isInstance(error) ? error : isFileSystemError(error) ? asFileSystemError(error) : null;
    if (typed) {
      // One line: the message and its causes (a file read's error, say).
      process.stderr.write(`regstack: ${describeError(typed).replace(/\s*\n\s*/g, ' ')}\n`);
      process.exitCode = exitCodeOf(typed);
      return;
    }
    throw error;
  } finally {
    process.off('SIGINT', exitOnSignal);
    process.off('SIGTERM', exitOnSignal);
  }
}

const invokedDirectly = process.argv[1] && /(?:^|[\\/])(?:cli\.[cm]?[jt]s|regstack)$/.test(process.argv[1]);
if (invokedDirectly) await main();
