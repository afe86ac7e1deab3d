import { resolve } from 'node:path';
import { Queue } from 'bullmq';
import Table from 'cli-table3';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { writeComparison, type FailedRun } from '../compare.js';
import type { JobSpec } from '../job.js';
import type { StackSpec } from '../spec.js';
import { SUMMARY_HEADERS, formatRow, type SummaryRow } from '../summary.js';
import { assertReachable, parseQueueUrl, reconnectingClient } from './connection.js';
import { checkStudyName } from './job-data.js';
import { KEY_PREFIX, QUEUE_NAME, collectStudy, enqueueStudy, formatStatus, studyStatus } from './study.js';
import { runChild, runWorker } from './worker.js';

const positiveInteger = (name: string) => (text: string) => {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 1) throw new InvalidArgumentError(`${name} must be a positive integer`);
  return value;
};

/** Opens the queue after checking that Redis answers (a typed error within seconds otherwise). */
async function openQueue(url: string) {
  const location = parseQueueUrl(url);
  await assertReachable(location);
  const redis = reconnectingClient(location);
  redis.on('error', () => {}); // reconnects; commands wait for it
  const queue = new Queue(QUEUE_NAME, { connection: redis, prefix: KEY_PREFIX });
  queue.on('error', () => {});
  const close = async () => {
    await queue.close();
    await redis.quit().catch(() => redis.disconnect());
  };
  return { location, redis, queue, close };
}

/** Prints the table, failures and where the report is. */
function printComparison(rows: readonly SummaryRow[], failed: readonly FailedRun[], report: string, note: string): void {
  const table = new Table({ head: SUMMARY_HEADERS, style: { head: [], border: [] } });
  for (const row of rows) table.push(formatRow(row));
  process.stdout.write(`${table.toString()}\n${note}\n`);
  for (const run of failed) process.stdout.write(`failed: ${run.stack} seed ${run.seed}: ${run.reason}\n`);
  process.stdout.write(`report: ${report}\n`);
}

/** Collects what has finished and writes the table, plots and report to `directory`. */
async function writeStudyReport(queue: Queue, redis: Parameters<typeof collectStudy>[1], study: string, directory: string) {
  const collected = await collectStudy(queue, redis, study);
  const { info, status } = collected;
  const pending = status.waiting + status.active.length;
  const note = `${info.note} Study '${study}': ${status.completed} of ${status.total} runs completed, ${status.failed} failed${pending ? `, ${pending} not finished yet (a partial report)` : ''}.`;
  const written = await writeComparison({
    results: collected.results,
    labels: info.stacks,
    jobs: collected.jobs,
    directory,
    title: info.title,
    note,
    command: info.command,
    failed: collected.failed,
  });
  printComparison(written.rows, collected.failed, written.report, note);
  return collected;
}

/** `regstack compare --queue`: enqueues the study, and with `--wait` watches it and writes the report. */
export async function compareOnQueue(options: {
  queue: string;
  study: string;
  wait: boolean;
  attempts: number;
  stacks: StackSpec[];
  seeds: number[];
  template: Pick<JobSpec, 'data' | 'model' | 'recipe' | 'backend'>;
  directory: string;
  title: string;
  note: string;
  command: string;
  /** Seconds between progress polls with `wait`. Default 2. */
  pollSeconds?: number;
}): Promise<void> {
  const study = checkStudyName(options.study);
  const { location, redis, queue, close } = await openQueue(options.queue);
  try {
    if (options.template.data.directory) {
      process.stderr.write('note: --data-dir is not sent to workers; each worker reads data from its own --data-dir\n');
    }
    const { added, existing } = await enqueueStudy(queue, redis, { ...options, study });
    process.stderr.write(`study '${study}' on ${location.display}: ${added} jobs enqueued${existing ? `, ${existing} already there` : ''}\n`);
    if (!options.wait) {
      process.stderr.write(`start workers with: regstack worker --queue ${location.display}\ncollect results with: regstack report --queue ${location.display} --name ${study}\n`);
      return;
    }
    let last = '';
    for (;;) {
      const status = await studyStatus(queue, study);
      const line = formatStatus(status);
      if (line !== last) process.stderr.write(`${line}\n`);
      last = line;
      if (status.waiting === 0 && status.active.length === 0) break;
      await new Promise((done) => setTimeout(done, (options.pollSeconds ?? 2) * 1000));
    }
    await writeStudyReport(queue, redis, study, options.directory);
  } finally {
    await close();
  }
}

/** Adds `worker`, `report` and the hidden `queue-job` to the program. */
export function addQueueCommands(program: Command): void {
  program
    .command('worker')
    .description('take training jobs from a Redis queue (enqueued by compare --queue) until SIGTERM/SIGINT')
    .requiredOption('--queue <url>', 'redis://[user:password@]host:port/db or rediss://… (TLS)')
    .option('--concurrency <n>', 'jobs trained at once, each in its own process', positiveInteger('--concurrency'), 1)
    .option('--threads <n>', "wasm in Node: threads per job", positiveInteger('--threads'), 1)
    .option('--artifacts <dir>', 'keep checkpoints in this folder (a mount every worker shares) instead of Redis')
    .option('--work-dir <dir>', "this worker's folder for each job's files", 'regstack-worker')
    .option('--data-dir <dir>', "this worker's folder of the data sets' official files")
    .option('--lock-duration <ms>', "how long a dead worker's job stays locked before another worker takes it", positiveInteger('--lock-duration'), 30_000)
    .option('--stalled-interval <ms>', 'how often to look for jobs of dead workers', positiveInteger('--stalled-interval'), 30_000)
    .action(async (values: { queue: string; concurrency: number; threads: number; artifacts?: string; workDir: string; dataDir?: string; lockDuration: number; stalledInterval: number }) => {
      await runWorker({
        queue: values.queue,
        concurrency: values.concurrency,
        threads: values.threads,
        workDirectory: values.workDir,
        lockDuration: values.lockDuration,
        stalledInterval: values.stalledInterval,
        ...(values.artifacts ? { artifacts: values.artifacts } : {}),
        ...(values.dataDir ? { dataDirectory: values.dataDir } : {}),
      });
    });

  program
    .command('report')
    .description("write the table and report of a queued study from what has finished so far")
    .requiredOption('--queue <url>', 'redis://[user:password@]host:port/db or rediss://…')
    .requiredOption('--name <study>', 'the study (compare --name)')
    .option('--out <dir>', 'output folder (default runs/<study>)')
    .action(async (values: { queue: string; name: string; out?: string }) => {
      const study = checkStudyName(values.name);
      const { queue, redis, close } = await openQueue(values.queue);
      try {
        await writeStudyReport(queue, redis, study, resolve(values.out ?? `runs/${study}`));
      } finally {
        await close();
      }
    });

  program.command('queue-job', { hidden: true }).action(async () => {
    await runChild();
  });
}
