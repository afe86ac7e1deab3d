/**
 * Splitting a convolution's batch between the main thread and a pool of workers (conv-pool.ts, Node
 * only). Here is what the kernels need, with no Node imports: the pool's interface, where the active
 * pool is kept, how one forward, filter-gradient or input-gradient convolution is shared out through
 * copies (the shipped kernels and the tf-op forms), and how a direct SIMD kernel call is shared out on
 * the kernels' shared memory, in place.
 */
import * as tf from '@tensorflow/tfjs-core';
import { CLAIMS, CLAIM_SLOTS, COPY_ABORTED, type ConvJob, type SimdJob, type SimdPlan } from './conv-protocol.js';
import { asTensor, isWasmHeapBackend, type WasmHeapBackend } from '../typed-array-backend.js';
import { forgetSimdKernels, type SimdKernels } from '../simd/instance.js';
import { runClaimedPieces } from './claims.js';

/** One worker's share of a convolution, with its inputs' values (copied into shared memory on start). */
export interface ConvShare {
  kind: ConvJob['kind'];
  inputs: [{ values: Float32Array; shape: number[] }, { values: Float32Array; shape: number[] }];
  attributes: ConvJob['attributes'];
  outputShape: number[];
  outputSize: number;
}

/** One worker's share of a direct SIMD kernel call: its images, run on the shared memory in place. */
export type SimdShare = SimdJob & { memory: WebAssembly.Memory };

/** Worker threads that compute shares of convolutions. */
export interface ConvPool {
  /** Number of workers. */
  readonly size: number;
  /** Starts share i on worker i (copying a {@link ConvShare}'s inputs first); returns at once. */
  start(shares: Array<ConvShare | SimdShare>): void;
  /** Blocks until the started shares are done; their outputs, valid until the next `start`. */
  wait(): Float32Array[];
  close(): Promise<void>;
}

// On the global object (as TF.js keeps its registries), so that every copy of this package, and the
// pool module loaded apart from the main bundle, sees the same pool.
const holder = ((globalThis as Record<symbol, unknown>)[Symbol.for('@regstack/backend:conv-pool')] ??= { pool: undefined, busy: false }) as {
  pool: ConvPool | undefined;
  /** A shared convolution is under way: the convolutions its main-thread share runs stay on this thread. */
  busy: boolean;
};

/** Makes `pool` the active one (undefined: none); returns the previous one. */
export function setConvPool(pool: ConvPool | undefined): ConvPool | undefined {
  const previous = holder.pool;
  holder.pool = pool;
  return previous;
}

/** Threads that run convolutions now: 1 + the active pool's workers. */
export function convolutionThreads(): number {
  return 1 + (holder.pool?.size ?? 0);
}

/**
 * Multiply-adds below which a convolution stays on the main thread: copying the shares and waking the
 * workers costs about what a few million multiply-adds do.
 */
let minimumWork = 2 ** 23;

/** For tests: the work below which convolutions are not shared (multiply-adds). Returns the previous value. */
export function setMinimumParallelWork(multiplyAdds: number): number {
  const previous = minimumWork;
  minimumWork = multiplyAdds;
  return previous;
}

/**
 * The active pool, when a call over `batch` images of `multiplyAdds` multiply-adds is worth sharing
 * now: a pool is active and not already running a call, the batch has 2 images or more, and the work
 * is at least the minimum.
 */
export function poolFor(batch: number, multiplyAdds: number): ConvPool | undefined {
  const pool = holder.pool;
  if (pool === undefined || holder.busy || batch < 2 || multiplyAdds < minimumWork) return undefined;
  return pool;
}

/** Runs `body` with the pool marked busy, so that the kernels it calls on this thread do not share. */
export function whilePoolBusy<T>(body: () => T): T {
  holder.busy = true;
  try {
    return body();
  } finally {
    holder.busy = false;
  }
}

/** Batch ranges [start, end) for the main thread (first) and each worker, as even as integers allow. */
export function batchShares(batch: number, threads: number): Array<[number, number]> {
  const shares: Array<[number, number]> = [];
  for (let index = 0; index < threads; index++) {
    shares.push([Math.floor((index * batch) / threads), Math.floor(((index + 1) * batch) / threads)]);
  }
  return shares.filter(([start, end]) => end > start);
}

type Rank4 = [number, number, number, number];

/** Multiply-adds of a convolution: every output value sums filter height × width × input channels products. */
export function convolutionWork(outputShape: readonly number[], filterShape: readonly number[]): number {
  return tf.util.sizeFromShape([...outputShape]) * filterShape[0]! * filterShape[1]! * filterShape[2]!;
}

/**
 * A convolution whose batch is shared between the main thread and the pool. `kind` says which:
 * `forward` (a = x, b = filter → y), `filter` (a = x, b = dy → dW, the shares summed) or `input`
 * (a = dy, b = filter → dx). `local` computes a share on the main thread from the sliced `a` (and
 * `b`, sliced too for `filter`). Returns undefined when the pool should not be used: none is active, the
 * backend is not wasm, the layout is not NHWC, the batch is 1, or the work is small.
 */
export function shareConvolution(
  kind: ConvJob['kind'],
  backend: unknown,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  attributes: ConvJob['attributes'] & { dataFormat?: string },
  outputShape: Rank4,
  multiplyAdds: number,
  local: (a: tf.Tensor4D, b: tf.Tensor4D, outputShape: Rank4) => tf.Tensor,
): tf.TensorInfo | undefined {
  const pool = poolFor(a.shape[0]!, multiplyAdds);
  if (pool === undefined || !isWasmHeapBackend(backend) || (attributes.dataFormat ?? 'NHWC') !== 'NHWC') return undefined;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return undefined;
  const { dataFormat: _layout, ...jobAttributes } = attributes;
  return whilePoolBusy(() => shareOut(pool, kind, backend, a, b, jobAttributes, outputShape, local));
}

/** {@link shareConvolution} once it is decided: the workers' shares started, the main one computed, the results gathered. */
function shareOut(
  pool: ConvPool,
  kind: ConvJob['kind'],
  backend: WasmHeapBackend,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  jobAttributes: ConvJob['attributes'],
  outputShape: Rank4,
  local: (a: tf.Tensor4D, b: tf.Tensor4D, outputShape: Rank4) => tf.Tensor,
): tf.TensorInfo {
  const batch = a.shape[0]!;
  const shares = batchShares(batch, Math.min(batch, pool.size + 1));
  const perSampleA = tf.util.sizeFromShape(a.shape) / batch;
  const perSampleB = kind === 'filter' ? tf.util.sizeFromShape(b.shape) / batch : 0;
  const perSampleOutput = kind === 'filter' ? 0 : tf.util.sizeFromShape(outputShape) / batch;
  const shareShape = (shape: readonly number[], count: number): Rank4 => [count, shape[1]!, shape[2]!, shape[3]!];
  // Views of the inputs are taken now and copied into shared memory by start(), before anything on
  // this thread allocates (an allocation can grow the wasm heap and detach them).
  const aValues = backend.typedArrayFromHeap(a) as Float32Array;
  const bValues = backend.typedArrayFromHeap(b) as Float32Array;
  pool.start(
    shares.slice(1).map(([start, end]) => {
      const count = end - start;
      const shareOutput = kind === 'filter' ? outputShape : shareShape(outputShape, count);
      return {
        kind,
        inputs: [
          { values: aValues.subarray(start * perSampleA, end * perSampleA), shape: shareShape(a.shape, count) },
          kind === 'filter'
            ? { values: bValues.subarray(start * perSampleB, end * perSampleB), shape: shareShape(b.shape, count) }
            : { values: bValues, shape: [...b.shape] },
        ],
        attributes: jobAttributes,
        outputShape: shareOutput,
        outputSize: tf.util.sizeFromShape(shareOutput),
      } satisfies ConvShare;
    }),
  );

  let mine: tf.Tensor;
  try {
    const [, mainEnd] = shares[0]!;
    mine = tf.tidy(() => {
      const aShare = tf.slice(asTensor(a), [0, 0, 0, 0], shareShape(a.shape, mainEnd));
      const bShare = kind === 'filter' ? tf.slice(asTensor(b), [0, 0, 0, 0], shareShape(b.shape, mainEnd)) : asTensor(b);
      return local(aShare, bShare, kind === 'filter' ? outputShape : shareShape(outputShape, mainEnd));
    });
  } catch (error) {
    // Collect the workers all the same, so that none is left running into the next call; this
    // thread's error is the one to report.
    try {
      pool.wait();
    } catch {
      // reported through the error above
    }
    throw error;
  }
  let workerOutputs: Float32Array[];
  try {
    workerOutputs = pool.wait();
  } catch (error) {
    mine.dispose();
    throw error;
  }
  const output = backend.makeOutput(outputShape, 'float32');
  const values = backend.typedArrayFromHeap(output) as Float32Array;
  const mineValues = backend.typedArrayFromHeap(mine) as Float32Array;
  if (kind === 'filter') {
    values.set(mineValues);
    for (const share of workerOutputs) for (let index = 0; index < values.length; index++) values[index]! += share[index]!;
  } else {
    values.set(mineValues, 0);
    for (const [index, share] of workerOutputs.entries()) values.set(share, shares[index + 1]![0] * perSampleOutput);
  }
  mine.dispose();
  return output;
}

/**
 * Threads that will run a call of `batch` images and `multiplyAdds` multiply-adds: 1, or 1 + the
 * convolution pool's workers (capped at one image each) when the memory is shared, a pool is active
 * and idle, and the work is large enough to share.
 */
export function simdThreads(kernels: SimdKernels, batch: number, multiplyAdds: number): number {
  const pool = kernels.shared ? poolFor(batch, multiplyAdds) : undefined;
  return pool === undefined ? 1 : Math.min(batch, pool.size + 1);
}

/**
 * Pieces per thread of a shared call. The threads claim pieces rather than being handed one share each,
 * so that a thread that is free takes a piece another has not started (a worker wakes a fraction of a
 * millisecond after the main thread starts; on a machine shared with other processes a thread is often
 * descheduled for milliseconds). One piece per thread by default: at 2 and 4 pieces per thread the
 * recipe's step (ResNet-18 width 16, batch 32) cost 1.01× and 1.07–1.09× the CPU time (more, smaller
 * kernel calls; one filter-gradient partial sum per piece to add up), and on the loaded 2-core machine
 * the wall-time gain could not be told from noise (tools/bench/README.md).
 */
let piecesPerThread = 1;

/**
 * For benchmarks and tests: pieces per thread of a shared direct SIMD call (1: one even share each, as
 * before pieces were claimed). Returns the previous value.
 */
export function setPiecesPerThread(pieces: number): number {
  if (!Number.isInteger(pieces) || pieces < 1) throw new RangeError(`setPiecesPerThread: expected a positive integer, got ${pieces}`);
  const previous = piecesPerThread;
  piecesPerThread = pieces;
  return previous;
}

/**
 * The pieces a call of `batch` images on `threads` threads is cut into: image ranges [first, end) in
 * batch order, as even as integers allow. Piece i writes output region i (filter gradients: one
 * partial sum per piece, added up in piece order, so the result does not depend on which thread ran
 * which piece).
 */
export function simdPieces(batch: number, threads: number): Array<[number, number]> {
  // At most 256: the filter gradient's memory check (simdFilterGradientSupports) counts that many regions.
  return batchShares(batch, threads <= 1 ? 1 : Math.min(batch, piecesPerThread * threads, 256));
}

/** The claims buffer the threads of a shared call take pieces from (one call runs at a time; {@link CLAIMS}). */
let claimsBuffer: SharedArrayBuffer | undefined;

/**
 * Whether a shared call copies its images in while the workers run (true, the default), or all of them
 * before it starts the workers (false, as before issue 18's change; kept for benchmarks to compare in one
 * process). Either way piece i writes region i, so the results are the same.
 */
let copyOverlap = true;

/** For benchmarks and tests: whether shared calls overlap the copies with the workers. Returns the previous value. */
export function setCopyOverlap(overlap: boolean): boolean {
  const previous = copyOverlap;
  copyOverlap = overlap;
  return previous;
}

/** For tests: runs before each piece's images are copied in on a shared call (to slow the copy, or fail it). */
let beforePieceCopy: ((piece: number) => void) | undefined;

/** For tests: sets the hook run before each piece of a shared call is copied in. Returns the previous one. */
export function setPieceCopyHook(hook: ((piece: number) => void) | undefined): ((piece: number) => void) | undefined {
  const previous = beforePieceCopy;
  beforePieceCopy = hook;
  return previous;
}

/**
 * Runs a planned call cut into `pieces` on `threads` threads. Alone, this thread copies every image in
 * and runs the pieces. Shared, it copies the first piece's images, starts the workers, and copies the
 * rest in piece order while they run, publishing how many pieces are copied; a thread that claims a
 * piece not copied yet waits for it (claims.ts). The images are not in a memory the workers can read
 * until this thread copies them (TF.js's heap is its own), and copying all of them before the workers
 * started left the workers idle for that long (15 ms of the recipe's 178 ms step at 2 threads). Then
 * this thread claims pieces like the workers, and finishes the pieces it ran (`finishPiece`: copies
 * their outputs out) while the workers finish theirs.
 *
 * @param copyImages Copies the inputs of images [first, end) into the memory (this thread).
 * @param runShare Runs images [first, end) into output region `region` on this thread.
 * @param finishPiece When given: runs on this thread once piece `region` (images [first, end)) is
 *   computed, once for each piece, in any order (each piece has its own output).
 * @returns The output regions written: region i holds piece i.
 */
export function runShared(
  kernels: SimdKernels,
  plan: SimdPlan,
  threads: number,
  pieces: Array<[number, number]>,
  copyImages: (first: number, end: number) => void,
  runShare: (first: number, end: number, region: number) => void,
  finishPiece?: (first: number, end: number, region: number) => void,
): number {
  const batch = plan.geometry.batchSize;
  const pool = threads > 1 && pieces.length > 1 ? poolFor(batch, Number.POSITIVE_INFINITY) : undefined;
  if (pool === undefined) {
    copyImages(0, batch);
    for (const [index, [first, end]] of pieces.entries()) runShare(first, end, index);
    if (finishPiece !== undefined) for (const [index, [first, end]] of pieces.entries()) finishPiece(first, end, index);
    return pieces.length;
  }
  const workers = Math.min(threads - 1, pool.size, pieces.length - 1);
  whilePoolBusy(() => runOnPool(pool, kernels, plan, workers, pieces, copyImages, runShare, finishPiece));
  return pieces.length;
}

function runOnPool(
  pool: ConvPool,
  kernels: SimdKernels,
  plan: SimdPlan,
  workers: number,
  pieces: Array<[number, number]>,
  copyImages: (first: number, end: number) => void,
  runShare: (first: number, end: number, region: number) => void,
  finishPiece: ((first: number, end: number, region: number) => void) | undefined,
): void {
  claimsBuffer ??= new SharedArrayBuffer(CLAIM_SLOTS * Int32Array.BYTES_PER_ELEMENT);
  const claims = new Int32Array(claimsBuffer);
  // Both counters start over on every call: a worker of this call must not take the last call's count.
  Atomics.store(claims, CLAIMS.next, 0);
  Atomics.store(claims, CLAIMS.copied, 0);
  const publish = (copied: number) => {
    Atomics.store(claims, CLAIMS.copied, copied);
    Atomics.notify(claims, CLAIMS.copied);
  };
  const copyPiece = (index: number) => {
    beforePieceCopy?.(index);
    const [first, end] = pieces[index]!;
    copyImages(first, end);
    publish(index + 1);
  };
  const overlap = copyOverlap;
  if (overlap) {
    copyPiece(0);
  } else {
    for (let index = 0; index < pieces.length; index++) copyPiece(index);
  }
  const { fused, memory } = kernels;
  pool.start(Array.from({ length: workers }, () => ({ kind: 'simd', plan, pieces, claims: claimsBuffer!, fused, memory })));
  // A worker that failed or timed out may still be running on this memory: later calls get a new one.
  const waitForWorkers = () => {
    try {
      pool.wait();
    } catch (error) {
      forgetSimdKernels(kernels);
      throw error;
    }
  };
  const mine = new Set<number>();
  try {
    if (overlap) for (let index = 1; index < pieces.length; index++) copyPiece(index);
    runClaimedPieces(claims, pieces, (first, end, region) => {
      runShare(first, end, region);
      mine.add(region);
    });
    // This thread's outputs leave while the workers finish theirs.
    if (overlap && finishPiece !== undefined) for (const index of mine) finishPiece(...pieces[index]!, index);
  } catch (error) {
    // Stop the workers claiming more (and waiting for copies that will not come), collect them all the
    // same; this thread's error is the one to report.
    Atomics.store(claims, CLAIMS.next, pieces.length);
    publish(COPY_ABORTED);
    try {
      waitForWorkers();
    } catch {
      // reported through the error above
    }
    throw error;
  }
  waitForWorkers();
  if (finishPiece === undefined) return;
  for (const [index, [first, end]] of pieces.entries()) if (!overlap || !mine.has(index)) finishPiece(first, end, index);
}
