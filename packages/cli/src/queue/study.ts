import { Job, Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { ConfigError } from '@regstack/regularizer';
import type { JobResult, JobSpec } from '../job.js';
import type { FailedRun } from '../compare.js';
import { parseStackSpec, type StackSpec } from '../spec.js';
import { checkStudyName, jobSpecFor, queueJobId, queuedJobFromSpec, validateQueuedJob, type QueuedJobData } from './job-data.js';

/** Key prefix of everything regstack keeps in Redis. */
export const KEY_PREFIX = 'regstack';
/** The one BullMQ queue every study's jobs go through, so a worker needs nothing but the URL. */
export const QUEUE_NAME = 'jobs';

/** Where a job's latest checkpoint lives. */
export const checkpointKey = (jobId: string) => `${KEY_PREFIX}:checkpoint:${jobId}`;
/** BullMQ's lock key of a job (its value is the token of the worker that holds the job). */
export const lockKey = (jobId: string) => `${KEY_PREFIX}:${QUEUE_NAME}:${jobId}:lock`;
const studyKey = (study: string) => `${KEY_PREFIX}:study:${study}`;

/** What a study records once, when first enqueued: for the report. */
export interface StudyInfo {
  stacks: string[];
  seeds: number[];
  title: string;
  note: string;
  command: string;
}

/** Options of {@link enqueueStudy}. */
export interface EnqueueOptions {
  study: string;
  stacks: StackSpec[];
  seeds: number[];
  template: Pick<JobSpec, 'data' | 'model' | 'recipe' | 'backend'>;
  /** Tries per job before it is marked failed. */
  attempts: number;
  title: string;
  note: string;
  command: string;
}

/**
 * Adds one job per (stack, seed), seed-major like a local compare. Job ids are deterministic, so a
 * second enqueue of the same study adds nothing; the same name with a different spec is refused.
 * Returns how many jobs were added and how many were there already.
 */
export async function enqueueStudy(queue: Queue, redis: Redis, options: EnqueueOptions): Promise<{ added: number; existing: number }> {
  const study = checkStudyName(options.study);
  const labels = options.stacks.map((stack) => stack.label);
  if (new Set(labels).size !== labels.length) throw new ConfigError('--stack', 'the same stack is given twice');
  const jobs = options.seeds.flatMap((seed) => options.stacks.map((stack) => queuedJobFromSpec(study, { ...options.template, stack, seed })));
  const ids = jobs.map((job) => queueJobId(study, job.run));
  if (new Set(ids).size !== ids.length) throw new ConfigError('--stack', 'two stacks give the same run id; write them differently');
  const info: StudyInfo = { stacks: labels, seeds: options.seeds, title: options.title, note: options.note, command: options.command };
  const stored = await redis.get(studyKey(study));
  if (stored) {
    const previous = JSON.parse(stored) as StudyInfo;
    if (JSON.stringify(previous.stacks) !== JSON.stringify(info.stacks) || JSON.stringify(previous.seeds) !== JSON.stringify(info.seeds)) {
      throw new ConfigError('--name', `study '${study}' already exists with other stacks or seeds; choose another --name`);
    }
  }
  let existing = 0;
  const toAdd: Array<{ id: string; data: QueuedJobData }> = [];
  for (const [i, data] of jobs.entries()) {
    const found = await Job.fromId(queue, ids[i]!);
    if (!found) {
      toAdd.push({ id: ids[i]!, data });
      continue;
    }
    if (JSON.stringify(found.data) !== JSON.stringify(data)) {
      throw new ConfigError('--name', `study '${study}' already holds ${data.run} with another spec (data, model, recipe or backend); choose another --name`);
    }
    existing++;
  }
  if (!stored) await redis.set(studyKey(study), JSON.stringify(info));
  await queue.addBulk(
    toAdd.map(({ id, data }) => ({
      name: data.stack,
      data,
      opts: { jobId: id, attempts: options.attempts, backoff: { type: 'fixed', delay: 1000 }, removeOnComplete: false, removeOnFail: false },
    })),
  );
  return { added: toAdd.length, existing };
}

/** A study's jobs by state, and each active job's progress. */
export interface StudyStatus {
  waiting: number;
  active: Array<{ stack: string; seed: number; epoch: number; epochs: number }>;
  completed: number;
  failed: number;
  total: number;
}

/** Job progress as workers report it. */
export interface JobProgress {
  epoch: number;
  epochs: number;
  worker?: string;
}

async function idsByState(queue: Queue, study: string): Promise<Record<'waiting' | 'active' | 'completed' | 'failed', string[]>> {
  const mine = (ids: string[]) => ids.filter((id) => id.startsWith(`${study}/`));
  const [wait, delayed, prioritized, active, completed, failed] = await Promise.all(
    (['wait', 'delayed', 'prioritized', 'active', 'completed', 'failed'] as const).map(async (type) => mine(await queue.getRanges([type], 0, -1))),
  );
  return { waiting: [...wait!, ...delayed!, ...prioritized!], active: active!, completed: completed!, failed: failed! };
}

/** Counts a study's jobs by state (ids only, so cheap to poll), with the active jobs' epochs. */
export async function studyStatus(queue: Queue, study: string): Promise<StudyStatus> {
  const ids = await idsByState(queue, study);
  const active = [];
  for (const id of ids.active) {
    const job = await Job.fromId(queue, id);
    if (!job) continue;
    const progress = (typeof job.progress === 'object' ? job.progress : {}) as Partial<JobProgress>;
    active.push({ stack: String(job.data.stack), seed: Number(job.data.seed), epoch: progress.epoch ?? 0, epochs: progress.epochs ?? Number(job.data.recipe?.epochs) });
  }
  const total = ids.waiting.length + ids.active.length + ids.completed.length + ids.failed.length;
  return { waiting: ids.waiting.length, active, completed: ids.completed.length, failed: ids.failed.length, total };
}

/** One line for a terminal: counts and each active job's epoch. */
export function formatStatus(status: StudyStatus): string {
  const active = status.active.map((job) => `${job.stack} seed ${job.seed}: epoch ${job.epoch}/${job.epochs}`).join(', ');
  return `waiting ${status.waiting} · active ${status.active.length}${active ? ` (${active})` : ''} · completed ${status.completed} · failed ${status.failed} · of ${status.total}`;
}

/** What has finished in a study so far. */
export interface StudyResults {
  info: StudyInfo;
  results: JobResult[];
  /** The finished runs' specs (for the report's rerun commands). */
  jobs: JobSpec[];
  failed: FailedRun[];
  status: StudyStatus;
}

/** Reads a study's results from Redis: completed jobs' results, failed jobs' reasons, in stack and seed order. */
export async function collectStudy(queue: Queue, redis: Redis, study: string): Promise<StudyResults> {
  checkStudyName(study);
  const stored = await redis.get(studyKey(study));
  if (!stored) throw new ConfigError('--name', `no study '${study}' in this Redis (enqueue it with regstack compare --queue … --name ${study})`);
  const info = JSON.parse(stored) as StudyInfo;
  const ids = await idsByState(queue, study);
  const order = (data: { stack: string; seed: number }) => info.seeds.indexOf(data.seed) * info.stacks.length + info.stacks.indexOf(data.stack);
  const finished: Array<{ data: QueuedJobData; result: JobResult }> = [];
  for (const id of ids.completed) {
    const job = await Job.fromId(queue, id);
    if (!job) continue;
    finished.push({ data: validateQueuedJob(job.data), result: job.returnvalue as JobResult });
  }
  finished.sort((a, b) => order(a.data) - order(b.data));
  const failed: FailedRun[] = [];
  for (const id of ids.failed) {
    const job = await Job.fromId(queue, id);
    if (job) failed.push({ stack: String(job.data.stack), seed: Number(job.data.seed), reason: `${job.failedReason} (after ${job.attemptsMade} attempt${job.attemptsMade === 1 ? '' : 's'})` });
  }
  failed.sort((a, b) => order(a) - order(b));
  return {
    info,
    results: finished.map((entry) => entry.result),
    jobs: finished.map((entry) => jobSpecFor(entry.data, { directory: `runs/${entry.data.run}` })),
    failed,
    status: await studyStatus(queue, study),
  };
}

/** Re-parses the study's stacks (for the table's order). */
export const studyStacks = (info: StudyInfo): StackSpec[] => info.stacks.map((label) => parseStackSpec(label));
