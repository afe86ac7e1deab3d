import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memoryCheckpointStore, type SerializedCheckpoint } from '@regstack/trainer';
import type { JobResult } from '../job.js';
import { parseStackSpec } from '../spec.js';
import { LockLostError, packCheckpoint, redisCheckpointStore, unpackCheckpoint } from './checkpoint-store.js';
import { QueueConnectionError, assertReachable, parseQueueUrl } from './connection.js';
import { queuedJobFromSpec, validateQueuedJob } from './job-data.js';
import { KEY_PREFIX, QUEUE_NAME, studyStatus } from './study.js';
import { CliProcess, TestRedis, freePort, hasBuiltCli, hasRedisServer, makeCertificates, redisHasTls } from './__fixtures__/test-redis.js';

const template = {
  data: { name: 'fashion-mnist-embedded' as const, trainSize: 300, testSize: 100 },
  model: { name: 'mlp' as const, options: {} },
  recipe: { epochs: 4, batchSize: 32, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, clipNorm: 1, augment: 'none' as const },
  backend: 'wasm' as const,
};

describe('queue URLs and job data', () => {
  it('reads credentials, database and TLS from the URL, and hides the password', () => {
    const plain = parseQueueUrl('redis://worker:p%40ss@10.0.0.5:6380/3');
    expect(plain.redis).toEqual({ host: '10.0.0.5', port: 6380, db: 3, username: 'worker', password: 'p@ss' });
    expect(plain.display).toBe('redis://worker:***@10.0.0.5:6380/3');
    const tls = parseQueueUrl('rediss://:secret@queue.example.org');
    expect(tls.redis).toMatchObject({ host: 'queue.example.org', port: 6379, db: 0, password: 'secret', tls: { servername: 'queue.example.org' } });
    expect(() => parseQueueUrl('http://localhost:6379')).toThrow(/--queue: expected a redis:\/\/ or rediss:\/\/ URL/);
    expect(() => parseQueueUrl('redis://localhost:6379/queue')).toThrow(/database must be a number/);
    expect(() => parseQueueUrl('localhost')).toThrow(/--queue: expected redis:/);
  });

  it('checks job data read from the queue as untrusted input', () => {
    const job = queuedJobFromSpec('study-1', { ...template, data: { ...template.data, directory: '/home/me/data' } as never, stack: parseStackSpec('rcad:alpha=0.5'), seed: 1 });
    expect(job.run).toBe('rcad_alpha=0.5__seed1');
    expect(job.data).toEqual({ name: 'fashion-mnist-embedded', trainSize: 300, testSize: 100 }); // no path travels
    expect(validateQueuedJob(JSON.parse(JSON.stringify(job)))).toEqual(job);
    const bad = (change: (copy: Record<string, any>) => void) => {
      const copy = JSON.parse(JSON.stringify(job));
      change(copy);
      return () => validateQueuedJob(copy);
    };
    expect(bad((c) => (c.data.directory = '/etc'))).toThrow(/job\.data\.directory: unknown field/);
    expect(bad((c) => (c.study = '../../etc'))).toThrow(/job\.study: '\.\.\/\.\.\/etc' is not a study name/);
    expect(bad((c) => (c.run = '../x'))).toThrow(/job\.run: expected 'rcad_alpha=0\.5__seed1'/);
    expect(bad((c) => (c.stack = 'rcad:alpah=1'))).toThrow(/rcad\.alpah: unknown option/);
    expect(bad((c) => (c.recipe.epochs = 1e9))).toThrow(/job\.recipe\.epochs/);
    expect(bad((c) => (c.model.options = JSON.parse('{"__proto__": {"x": 1}}')))).toThrow(/job\.model\.options/);
    expect(bad((c) => (c.model.options = { width: { toString: 'code' } }))).toThrow(/job\.model\.options\.width: expected a number/);
    expect(bad((c) => (c.backend = 'require("child_process")'))).toThrow(/job\.backend: expected one of/);
    expect(() => validateQueuedJob('{"format":1}')).toThrow(/job: expected an object, got string/);
  });

  it('packs a checkpoint into one value and reads it back; damaged values are typed errors', () => {
    const checkpoint: SerializedCheckpoint = {
      manifest: { format: 'regstack-checkpoint', version: 1, state: { epoch: 3, step: 30, random: [1, 2, 3, 4] as never, bestEpoch: 2, bestValidationAccuracy: 0.5, history: [] }, tensors: [] },
      data: Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8]),
    };
    const packed = packCheckpoint(checkpoint);
    expect(unpackCheckpoint(packed)).toEqual(checkpoint);
    expect(() => unpackCheckpoint(packed.subarray(0, 20))).toThrow(/truncated/);
    expect(() => unpackCheckpoint(Buffer.from('hello world'))).toThrow(/is not a regstack checkpoint/);
    void memoryCheckpointStore; // the interface both stores implement
  });

  it.skipIf(!hasBuiltCli)('stops a worker within seconds, with a typed error and exit code 2, when Redis is unreachable', async () => {
    const cwd = await mkdtemp(join(tmpdir(), 'regstack-queue-unreachable-'));
    try {
      const port = await freePort();
      const started = Date.now();
      const worker = new CliProcess(['worker', '--queue', `redis://someone:hunter2@127.0.0.1:${port}/0`], cwd);
      expect(await worker.exited).toBe(2);
      expect(Date.now() - started).toBeLessThan(20_000); // process start included, on a loaded machine
      expect(worker.stderr).toMatch(new RegExp(`^regstack: --queue: cannot use Redis at redis://someone:\\*\\*\\*@127\\.0\\.0\\.1:${port}/0: connect ECONNREFUSED`));
      expect(worker.stderr).not.toContain('hunter2');
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

// CI installs redis-server (.ci/run) and builds first: there a missing one is a failure, not a skip.
if (process.env.CI && (!hasRedisServer || !hasBuiltCli)) {
  throw new Error(`the queue tests need ${hasRedisServer ? 'the built command line (npm run build)' : 'redis-server (apt-get install redis-server)'}`);
}

describe.skipIf(!hasRedisServer)('queue against a private redis-server (skipped where redis-server is not installed)', () => {
  let directory: string;
  let redis: TestRedis;
  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), 'regstack-queue-'));
    await mkdir(join(directory, 'redis'));
    redis = new TestRedis(join(directory, 'redis'), await freePort(), 'pa:ss@word');
    await redis.start();
  });
  afterAll(async () => {
    await redis?.stop();
    await rm(directory, { recursive: true, force: true });
  });

  it('fails fast with a typed error when Redis is unreachable or the password is wrong', async () => {
    const started = Date.now();
    const unreachable = assertReachable(parseQueueUrl(`redis://127.0.0.1:${await freePort()}/0`), 3000);
    await expect(unreachable).rejects.toThrow(QueueConnectionError);
    await expect(unreachable).rejects.toThrow(/cannot use Redis at redis:\/\/127\.0\.0\.1:\d+\/0: .*ECONNREFUSED/);
    await expect(assertReachable(parseQueueUrl(`redis://default:wrong@127.0.0.1:${redis.port}/0`))).rejects.toThrow(/WRONGPASS|invalid username-password/);
    await expect(assertReachable(parseQueueUrl(redis.url))).resolves.toBeUndefined();
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('writes a checkpoint only while the job lock holds its token', async () => {
    const client = new Redis({ ...parseQueueUrl(redis.url).redis });
    try {
      await client.set('fence:lock', 'token-a');
      const checkpoint: SerializedCheckpoint = {
        manifest: { format: 'regstack-checkpoint', version: 1, state: { epoch: 1, step: 5, random: [9] as never, bestEpoch: 1, bestValidationAccuracy: 0.25, history: [] }, tensors: [] },
        data: Uint8Array.from([9, 8, 7, 6]),
      };
      const owner = redisCheckpointStore(client, { key: 'fence:checkpoint', fence: { lockKey: 'fence:lock', token: 'token-a' } });
      const stale = redisCheckpointStore(client, { key: 'fence:checkpoint', fence: { lockKey: 'fence:lock', token: 'token-b' } });
      expect(await owner.load()).toBeNull();
      await owner.save(checkpoint);
      await expect(stale.save({ ...checkpoint, data: Uint8Array.from([0, 0, 0, 0]) })).rejects.toThrow(LockLostError);
      expect(await owner.load()).toEqual(checkpoint);
    } finally {
      client.disconnect();
    }
  });

  it.skipIf(!hasBuiltCli)('keeps checkpoints in --artifacts instead of Redis when given a shared folder', async () => {
    const cwd = join(directory, 'artifacts-case');
    await mkdir(cwd, { recursive: true });
    const enqueue = new CliProcess(['compare', '--queue', redis.url, '--name', 'shared', '--stack', 'erm', '--model', 'mlp', '--train-size', '200', '--test-size', '50', '--epochs', '2', '--batch-size', '50'], cwd);
    expect(await enqueue.exited).toBe(0);
    const worker = new CliProcess(['worker', '--queue', redis.url, '--artifacts', join(cwd, 'shared-mount')], cwd);
    try {
      await worker.waitFor((e) => e.event === 'completed', 120_000, 'the job to complete');
      const manifest = JSON.parse(await readFile(join(cwd, 'shared-mount', 'shared', 'erm__seed0', 'checkpoint.json'), 'utf8'));
      expect(manifest.state.epoch).toBe(2);
      const client = new Redis({ ...parseQueueUrl(redis.url).redis });
      expect(await client.exists('regstack:checkpoint:shared/erm__seed0')).toBe(0);
      client.disconnect();
    } finally {
      worker.child.kill('SIGTERM');
      await worker.exited;
    }
  });

  it.skipIf(!hasBuiltCli)(
    'runs a sweep on two workers through a SIGKILL, a SIGTERM and a Redis restart; results equal a local compare',
    async () => {
      const stacks = ['erm', 'label-smoothing:epsilon=0.1', 'mixup:mixupAlpha=1e-30']; // the last diverges at its first step
      const common = ['--model', 'mlp', '--train-size', '300', '--test-size', '100', '--epochs', '4', '--batch-size', '32', '--lr', '0.05', '--seeds', '0,1', ...stacks.flatMap((s) => ['--stack', s])];
      const folder = async (name: string) => {
        const path = join(directory, name);
        await mkdir(path, { recursive: true });
        return path;
      };
      // The local reference runs in parallel with the sweep, without the diverging stack.
      const local = new CliProcess(['compare', ...common.slice(0, -2), '--workers', '1', '--out', join(directory, 'local')], await folder('local-cwd'));

      const enqueue = new CliProcess(['compare', '--queue', redis.url, '--name', 'sweep', '--attempts', '2', ...common], await folder('enqueue'));
      expect(await enqueue.exited).toBe(0);
      expect(enqueue.stderr).toMatch(/6 jobs enqueued/);
      expect(enqueue.stderr).not.toContain(redis.password);
      const again = new CliProcess(['compare', '--queue', redis.url, '--name', 'sweep', '--attempts', '2', ...common], await folder('enqueue'));
      expect(await again.exited).toBe(0);
      expect(again.stderr).toMatch(/0 jobs enqueued, 6 already there/);
      const changed = new CliProcess(['compare', '--queue', redis.url, '--name', 'sweep', ...common.map((a) => (a === '4' ? '5' : a))], await folder('enqueue'));
      expect(await changed.exited).toBe(2);
      expect(changed.stderr).toMatch(/--name: study 'sweep' already holds erm__seed0 with another spec/);

      // Watches the sweep to its end through every fault below, then writes the table and report.
      const watcher = new CliProcess(['compare', '--queue', redis.url, '--name', 'sweep', '--attempts', '2', ...common, '--wait', '--out', join(directory, 'waited')], await folder('enqueue'));
      const fast = ['--lock-duration', '2000', '--stalled-interval', '1000'];
      const workerA = new CliProcess(['worker', '--queue', redis.url, ...fast], await folder('worker-a'));
      const workerB = new CliProcess(['worker', '--queue', redis.url, ...fast], await folder('worker-b'));

      // SIGKILL worker A mid-job, after its first checkpoint.
      const killedAt = await workerA.waitFor((e) => e.event === 'epoch' && Number(e.epoch) < 4, 120_000, 'an epoch on worker A');
      workerA.child.kill('SIGKILL');
      await workerA.exited;
      const killedJob = String(killedAt.job);

      // Worker C (default 30 s lock): SIGTERM mid-job gives its job back at once, not after the lock expires.
      const workerC = new CliProcess(['worker', '--queue', redis.url], await folder('worker-c'));
      const interrupted = await workerC.waitFor((e) => e.event === 'epoch' && Number(e.epoch) < 4, 120_000, 'an epoch on worker C');
      const signalled = Date.now();
      workerC.child.kill('SIGTERM');
      expect(await workerC.exited).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(10_000);
      expect(workerC.events.some((e) => e.event === 'returned' && e.job === interrupted.job)).toBe(true);
      const monitor = new Redis({ ...parseQueueUrl(redis.url).redis, maxRetriesPerRequest: null });
      monitor.on('error', () => {});
      const queue = new Queue(QUEUE_NAME, { connection: monitor, prefix: KEY_PREFIX });
      let workerD: CliProcess | null = null;
      queue.on('error', () => {});
      try {
        expect(['waiting', 'active', 'completed']).toContain(await queue.getJobState(String(interrupted.job)));
        expect(await queue.getJobState(String(interrupted.job))).not.toBe('failed');

        workerD = new CliProcess(['worker', '--queue', redis.url, ...fast], await folder('worker-c'));
        // Restart Redis once mid-sweep; both workers must reconnect.
        const deadline = Date.now() + 150_000;
        await workerD.waitFor((e) => e.event === 'ready', 60_000, 'worker D to start');
        const midSweep = async () => {
          const now = await studyStatus(queue, 'sweep');
          return now.completed >= 1 && now.active.length > 0;
        };
        while (!(await midSweep()) && Date.now() < deadline) await new Promise((done) => setTimeout(done, 200));
        await redis.stop();
        const restarted = new Date().toISOString();
        await new Promise((done) => setTimeout(done, 500));
        await redis.start();
        let status = await studyStatus(queue, 'sweep');
        while ((status.waiting > 0 || status.active.length > 0) && Date.now() < deadline) {
          await new Promise((done) => setTimeout(done, 500));
          status = await studyStatus(queue, 'sweep');
        }
        expect(status).toMatchObject({ waiting: 0, completed: 4, failed: 2, total: 6 });
        workerB.child.kill('SIGTERM');
        workerD!.child.kill('SIGTERM');
        expect(await workerB.exited).toBe(0);
        expect(await workerD!.exited).toBe(0);

        // Every job completed exactly once, over all workers.
        const completions = [workerA, workerB, workerC, workerD!].flatMap((w) => w.events.filter((e) => e.event === 'completed').map((e) => String(e.job)));
        expect(completions.sort()).toEqual(['sweep/erm__seed0', 'sweep/erm__seed1', 'sweep/label-smoothing_epsilon=0.1__seed0', 'sweep/label-smoothing_epsilon=0.1__seed1']);
        // Both workers lost Redis, reconnected, and finished jobs after the restart.
        for (const worker of [workerB, workerD!]) {
          const lostAt = worker.events.findIndex((e) => e.event === 'redis-lost');
          expect(lostAt, JSON.stringify(worker.events.map((e) => [e.event, e.time, e.message]))).toBeGreaterThanOrEqual(0);
          expect(worker.events.slice(lostAt).some((e) => e.event === 'redis-reconnected')).toBe(true);
        }
        expect(completions.length).toBe(4);
        const afterRestart = [workerB, workerD!].flatMap((w) => w.events.filter((e) => (e.event === 'completed' || e.event === 'failed') && String(e.time) > restarted));
        expect(afterRestart.length).toBeGreaterThan(0);
        // The killed job resumed from its checkpoint on another worker, not from the start.
        const resumed = [workerB, workerD!].flatMap((w) => w.events.filter((e) => e.event === 'epoch' && e.job === killedJob).map((e) => Number(e.epoch)));
        expect(Math.min(...resumed)).toBeGreaterThan(Number(killedAt.epoch));

        const report = new CliProcess(['report', '--queue', redis.url, '--name', 'sweep', '--out', join(directory, 'report')], await folder('report-cwd'));
        expect(await report.exited).toBe(0);
        expect(report.stdout).toMatch(/failed: mixup:mixupAlpha=1e-30 seed 0: .*loss: became NaN.*after 2 attempts/);
        expect(report.stdout).toMatch(/failed: mixup:mixupAlpha=1e-30 seed 1: /);
        const html = await readFile(join(directory, 'report', 'report.html'), 'utf8');
        expect(html).toContain('<h2>Failed runs</h2>');

        expect(await watcher.exited).toBe(0);
        expect(watcher.stderr).toMatch(/active [12] \((erm|label-smoothing:epsilon=0\.1) seed [01]: epoch [0-4]\/4/);
        expect(watcher.stderr.trim().split('\n').at(-1)).toBe('waiting 0 · active 0 · completed 4 · failed 2 · of 6');
        expect(watcher.stdout).toMatch(/failed: mixup:mixupAlpha=1e-30 seed 1: /);
        expect(JSON.parse(await readFile(join(directory, 'waited', 'results.json'), 'utf8'))).toHaveLength(4);

        expect(await local.exited).toBe(0);
        const strip = (result: JobResult) => ({
          id: result.id,
          stack: result.stack,
          seed: result.seed,
          bestEpoch: result.bestEpoch,
          test: result.test,
          validation: result.validation,
          history: result.history.map(({ trainSeconds: _, secondsPerStep: __, ...record }) => record),
        });
        const queued = JSON.parse(await readFile(join(directory, 'report', 'results.json'), 'utf8')) as JobResult[];
        const reference = JSON.parse(await readFile(join(directory, 'local', 'results.json'), 'utf8')) as JobResult[];
        expect(queued.map(strip)).toEqual(reference.map(strip));
        expect(queued).toHaveLength(4);
      } finally {
        await queue.close();
        monitor.disconnect();
        for (const worker of [workerA, workerB, workerC, workerD]) if (worker && worker.child.exitCode === null) worker.child.kill('SIGKILL');
      }
    },
    300_000,
  );
});

describe.skipIf(!redisHasTls || !hasBuiltCli)('queue over TLS (skipped where redis-server has no TLS or the command line is not built)', () => {
  let directory: string;
  let redis: TestRedis | null = null;
  afterAll(async () => {
    await redis?.stop();
    if (directory) await rm(directory, { recursive: true, force: true });
  });

  it('enqueues over rediss:// with a private certificate authority, and refuses an unverified server', async () => {
    directory = await mkdtemp(join(tmpdir(), 'regstack-queue-tls-'));
    const certificates = makeCertificates(directory);
    if (!certificates) return; // no openssl: nothing to test with
    redis = new TestRedis(directory, await freePort(), 'tls-secret', certificates);
    await redis.start();
    expect(redis.url).toMatch(/^rediss:\/\//);
    const args = ['compare', '--queue', redis.url, '--name', 'tls', '--stack', 'erm', '--model', 'mlp', '--epochs', '1'];
    const trusted = new CliProcess(args, directory, { ...process.env, NODE_EXTRA_CA_CERTS: certificates.authority });
    expect(await trusted.exited).toBe(0);
    expect(trusted.stderr).toMatch(/study 'tls' on rediss:\/\/default:\*\*\*@127\.0\.0\.1:\d+\/0: 1 jobs enqueued/);
    const untrusted = new CliProcess(args, directory, { ...process.env, NODE_EXTRA_CA_CERTS: '' });
    expect(await untrusted.exited).toBe(2);
    expect(untrusted.stderr).toMatch(/regstack: --queue: cannot use Redis at rediss:.*(self-signed|unable to verify|certificate)/i);
  });
});
