import { fork, type ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import { join, resolve } from 'node:path';
import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import { ConfigError, RegstackError } from '@regstack/regularizer';
import type { JobResult, JobSpec } from '../job.js';
import { assertReachable, parseQueueUrl, reconnectingClient } from './connection.js';
import { jobSpecFor, validateQueuedJob, type QueuedJobData } from './job-data.js';
import { KEY_PREFIX, QUEUE_NAME, checkpointKey, lockKey, type JobProgress } from './study.js';

/** Options of {@link runWorker}. */
export interface WorkerOptions {
  /** `redis://…` or `rediss://…`. */
  queue: string;
  /** Jobs trained at once, each in its own process. Default 1. */
  concurrency?: number;
  /** wasm in Node: threads per job. Default 1. */
  threads?: number;
  /** Keep checkpoints in this folder (a shared mount) instead of Redis. */
  artifacts?: string;
  /** This worker's own folder: each job's log, job.json and result.json. */
  workDirectory: string;
  /** This worker's folder of official data files (data sets other than the embedded one). */
  dataDirectory?: string;
  /** How long a job stays locked by a worker that stopped answering, in ms. Default 30 s (BullMQ's). */
  lockDuration?: number;
  /** How often workers look for such jobs, in ms. Default 30 s (BullMQ's). */
  stalledInterval?: number;
  /** Times a job may be taken back from dead workers before it is failed. Default 5. */
  maxStalledCount?: number;
  /** Where progress lines (JSON) go. Default stdout. */
  log?: (event: Record<string, unknown>) => void;
  /** The command that runs one job in a child process: `[script, ...args]` run with this Node. Default this program's `queue-job`. */
  childCommand?: string[];
}

/** What a training process tells its worker. */
type ChildMessage =
  | { type: 'epoch'; epoch: number; epochs: number; validationAccuracy: number | null }
  | { type: 'result'; result: JobResult }
  | { type: 'error'; name: string; field?: string; message: string };

/** What a worker tells its training process. */
export interface ChildStart {
  spec: JobSpec;
  checkpoints: { kind: 'redis'; queue: string; key: string; lockKey: string; token: string } | { kind: 'directory'; path: string };
}

/**
 * Takes jobs from the queue until SIGTERM or SIGINT, training each in a child process (killable at
 * any moment: checkpoints are replaced atomically, so the last one is always whole). Progress goes
 * to the job (`job.progress.epoch`), results to Redis (the job's return value), checkpoints to
 * Redis (latest per job) or to `artifacts`. On SIGTERM/SIGINT the training processes stop at once
 * and their jobs go back to the queue, to resume from their last checkpoint on any worker.
 * Resolves when the worker has stopped.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const location = parseQueueUrl(options.queue);
  const concurrency = options.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) throw new ConfigError('--concurrency', `expected a positive integer, got ${concurrency}`);
  await assertReachable(location);
  const name = `${hostname()}-${process.pid}`;
  const log = options.log ?? ((event) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), worker: name, ...event })}\n`));
  const workDirectory = resolve(options.workDirectory);
  const artifacts = options.artifacts ? resolve(options.artifacts) : undefined;
  const children = new Set<ChildProcess>();
  const childOfJob = new Map<string, ChildProcess>();
  let stopping = false;

  const connection = reconnectingClient(location);
  connection.on('error', (error) => log({ event: 'redis-error', message: error.message }));
  // Redis going away and coming back (a restart): logged once each, the reconnection is ioredis's.
  let lost = false;
  connection.on('close', () => {
    if (lost || stopping) return;
    lost = true;
    log({ event: 'redis-lost' });
  });
  connection.on('ready', () => {
    if (!lost) return;
    lost = false;
    log({ event: 'redis-reconnected' });
  });

  const processor = async (job: Job, token?: string): Promise<JobResult> => {
    let data: QueuedJobData;
    try {
      data = validateQueuedJob(job.data);
    } catch (error) {
      // Data that do not pass the checks never will: no retries.
      throw new UnrecoverableError(`invalid job data: ${(error as Error).message}`);
    }
    const id = job.id!;
    const spec = jobSpecFor(data, { directory: join(workDirectory, data.study, data.run), ...(options.dataDirectory ? { dataDirectory: resolve(options.dataDirectory) } : {}), ...(options.threads ? { threads: options.threads } : {}) });
    const start: ChildStart = {
      spec,
      checkpoints: artifacts
        ? { kind: 'directory', path: join(artifacts, data.study, data.run) }
        : { kind: 'redis', queue: options.queue, key: checkpointKey(id), lockKey: lockKey(id), token: token! },
    };
    log({ event: 'started', job: id, attempt: job.attemptsStarted });
    const outcome = await trainInChild(start, options.childCommand, children, (child) => childOfJob.set(id, child), async (message) => {
      const progress: JobProgress = { epoch: message.epoch, epochs: message.epochs, worker: name };
      await job.updateProgress(progress as unknown as object).catch(() => {}); // progress is best effort (Redis may be restarting)
      log({ event: 'epoch', job: id, epoch: message.epoch, epochs: message.epochs, validationAccuracy: message.validationAccuracy });
    });
    childOfJob.delete(id);
    if (outcome.kind === 'result') return outcome.result;
    if (stopping) {
      // Stopped by SIGTERM/SIGINT: back to the queue at once, not after its lock expires.
      await job.moveToWait(token);
      log({ event: 'returned', job: id });
      throw new WaitingError();
    }
    if (outcome.kind === 'error' && (outcome.name === 'ConfigError' || outcome.name === 'DataError')) {
      throw new UnrecoverableError(outcome.message); // wrong options or data fail the same way every time
    }
    throw new Error(outcome.message);
  };

  const worker = new Worker(QUEUE_NAME, processor, {
    connection,
    prefix: KEY_PREFIX,
    concurrency,
    lockDuration: options.lockDuration ?? 30_000,
    stalledInterval: options.stalledInterval ?? 30_000,
    maxStalledCount: options.maxStalledCount ?? 5,
    autorun: false,
  });
  worker.on('error', (error) => log({ event: 'worker-error', message: error.message }));
  worker.on('lockRenewalFailed', (jobIds: string[]) => {
    // Another worker may already have the job: stop training it here (its checkpoints would be refused anyway).
    for (const jobId of jobIds) {
      log({ event: 'lock-lost', job: jobId });
      childOfJob.get(jobId)?.kill('SIGKILL');
    }
  });
  worker.on('completed', (job) => {
    log({ event: 'completed', job: job.id });
    // The result is in Redis now; the checkpoint is no longer needed.
    if (!artifacts) connection.del(checkpointKey(job.id!)).catch(() => {});
  });
  worker.on('failed', (job, error) => {
    if (job && !(error instanceof WaitingError)) log({ event: 'failed', job: job.id, attempt: job.attemptsMade, message: error.message });
  });

  const stopped = new Promise<void>((resolveStop) => {
    const stop = async (signal: NodeJS.Signals) => {
      if (stopping) {
        process.exit(130); // a second Ctrl-C: now
      }
      stopping = true;
      log({ event: 'stopping', signal, jobs: children.size });
      for (const child of children) child.kill('SIGKILL');
      await worker.close();
      await connection.quit().catch(() => connection.disconnect());
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolveStop();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
  log({ event: 'ready', queue: location.display, concurrency, checkpoints: artifacts ?? 'redis' });
  void worker.run().catch((error) => log({ event: 'worker-error', message: (error as Error).message }));
  await stopped;
  log({ event: 'stopped' });
}

type ChildOutcome = { kind: 'result'; result: JobResult } | { kind: 'error'; name: string; message: string } | { kind: 'killed'; message: string };

/** Runs one job in a child process; resolves with its result, its typed error, or how it died. */
function trainInChild(
  start: ChildStart,
  command: string[] | undefined,
  children: Set<ChildProcess>,
  onStart: (child: ChildProcess) => void,
  onEpoch: (message: Extract<ChildMessage, { type: 'epoch' }>) => Promise<void>,
): Promise<ChildOutcome> {
  const [script, ...args] = command ?? [process.argv[1]!, 'queue-job'];
  return new Promise((resolveOutcome) => {
    const child = fork(script!, args, { execArgv: process.execArgv, stdio: ['ignore', 'ignore', 'pipe', 'ipc'], serialization: 'advanced' });
    children.add(child);
    onStart(child);
    let outcome: ChildOutcome | null = null;
    let errorText = '';
    child.stderr!.on('data', (chunk: Buffer) => {
      errorText = (errorText + chunk.toString()).slice(-4000);
    });
    child.on('message', (message: ChildMessage) => {
      if (message.type === 'epoch') void onEpoch(message);
      else if (message.type === 'result') outcome = { kind: 'result', result: message.result };
      else if (message.type === 'error') outcome = { kind: 'error', name: message.name, message: message.message };
    });
    child.on('exit', (code, signal) => {
      children.delete(child);
      resolveOutcome(outcome ?? { kind: 'killed', message: `training process ended (${signal ?? `exit ${code}`}): ${errorText.trim().split('\n').slice(-3).join(' | ')}` });
    });
    child.send(start);
  });
}

/**
 * The child side: trains the job it is sent, reporting each epoch; exits when its worker goes away
 * (a worker killed with SIGKILL must not leave training running that nobody owns).
 */
export async function runChild(): Promise<void> {
  const { runJob } = await import('../job.js');
  const { fileCheckpointStore } = await import('@regstack/trainer/node');
  const { redisCheckpointStore } = await import('./checkpoint-store.js');
  process.on('disconnect', () => process.exit(70));
  // Ctrl-C reaches the whole process group: the worker decides (it stops this process and requeues the job).
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => process.exit(143));
  const start = await new Promise<ChildStart>((resolveStart) => process.once('message', (message) => resolveStart(message as ChildStart)));
  const send = (message: ChildMessage) => new Promise<void>((done) => process.send!(message, () => done()));
  let redis: ReturnType<typeof reconnectingClient> | null = null;
  try {
    const { checkpoints: where } = start;
    let checkpoints;
    if (where.kind === 'redis') {
      redis = reconnectingClient(parseQueueUrl(where.queue));
      redis.on('error', () => {}); // reconnects; a save waits for it
      checkpoints = redisCheckpointStore(redis, { key: where.key, fence: { lockKey: where.lockKey, token: where.token } });
    } else {
      checkpoints = fileCheckpointStore(where.path);
    }
    const result = await runJob(start.spec, {
      quiet: true,
      checkpoints,
      onEpochEnd: (record) => send({ type: 'epoch', epoch: record.epoch, epochs: start.spec.recipe.epochs, validationAccuracy: record.validation?.accuracy ?? null }),
    });
    await send({ type: 'result', result });
    process.exit(0);
  } catch (error) {
    const typed = error instanceof RegstackError;
    await send({ type: 'error', name: typed ? error.name : 'Error', message: (error as Error).message });
    process.exit(1);
  } finally {
    redis?.disconnect();
  }
}
