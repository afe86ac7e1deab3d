/**
 * A worker thread of the convolution pool (conv-pool.ts): its own TF.js on wasm, running the share of
 * a batch that the main thread hands it through shared memory. Started by `useBackend('wasm',
 * { threads })` in Node; not imported by anything else.
 *
 * Protocol (one Int32Array over `workerData.control`): the main thread posts a job on `workerData.port`,
 * sets control[STATE] to WORK and notifies; the worker reads the job with `receiveMessageOnPort` (or,
 * for a SIMD job it was sent before, takes it by the id in control[JOB]), copies
 * its inputs out of the shared data buffer, computes, writes the result back into it, and sets DONE (or
 * FAILED, with the error posted on the port). A `simd` job instead names a direct SIMD kernel call whose
 * data the main thread laid out in the kernels' shared memory: the worker claims pieces of its batch and
 * runs them there, as the main thread does.
 */
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import { conv2dFilterGradient, conv2dInputGradient } from '../ops/conv-gradients.js';
import { CONTROL, SIMD_JOB_CACHE, State, type ConvJob, type SimdJob, type SimdPlan } from './conv-protocol.js';
import { runClaimedPieces } from './claims.js';
import { runConvolutionShare } from '../simd/convolution.js';
import { runFilterGradientShare } from '../simd/filter-gradient.js';
import { runWinogradShare } from '../simd/winograd.js';
import { runWinogradFilterGradientShare } from '../simd/winograd-filter-gradient.js';
import { runSubPixelShare } from '../simd/sub-pixel.js';
import { attachSimdKernels, type SimdKernels } from '../simd/instance.js';
import type { WasmHeapBackend } from '../typed-array-backend.js';

const { control, port } = workerData as { control: SharedArrayBuffer; port: MessagePort };
const flags = new Int32Array(control);
let shared: Float32Array<ArrayBufferLike> = new Float32Array(0);
/** The direct SIMD kernels' shared memory, as the first SIMD share brought it. */
let simdMemory: WebAssembly.Memory | undefined;
/** SIMD jobs by id, oldest first (see `SimdJob.id`). */
const knownJobs = new Map<number, SimdJob>();

/** The job to run now: posted on the port (`CONTROL.job` = 0), or one kept from before by its id. */
function nextJob(): ConvJob | SimdJob {
  const id = Atomics.load(flags, CONTROL.job);
  if (id !== 0) {
    const job = knownJobs.get(id);
    if (job === undefined) throw new Error(`conv worker: no SIMD job ${id} kept`);
    return job;
  }
  const received = receiveMessageOnPort(port);
  if (received === undefined) throw new Error('conv worker: woken without a job');
  const job = received.message as ConvJob | SimdJob;
  if (job.kind === 'simd' && job.id !== undefined) {
    if (knownJobs.size >= SIMD_JOB_CACHE) knownJobs.delete(knownJobs.keys().next().value!);
    // The memory came with this message only; the kept job runs on whatever memory is current then.
    const { memory: _memory, ...kept } = job;
    knownJobs.set(job.id, kept);
  }
  return job;
}

/** Each plan family's share, as the main thread runs it. */
const SHARE_RUNNERS: Record<SimdPlan['family'], (kernels: SimdKernels, plan: SimdPlan, first: number, end: number, region: number) => void> = {
  filter: runFilterGradientShare,
  forward: runConvolutionShare,
  winograd: runWinogradShare,
  'winograd-filter': runWinogradFilterGradientShare,
  'sub-pixel': runSubPixelShare,
};

/** Runs a share of a direct SIMD kernel call on the main thread's memory, in place. */
function runSimd(job: SimdJob): void {
  simdMemory = job.memory ?? simdMemory;
  if (simdMemory === undefined) throw new Error('conv worker: a SIMD share came before the shared memory');
  const kernels = attachSimdKernels(simdMemory, job.fused);
  const run = SHARE_RUNNERS[job.plan.family];
  if (run === undefined) throw new Error(`conv worker: unknown SIMD plan family '${String(job.plan.family)}'`);
  runClaimedPieces(new Int32Array(job.claims), job.pieces, (first, end, region) => run(kernels, job.plan, first, end, region));
}

function tensorAt(offset: number, shape: number[]): tf.Tensor4D {
  return tf.tensor4d(shared.subarray(offset, offset + tf.util.sizeFromShape(shape)), shape as [number, number, number, number]);
}

function compute(job: ConvJob): tf.Tensor {
  const [first, second] = job.inputs;
  const a = tensorAt(first!.offset, first!.shape);
  const b = tensorAt(second!.offset, second!.shape);
  const { strides, pad, dimRoundingMode, dilations } = job.attributes;
  switch (job.kind) {
    case 'forward':
      return tf.conv2d(a, b, strides, pad, 'NHWC', dilations ?? 1, dimRoundingMode);
    case 'filter':
      return conv2dFilterGradient(a, b, job.outputShape as [number, number, number, number], { strides, pad, dimRoundingMode });
    case 'input':
      return conv2dInputGradient(job.outputShape as [number, number, number, number], a, b, { strides, pad, dimRoundingMode });
    default:
      throw new Error(`conv worker: unknown job kind '${String((job as { kind: unknown }).kind)}'`);
  }
}

async function main(): Promise<void> {
  await tf.setBackend('wasm');
  tf.env().set('PROD', true);
  Atomics.store(flags, CONTROL.ready, 1);
  Atomics.notify(flags, CONTROL.ready);
  for (;;) {
    let state = Atomics.load(flags, CONTROL.state);
    while (state !== State.Work && state !== State.Stop) {
      Atomics.wait(flags, CONTROL.state, state);
      state = Atomics.load(flags, CONTROL.state);
    }
    if (state === State.Stop) return;
    try {
      const job = nextJob();
      if (job.kind === 'simd') {
        runSimd(job);
      } else {
        if (job.buffer !== undefined) shared = new Float32Array(job.buffer);
        tf.tidy(() => {
          const result = compute(job);
          // The result's values in place on this worker's wasm heap, copied once into shared memory.
          shared.set((tf.backend() as unknown as WasmHeapBackend).typedArrayFromHeap(result), job.outputOffset);
        });
      }
      Atomics.store(flags, CONTROL.state, State.Done);
    } catch (error) {
      port.postMessage({ error: error instanceof Error ? error.message : String(error) });
      Atomics.store(flags, CONTROL.state, State.Failed);
    }
    Atomics.notify(flags, CONTROL.state);
  }
}

void main();
