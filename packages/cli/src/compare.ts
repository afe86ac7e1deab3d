import { fork } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, composeRegularizers } from '@regstack/regularizer';
import { runJob, type JobResult, type JobSpec } from './job.js';
import { learningCurveSpec, reliabilitySpec, renderChart } from './plots.js';
import { writeReport } from './report.js';
import { createRegularizers } from './registry.js';
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
}

/** What `compare` returns. */
export interface CompareResult {
  rows: SummaryRow[];
  results: JobResult[];
  report: string;
  images: { learningCurves: string; reliability: string };
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

function runInWorker(script: string, spec: JobSpec): Promise<JobResult> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(join(spec.directory, 'log.jsonl'), { flags: 'a' });
    const child = fork(script, ['run-job', join(spec.directory, 'job.json')], { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let errorText = '';
    child.stdout!.pipe(log);
    child.stderr!.on('data', (chunk: Buffer) => {
      errorText += chunk.toString();
      log.write(chunk);
    });
    child.on('error', reject);
    child.on('exit', async (code) => {
      log.end();
      if (code !== 0) {
        reject(new Error(`job ${spec.id} failed (exit ${code}): ${errorText.trim().split('\n').slice(-3).join(' | ')}`));
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

/**
 * Runs every job (resumable: finished jobs are read back, interrupted ones continue from their
 * checkpoint when `template.resume` is set), then writes the table, plots and report.
 */
export async function compare(options: CompareOptions): Promise<CompareResult> {
  if (options.stacks.length === 0) throw new ConfigError('--stack', 'give at least one stack');
  if (options.seeds.length === 0) throw new ConfigError('--seeds', 'give at least one seed');
  const labels = options.stacks.map((stack) => stack.label);
  if (new Set(labels).size !== labels.length) throw new ConfigError('--stack', 'the same stack is given twice');
  for (const stack of options.stacks) checkStack(stack); // every stack's errors before any job starts
  await mkdir(join(options.directory, 'runs'), { recursive: true });
  // Seed-major order: every stack's first seed finishes before any second seed starts, so a
  // comparison cut short still compares all stacks.
  const jobs: JobSpec[] = options.seeds.flatMap((seed) =>
    options.stacks.map((stack) => {
      const id = `${slug(stack.label)}__seed${seed}`;
      return { ...options.template, stack, seed, id, directory: join(options.directory, 'runs', id) };
    }),
  );
  for (const job of jobs) {
    await mkdir(job.directory, { recursive: true });
    await writeFile(join(job.directory, 'job.json'), JSON.stringify(job, null, 2));
  }
  const script = options.workers > 1 ? workerScript() : null;
  const results: JobResult[] = new Array(jobs.length);
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const index = next++;
      const job = jobs[index]!;
      const finishedBefore = job.resume && existsSync(join(job.directory, 'result.json'));
      results[index] = script ? await runInWorker(script, job) : await runJob(job, { quiet: true });
      done++;
      options.onJobEnd?.(results[index]!, done, jobs.length);
      if (finishedBefore) continue; // read back, already in results.jsonl
      // One line per finished run, appended as it finishes: a partial comparison is never lost.
      const { history: _, validation, test, ...summary } = results[index]!;
      const brief = (m: typeof test) => ({ accuracy: m.accuracy, nll: m.nll, ece: m.ece, count: m.count });
      await appendFile(join(options.directory, 'results.jsonl'), JSON.stringify({ ...summary, ...(validation ? { validation: brief(validation) } : {}), test: brief(test) }) + '\n');
    }
  };
  await Promise.all(Array.from({ length: Math.min(script ? options.workers : 1, jobs.length) }, worker));
  const written = await writeComparison({ ...options, results, labels, jobs });
  return { ...written, results };
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
}): Promise<Omit<CompareResult, 'results'>> {
  const { results, labels } = options;
  await mkdir(options.directory, { recursive: true });
  await writeFile(join(options.directory, 'results.json'), JSON.stringify(results, null, 1));
  const rows = summarize(results, labels);
  const images = { learningCurves: join(options.directory, 'learning-curves'), reliability: join(options.directory, 'reliability') };
  await renderChart(learningCurveSpec(results), images.learningCurves);
  await renderChart(reliabilitySpec(results), images.reliability);
  const report = await writeReport({ ...options, rows, results, jobs: options.jobs, images });
  return { rows, report, images };
}
