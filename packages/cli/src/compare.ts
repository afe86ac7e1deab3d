import { fork, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, RegstackError, composeRegularizers } from '@regstack/regularizer';
import { planRun, readRunFolder, runJob, type JobResult, type JobSpec } from './job.js';
import { learningCurveSpec, reliabilitySpec, renderChart } from './plots.js';
import { writeReport } from './report.js';
import { createRegularizers } from './registry.js';
import { RunFolderError, lockFolder, prepareFolder, writeFileAtomically } from './run-folder.js';
import type { StackSpec } from './spec.js';
import { summarize, type SummaryRow } from './summary.js';

/** A comparison: every stack × every seed on one data set, model and recipe. */
export interface CompareOptions {
  stacks: StackSpec[];
  seeds: number[];
  /** Parallel worker processes (each runs whole jobs, single-threaded on wasm). */
  workers: number;
  /** The job every run is made from; `stack`, `seed`, `id` and `directory` are filled in. */
  template: Omit<JobSpec, 'stack' | 'seed' | 'id' | 'directory'>;
  directory: string;
  title: string;
  note: string;
  /** The command line, for the report. */
  command: string;
  /** Called when a job finishes. */
  onJobEnd?: (result: JobResult, done: number, total: number) => void;
  /** Called when a job fails; the others go on. */
  onJobFailed?: (failure: JobFailure, done: number, total: number) => void;
}

/** A job that failed (diverged, bad data, a crash): reported, while the other jobs go on. */
export interface JobFailure {
  id: string;
  stack: string;
  seed: number;
  /** One line: why. */
  message: string;
  /** The worker's exit code, when it ran in a worker process. */
  exitCode?: number;
}

/** What `compare` returns. */
export interface CompareResult {
  rows: SummaryRow[];
  results: JobResult[];
  /** Jobs that failed; their stacks are missing from `rows` unless another seed finished. */
  failures: JobFailure[];
  report: string;
  images: { learningCurves: string; reliability: string };
}

/** Every job of a comparison failed (exit code 7). */
export class JobsFailedError extends RegstackError {
  static override readonly kind: string = 'JobsFailedError';
}

const slug = (text: string) => text.replace(/[^a-zA-Z0-9.=-]+/g, '_').slice(0, 80);

/**
 * Builds and composes a stack as its jobs will, so that one that cannot run (an unknown option, mix
 * weights adding up to more than 1) fails before the comparison trains the others for hours.
 */
export function checkStack(stack: StackSpec): void {
  const plugins = createRegularizers(stack.regularizers); // errors name the option, e.g. rcad.alpha
  try {
    composeRegularizers(plugins);
  } catch (error) {
    if (error instanceof ConfigError) throw new ConfigError('--stack', `'${stack.label}' cannot be composed: ${error.message}`);
    throw error;
  }
}

/** The built command line that worker processes run; absent when running from sources. */
function workerScript(): string | null {
  const candidate = fileURLToPath(new URL('./cli.js', import.meta.url));
  return existsSync(candidate) ? candidate : null;
}

/** Worker processes now running, so that a signal to `compare` ends them too. */
const workers = new Set<ChildProcess>();

/** Sends `signal` to every worker process of this process's comparisons. */
export function stopWorkers(signal: NodeJS.Signals = 'SIGTERM'): void {
  for (const child of workers) child.kill(signal);
}

/** A job's failure in one line: the worker's last line (its `regstack: ...` error) or the error's message. */
class WorkerFailure extends Error {
  constructor(message: string, readonly exitCode: number | null) {
    super(message);
  }
}

function runInWorker(script: string, spec: JobSpec): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(join(spec.directory, 'log.jsonl'), { flags: 'a' });
    // The spec travels as an argument: job.json is written by the job itself once it is checked.
    const child = fork(script, ['run-job', JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    workers.add(child);
    let errorText = '';
    child.stdout!.pipe(log);
    child.stderr!.on('data', (chunk: Buffer) => {
      errorText += chunk.toString();
      log.write(chunk);
    });
    child.on('error', (error) => {
      workers.delete(child);
      reject(error);
    });
    child.on('exit', async (code, signal) => {
      workers.delete(child);
      log.end();
      if (code !== 0) {
        const last = errorText.trim().split('\n').filter(Boolean).at(-1)?.replace(/^regstack: /, '') ?? '';
        reject(new WorkerFailure(last || `the worker ended with ${signal ?? `exit code ${code}`}`, code));
        return;
      }
      try {
        resolve(JSON.parse(await readFile(join(spec.directory, 'result.json'), 'utf8')) as JobResult);
      } catch (error) {
        reject(error);
      }
    });
  });
}

const brief = (metrics: JobResult['test']) => ({ accuracy: metrics.accuracy, nll: metrics.nll, ece: metrics.ece, count: metrics.count });

/** The line `results.jsonl` holds for a finished run. */
function resultLine(result: JobResult): string {
  const { history: _, validation, test, ...summary } = result;
  return JSON.stringify({ ...summary, ...(validation ? { validation: brief(validation) } : {}), test: brief(test) });
}

/**
 * Reads the ids `results.jsonl` already holds, dropping a last line cut short by a kill (and
 * duplicates), and rewrites the file if it had either.
 */
async function readResultLines(path: string): Promise<Set<string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw error;
  }
  const ids = new Set<string>();
  const kept: string[] = [];
  for (const line of text.split('\n').filter((line) => line.trim() !== '')) {
    try {
      const id = (JSON.parse(line) as { id?: unknown }).id;
      if (typeof id === 'string' && !ids.has(id)) {
        ids.add(id);
        kept.push(line);
      }
    } catch {
      // a line cut short by a kill: its run is read back from result.json and appended again
    }
  }
  const rewritten = kept.map((line) => `${line}\n`).join('');
  if (rewritten !== text) await writeFileAtomically(path, rewritten);
  return ids;
}

/**
 * Runs every job, then writes the table, plots and report. The folder is this process's alone
 * while it runs (a lock). Without `template.resume`, a folder that holds results is refused
 * unless `template.overwrite` is set (which deletes them first); with it, finished jobs are read
 * back and interrupted ones continue from their checkpoint, and every job's spec must equal the
 * one its folder records. A job that fails is reported (`onJobFailed`, `failures`) while the
 * others go on; if all fail, a JobsFailedError.
 */
export async function compare(options: CompareOptions): Promise<CompareResult> {
  if (options.stacks.length === 0) throw new ConfigError('--stack', 'give at least one stack');
  if (options.seeds.length === 0) throw new ConfigError('--seeds', 'give at least one seed');
  if (!Number.isInteger(options.workers) || options.workers < 1) throw new ConfigError('--workers', `must be an integer ≥ 1, got ${options.workers}`);
  const labels = options.stacks.map((stack) => stack.label);
  if (new Set(labels).size !== labels.length) throw new ConfigError('--stack', 'the same stack is given twice');
  for (const stack of options.stacks) checkStack(stack); // every stack's errors before any job starts
  // Seed-major order: every stack's first seed finishes before any second seed starts, so a
  // comparison cut short still compares all stacks.
  const jobs: JobSpec[] = options.seeds.flatMap((seed) =>
    options.stacks.map((stack) => {
      const id = `${slug(stack.label)}__seed${seed}`;
      return { ...options.template, stack, seed, id, directory: join(options.directory, 'runs', id) };
    }),
  );
  const resultsPath = join(options.directory, 'results.jsonl');
  const { resume, overwrite } = options.template;
  if (resume && overwrite) throw new ConfigError('--overwrite', 'cannot be combined with --resume');
  await prepareFolder(options.directory);
  const lock = lockFolder(options.directory, options.command);
  try {
    // Every job's folder is checked before the first starts: a refused resume fails now, not hours in.
    const problems: string[] = [];
    for (const job of jobs) {
      try {
        planRun({ ...job, overwrite: false }, await readRunFolder(job.directory));
      } catch (error) {
        if (!(error instanceof RunFolderError)) throw error;
        problems.push(error.message);
      }
    }
    const hasResults = existsSync(resultsPath);
    if (!resume && !overwrite && (hasResults || problems.length > 0)) {
      throw new RunFolderError(options.directory, 'holds results of an earlier comparison: add --resume to continue it, or --overwrite to start over');
    }
    if (resume && problems.length > 0) throw new RunFolderError(options.directory, `cannot be resumed as asked: ${problems.join(' | ')}`);
    if (overwrite) {
      for (const name of ['results.jsonl', 'results.json']) await rm(join(options.directory, name), { force: true });
      for (const job of jobs) {
        for (const name of ['result.json', 'job.json', 'log.jsonl', 'checkpoint']) await rm(join(job.directory, name), { recursive: true, force: true });
      }
    }
    const recorded = resume ? await readResultLines(resultsPath) : new Set<string>();
    await prepareFolder(join(options.directory, 'runs'));
    const script = options.workers > 1 ? workerScript() : null;
    const results: Array<JobResult | undefined> = new Array(jobs.length);
    const failures: JobFailure[] = [];
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < jobs.length) {
        const index = next++;
        const job = { ...jobs[index]!, overwrite: false };
        let result: JobResult;
        try {
          if (script) {
            await prepareFolder(job.directory); // for its log, which this process writes
            result = await runInWorker(script, job);
          } else {
            result = await runJob(job, { quiet: true });
          }
        } catch (error) {
          if (!RegstackError.isInstance(error) && !(error instanceof WorkerFailure)) throw error;
          const failure: JobFailure = {
            id: job.id, stack: job.stack.label, seed: job.seed, message: error.message,
            ...(error instanceof WorkerFailure && error.exitCode !== null ? { exitCode: error.exitCode } : {}),
          };
          failures.push(failure);
          done++;
          options.onJobFailed?.(failure, done, jobs.length);
          continue;
        }
        results[index] = result;
        done++;
        options.onJobEnd?.(result, done, jobs.length);
        // One line per finished run, appended as it finishes (a partial comparison is never lost);
        // a run read back whose line a kill lost is appended now.
        if (!recorded.has(job.id)) {
          await appendFile(resultsPath, `${resultLine(result)}\n`);
          recorded.add(job.id);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(script ? options.workers : 1, jobs.length) }, worker));
    const finished = results.filter((result): result is JobResult => result !== undefined);
    if (finished.length === 0) {
      throw new JobsFailedError(options.directory, `every job failed: ${failures.map((f) => `${f.stack} seed ${f.seed}: ${f.message}`).join(' | ')}`);
    }
    const failed = failures.map((failure) => ({ stack: failure.stack, seed: failure.seed, reason: failure.message }));
    const written = await writeComparison({ ...options, results: finished, labels, jobs, failed });
    return { ...written, results: finished, failures };
  } finally {
    lock.release();
  }
}

/** A run that ended without a result (queued sweeps): listed in the table's output and the report. */
export interface FailedRun {
  stack: string;
  seed: number;
  reason: string;
}

/**
 * Writes `results.json`, the plots and `report.html` of finished runs (stacks in `labels` order):
 * the end of a local `compare`, and what `regstack report --queue` writes from a queue's results.
 */
export async function writeComparison(options: {
  results: JobResult[];
  labels: readonly string[];
  jobs: readonly JobSpec[];
  directory: string;
  title: string;
  note: string;
  command: string;
  failed?: readonly FailedRun[];
}): Promise<Omit<CompareResult, 'results' | 'failures'>> {
  const { results, labels } = options;
  await prepareFolder(options.directory);
  await writeFile(join(options.directory, 'results.json'), JSON.stringify(results, null, 1));
  const rows = summarize(results, labels);
  const images = { learningCurves: join(options.directory, 'learning-curves'), reliability: join(options.directory, 'reliability') };
  await renderChart(learningCurveSpec(results), images.learningCurves);
  await renderChart(reliabilitySpec(results), images.reliability);
  const report = await writeReport({ ...options, rows, results, jobs: options.jobs, images });
  return { rows, report, images };
}
