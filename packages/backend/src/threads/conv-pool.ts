/**
 * Worker threads that take a share of each large convolution's batch on wasm in Node, where TF.js
 * runs single-threaded (it turns wasm threads off there). Each worker runs its own TF.js on wasm
 * (conv-worker.ts); inputs and results pass through shared memory and the main thread blocks on
 * `Atomics.wait` while the workers finish, so kernels stay synchronous as TF.js requires.
 *
 * Node only, started by `useBackend('wasm', { threads })`. Node's modules are imported when a pool
 * starts, through specifiers bundlers do not follow, so that browser bundles build without them.
 */
import type { MessagePort, Worker } from 'node:worker_threads';
import { CONTROL, CONTROL_SLOTS, SIMD_JOB_CACHE, State, type ConvJob, type SimdJob } from './conv-protocol.js';
import { setConvPool, type ConvPool, type ConvShare, type SimdShare } from './parallel-conv.js';

/** How long the main thread waits for one share before it gives up on the worker. */
let workerTimeoutMs = 300_000;

/** For tests: how long to wait for a share before giving up on its worker. Returns the previous value. */
export function setWorkerTimeout(milliseconds: number): number {
  const previous = workerTimeoutMs;
  workerTimeoutMs = milliseconds;
  return previous;
}

interface NodeModules {
  fs: typeof import('node:fs');
  module: typeof import('node:module');
  url: typeof import('node:url');
  threads: typeof import('node:worker_threads');
}

async function nodeModules(): Promise<NodeModules> {
  const load = async <T>(name: string) => (await import(/* @vite-ignore */ /* webpackIgnore: true */ name)) as T;
  return {
    fs: await load('node:fs'),
    module: await load('node:module'),
    url: await load('node:url'),
    threads: await load('node:worker_threads'),
  };
}

interface PooledWorker {
  worker: Worker;
  flags: Int32Array;
  port: MessagePort;
  buffer: SharedArrayBuffer | undefined;
  /** The buffer is new since the worker last saw one. */
  bufferChanged: boolean;
  started: { outputOffset: number; outputSize: number } | undefined;
  /** The shared memory of the direct SIMD kernels, once sent to this worker. */
  memory: WebAssembly.Memory | undefined;
  /** SIMD jobs this worker keeps, by what they hold (plan, pieces, form) → id. */
  knownJobs: Map<string, number>;
  /** The last id given; ids only grow, so a forgotten one is never reused. */
  lastJobId: number;
  /** Messages posted to this worker (tests count them). */
  posted: number;
  receive: typeof import('node:worker_threads').receiveMessageOnPort;
}

/**
 * The worker: the built script next to this module, or, when this module runs from source (this
 * repository's tests), the TypeScript source through tsx's loader, registered inside the worker.
 */
function workerScript({ fs, module, url }: NodeModules): { script: URL | string; eval: boolean } {
  const built = new URL('./conv-worker.js', import.meta.url);
  if (fs.existsSync(url.fileURLToPath(built))) return { script: built, eval: false };
  const source = new URL('./conv-worker.ts', import.meta.url);
  if (!fs.existsSync(url.fileURLToPath(source))) throw new Error(`@regstack/backend: the convolution worker script is missing next to ${import.meta.url}`);
  // tsx's ESM entry (its CommonJS one misplaces its hooks when run from an evaluated script).
  const tsx = url.pathToFileURL(module.createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const script = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(source.href)}); });`;
  return { script, eval: true };
}

async function startWorker(node: NodeModules): Promise<PooledWorker> {
  const control = new SharedArrayBuffer(CONTROL_SLOTS * Int32Array.BYTES_PER_ELEMENT);
  const flags = new Int32Array(control);
  const channel = new node.threads.MessageChannel();
  const { script, eval: isSource } = workerScript(node);
  const worker = new node.threads.Worker(script, { eval: isSource, workerData: { control, port: channel.port2 }, transferList: [channel.port2] });
  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => reject(new Error(`@regstack/backend: a convolution worker failed to start: ${error.message}`));
    worker.once('error', onError);
    worker.once('exit', (code) => reject(new Error(`@regstack/backend: a convolution worker exited while starting (code ${code})`)));
    const poll = () => {
      if (Atomics.load(flags, CONTROL.ready) === 1) {
        worker.off('error', onError);
        worker.removeAllListeners('exit');
        resolve();
      } else {
        setTimeout(poll, 5);
      }
    };
    poll();
  });
  // Idle workers must not keep the process alive.
  worker.unref();
  channel.port1.unref();
  return {
    worker,
    flags,
    port: channel.port1,
    buffer: undefined,
    bufferChanged: false,
    started: undefined,
    memory: undefined,
    knownJobs: new Map(),
    lastJobId: 0,
    posted: 0,
    receive: node.threads.receiveMessageOnPort,
  };
}

/**
 * What makes two SIMD jobs the same for a worker: the plan, the pieces and the form of multiply-add.
 * (The claims buffer is one for every call, and the memory is checked apart.)
 */
function simdJobKey(job: Omit<SimdJob, 'memory' | 'id'>): string {
  return JSON.stringify([job.plan, job.pieces, job.fused]);
}

class WorkerConvPool implements ConvPool {
  /** Why the pool can no longer be used, once a worker stopped answering. */
  private broken: string | undefined;

  constructor(private readonly workers: PooledWorker[]) {}

  get size(): number {
    return this.workers.length;
  }

  /** False once a worker stopped answering. */
  get usable(): boolean {
    return this.broken === undefined;
  }

  start(shares: Array<ConvShare | SimdShare>): void {
    if (this.broken !== undefined) throw new Error(`@regstack/backend: ${this.broken}; call useBackend again to start new workers`);
    if (shares.length > this.workers.length) throw new Error(`conv pool: ${shares.length} shares for ${this.workers.length} workers`);
    for (const [index, share] of shares.entries()) {
      const pooled = this.workers[index]!;
      if (share.kind === 'simd') {
        // Nothing to copy: the worker runs its images on the shared memory, sent with its first share.
        this.startSimd(pooled, share);
        continue;
      }
      const inputSizes = share.inputs.map((input) => input.values.length);
      const needed = inputSizes.reduce((sum, size) => sum + size, 0) + share.outputSize;
      if (pooled.buffer === undefined || pooled.buffer.byteLength < needed * 4) {
        // Grown by half again, so that a growing batch does not reallocate on every call.
        pooled.buffer = new SharedArrayBuffer(Math.ceil(needed * 1.5) * 4);
        pooled.bufferChanged = true;
      }
      const shared = new Float32Array(pooled.buffer);
      let offset = 0;
      const inputs = share.inputs.map((input) => {
        shared.set(input.values, offset);
        const placed = { offset, shape: input.shape };
        offset += input.values.length;
        return placed;
      });
      const job: ConvJob = {
        kind: share.kind,
        inputs: inputs as ConvJob['inputs'],
        attributes: share.attributes,
        outputShape: share.outputShape,
        outputOffset: offset,
        ...(pooled.bufferChanged ? { buffer: pooled.buffer } : {}),
      };
      pooled.bufferChanged = false;
      this.post(pooled, job);
      this.signal(pooled, { outputOffset: offset, outputSize: share.outputSize });
    }
  }

  /**
   * A SIMD share: by id where the worker has this job already (the same plan, pieces and form on the
   * same memory), else posted with a new id. A new memory makes every id stale.
   */
  private startSimd(pooled: PooledWorker, share: SimdShare): void {
    const { memory, ...job } = share;
    if (pooled.memory !== memory) pooled.knownJobs.clear();
    const key = simdJobKey(job);
    const known = pooled.knownJobs.get(key);
    if (known !== undefined) {
      Atomics.store(pooled.flags, CONTROL.job, known);
    } else {
      if (pooled.knownJobs.size >= SIMD_JOB_CACHE) pooled.knownJobs.clear();
      const id = ++pooled.lastJobId;
      pooled.knownJobs.set(key, id);
      this.post(pooled, pooled.memory === memory ? { ...job, id } : { ...job, id, memory });
    }
    pooled.memory = memory;
    this.signal(pooled, { outputOffset: 0, outputSize: 0 });
  }

  /** Posts a job to a worker; `CONTROL.job` = 0 tells it to read the port. */
  private post(pooled: PooledWorker, job: ConvJob | SimdJob): void {
    pooled.port.postMessage(job);
    pooled.posted += 1;
    Atomics.store(pooled.flags, CONTROL.job, 0);
  }

  /** Messages posted to the workers so far (for tests). */
  get messagesPosted(): number {
    return this.workers.reduce((sum, pooled) => sum + pooled.posted, 0);
  }

  /** Wakes a worker to the job just posted to it. */
  private signal(pooled: PooledWorker, started: { outputOffset: number; outputSize: number }): void {
    pooled.started = started;
    Atomics.store(pooled.flags, CONTROL.state, State.Work);
    Atomics.notify(pooled.flags, CONTROL.state);
  }

  wait(): Float32Array[] {
    const outputs: Float32Array[] = [];
    const errors: string[] = [];
    for (const pooled of this.workers) {
      if (pooled.started === undefined) continue;
      let state = Atomics.load(pooled.flags, CONTROL.state);
      while (state === State.Work) {
        // A worker that died outright can never answer: give up rather than block forever.
        if (Atomics.wait(pooled.flags, CONTROL.state, State.Work, workerTimeoutMs) === 'timed-out') {
          this.broken = `a convolution worker did not answer within ${workerTimeoutMs / 1000} s`;
          throw new Error(`@regstack/backend: ${this.broken}; call useBackend again to start new workers`);
        }
        state = Atomics.load(pooled.flags, CONTROL.state);
      }
      if (state === State.Failed) {
        const message = pooled.receive(pooled.port)?.message as { error?: string } | undefined;
        errors.push(message?.error ?? 'unknown error');
      }
      const { outputOffset, outputSize } = pooled.started;
      outputs.push(outputSize === 0 ? new Float32Array(0) : new Float32Array(pooled.buffer!, outputOffset * 4, outputSize));
      pooled.started = undefined;
      Atomics.store(pooled.flags, CONTROL.state, State.Idle);
    }
    if (errors.length > 0) throw new Error(`@regstack/backend: a convolution worker failed: ${errors.join('; ')}`);
    return outputs;
  }

  async close(): Promise<void> {
    for (const pooled of this.workers) {
      Atomics.store(pooled.flags, CONTROL.state, State.Stop);
      Atomics.notify(pooled.flags, CONTROL.state);
    }
    await Promise.all(this.workers.map((pooled) => pooled.worker.terminate()));
    this.workers.length = 0;
  }
}

/** A pool set aside by {@link stopConvPool}: its workers stay alive, warm, for a later start of the same size. */
let parked: WorkerConvPool | undefined;

/**
 * Makes the convolution kernels share their batches with `workers` worker threads: the parked pool
 * if it has that many, else new ones (a parked pool of another size is closed).
 *
 * @param workers Worker threads besides the main one (≥ 1).
 */
export async function startConvPool(workers: number): Promise<void> {
  await stopConvPool();
  if (parked !== undefined && parked.size === workers && parked.usable) {
    setConvPool(parked);
    parked = undefined;
    return;
  }
  await parked?.close();
  parked = undefined;
  const node = await nodeModules();
  const started = await Promise.all(Array.from({ length: workers }, () => startWorker(node)));
  setConvPool(new WorkerConvPool(started));
}

/**
 * The kernels run on the main thread alone again. The workers are parked (alive and idle, holding
 * their wasm memory) for a later {@link startConvPool} of the same size, or ended with `terminate`.
 */
export async function stopConvPool(options: { terminate?: boolean } = {}): Promise<void> {
  const previous = setConvPool(undefined) as WorkerConvPool | undefined;
  if (previous !== undefined) {
    await parked?.close();
    parked = previous;
  }
  if (options.terminate) {
    await parked?.close();
    parked = undefined;
  }
}
