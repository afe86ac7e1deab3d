#!/usr/bin/env node
// `node tools/bench/queue.mjs [--jobs 10000] [--workers 8,32] [--paced 1000] [--rate 100]`: what the
// BullMQ queue costs. Starts its own redis-server (append-only persistence, as docs/sweeps.md
// recommends) on a free loopback port in a temporary folder, then for each worker count starts that
// many worker processes (one BullMQ Worker each, concurrency 1, a no-op job) and
// 1. enqueues --jobs jobs at once (addBulk, 1,000 per call): jobs per second from the first enqueue to
//    the last job's end, and the enqueue-to-start latency (job.timestamp to the processor's start,
//    which here includes the time spent waiting behind the backlog);
// 2. enqueues --paced jobs one by one at --rate per second: enqueue-to-start latency without a backlog,
//    the queue's own cost per job.
// Not part of `npm test`: it takes a minute or two and its numbers depend on the machine.
import { fork, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Queue, Worker } from 'bullmq';

const QUEUE = 'bench';

if (process.argv[2] === '--child') {
  // A worker process: takes jobs and records when each started, relative to its enqueue.
  const port = Number(process.argv[3]);
  const latencies = [];
  let lastEnd = 0;
  const worker = new Worker(
    QUEUE,
    async (job) => {
      latencies.push(Date.now() - job.timestamp);
      lastEnd = Date.now();
    },
    { connection: { host: '127.0.0.1', port, maxRetriesPerRequest: null }, concurrency: 1, autorun: true },
  );
  await worker.waitUntilReady();
  process.send({ type: 'ready' });
  process.on('message', async (message) => {
    if (message.type === 'report') {
      process.send({ type: 'report', latencies: latencies.splice(0), lastEnd });
    } else if (message.type === 'stop') {
      await worker.close();
      process.exit(0);
    }
  });
} else {
  await main();
}

async function main() {
  const { values } = parseArgs({
    options: {
      jobs: { type: 'string', default: '10000' },
      workers: { type: 'string', default: '8,32' },
      paced: { type: 'string', default: '1000' },
      rate: { type: 'string', default: '100' },
    },
  });
  if (spawnSync('redis-server', ['--version']).status !== 0) {
    process.stderr.write('queue bench: redis-server is not installed (apt-get install redis-server); nothing measured\n');
    process.exit(1);
  }
  const jobs = Number(values.jobs);
  const paced = Number(values.paced);
  const rate = Number(values.rate);
  const directory = mkdtempSync(join(tmpdir(), 'regstack-queue-bench-'));
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--dir', directory, '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--daemonize', 'no'], { stdio: 'ignore' });
  try {
    await waitForPort(port);
    const queue = new Queue(QUEUE, { connection: { host: '127.0.0.1', port } });
    const rows = [];
    for (const count of values.workers.split(',').map(Number)) {
      await queue.obliterate({ force: true });
      const children = await Promise.all(Array.from({ length: count }, () => startChild(port)));
      const burst = await runBurst(queue, children, jobs);
      const steady = await runPaced(queue, children, paced, rate);
      rows.push({ workers: count, ...burst, ...steady });
      await Promise.all(children.map((child) => new Promise((done) => (child.once('exit', done), child.send({ type: 'stop' })))));
      process.stderr.write(`${count} workers done\n`);
    }
    await queue.close();
    const line = (cells) => `| ${cells.join(' | ')} |`;
    const lines = [
      `Queue bench: ${jobs.toLocaleString('en')} no-op jobs at once, then ${paced.toLocaleString('en')} at ${rate}/s; BullMQ on redis-server ${redisVersion()} (append-only, fsync every second), loopback, one worker process per worker (concurrency 1).`,
      '',
      line(['workers', 'jobs / s (burst)', 'latency p50 / p99 ms (burst)', 'latency p50 / p99 ms (paced)']),
      line(['---:', '---:', '---:', '---:']),
      ...rows.map((row) => line([row.workers, row.jobsPerSecond.toFixed(0), `${row.burstP50} / ${row.burstP99}`, `${row.pacedP50} / ${row.pacedP99}`])),
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    redis.kill('SIGTERM');
    await new Promise((done) => redis.once('exit', done));
    rmSync(directory, { recursive: true, force: true });
  }
}

function startChild(port) {
  return new Promise((resolveChild, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ['--child', String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    child.once('message', (message) => (message.type === 'ready' ? resolveChild(child) : reject(new Error('worker did not start'))));
    child.once('error', reject);
  });
}

async function collect(children) {
  const reports = await Promise.all(children.map((child) => new Promise((done) => {
    child.once('message', (message) => done(message));
    child.send({ type: 'report' });
  })));
  return { latencies: reports.flatMap((report) => report.latencies), lastEnd: Math.max(...reports.map((report) => report.lastEnd)) };
}

async function waitForCompleted(queue, total) {
  for (;;) {
    const { completed } = await queue.getJobCounts('completed');
    if (completed >= total) return;
    await new Promise((done) => setTimeout(done, 50));
  }
}

async function runBurst(queue, children, jobs) {
  const before = (await queue.getJobCounts('completed')).completed;
  const started = Date.now();
  for (let first = 0; first < jobs; first += 1000) {
    await queue.addBulk(Array.from({ length: Math.min(1000, jobs - first) }, (_, i) => ({ name: 'noop', data: { i: first + i } })));
  }
  await waitForCompleted(queue, before + jobs);
  const { latencies, lastEnd } = await collect(children);
  return { jobsPerSecond: jobs / ((lastEnd - started) / 1000), burstP50: percentile(latencies, 0.5), burstP99: percentile(latencies, 0.99) };
}

async function runPaced(queue, children, jobs, rate) {
  const before = (await queue.getJobCounts('completed')).completed;
  const started = Date.now();
  for (let i = 0; i < jobs; i++) {
    const due = started + (i * 1000) / rate;
    if (due > Date.now()) await new Promise((done) => setTimeout(done, due - Date.now()));
    await queue.add('noop', { i });
  }
  await waitForCompleted(queue, before + jobs);
  const { latencies } = await collect(children);
  return { pacedP50: percentile(latencies, 0.5), pacedP99: percentile(latencies, 0.99) };
}

function percentile(values, fraction) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

function redisVersion() {
  return /v=(\S+)/.exec(spawnSync('redis-server', ['--version']).stdout.toString())?.[1] ?? '?';
}

function freePort() {
  return new Promise((done, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

async function waitForPort(port) {
  for (let i = 0; i < 150; i++) {
    const open = await new Promise((done) => {
      const socket = new Socket();
      socket.once('connect', () => (socket.destroy(), done(true)));
      socket.once('error', () => (socket.destroy(), done(false)));
      socket.connect(port, '127.0.0.1');
    });
    if (open) return;
    await new Promise((done) => setTimeout(done, 100));
  }
  throw new Error('redis-server did not start');
}
