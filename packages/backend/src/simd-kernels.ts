/**
 * This thread's instance of the direct SIMD kernels (simd-kernel-code.ts) and the memory they run on,
 * and the sharing of one kernel call's batch with the convolution worker threads.
 *
 * The memory is a shared WebAssembly memory where the engine allows one (Node; browsers with
 * cross-origin isolation): the main thread copies a call's inputs into it once, each worker runs the
 * same kernels on its share of the images in place, and nothing is copied back and forth between
 * threads. Without shared memory the kernels run on the main thread alone.
 */
import { CHANNEL_BLOCK, POSITION_BLOCK, convolutionKernel, filterGradientKernel } from './simd-kernel-code.js';
import { encodeModule, type FunctionBody } from './wasm-module.js';
import { batchShares, poolFor, whilePoolBusy, type ConvPool } from './parallel-conv.js';
import type { SimdGeometry, SimdPlan } from './conv-protocol.js';

export type Kernel = (...args: number[]) => void;

/** The kernels of one thread, on `memory`. */
export interface SimdKernels {
  memory: WebAssembly.Memory;
  /** Whether `memory` is shared: worker threads can run kernels on it. */
  shared: boolean;
  /** Whether they multiply-add with relaxed SIMD's `relaxed_madd` (see {@link setFusedMultiplyAdd}). */
  fused: boolean;
  /** filter[inputs − 1][vectors − 1]. */
  filter: Kernel[][];
  /** convolution[positions − 1][vectors − 1]. */
  convolution: Kernel[][];
}

/** 4 GiB, wasm32's whole address space: reserved, not committed; a call that needs more falls back. */
const MAXIMUM_PAGES = 65536;

function moduleBytes(shared: boolean, fused: boolean): Uint8Array<ArrayBuffer> {
  const functions: Array<{ name: string; body: FunctionBody }> = [];
  for (let inputs = 1; inputs <= CHANNEL_BLOCK; inputs++) {
    for (const vectors of [1, 2]) functions.push({ name: `f${inputs}v${vectors}`, body: filterGradientKernel(inputs, vectors, fused) });
  }
  for (let positions = 1; positions <= POSITION_BLOCK; positions++) {
    for (const vectors of [1, 2]) functions.push({ name: `c${positions}v${vectors}`, body: convolutionKernel(positions, vectors, fused) });
  }
  return encodeModule(functions, { initial: 1, maximum: MAXIMUM_PAGES, shared });
}

const compiled = new Map<string, WebAssembly.Module>();

function kernelsOf(exports: WebAssembly.Exports, memory: WebAssembly.Memory, shared: boolean, fused: boolean): SimdKernels {
  const functions = exports as Record<string, Kernel>;
  const family = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => [1, 2].map((vectors) => functions[`${prefix}${i + 1}v${vectors}`]!));
  return { memory, shared, fused, filter: family('f', CHANNEL_BLOCK), convolution: family('c', POSITION_BLOCK) };
}

/** Compiles (once per variant and thread) and instantiates synchronously: fine in Node and in workers. */
function instantiateOn(memory: WebAssembly.Memory, shared: boolean, fused: boolean): SimdKernels {
  const key = `${shared}/${fused}`;
  let module = compiled.get(key);
  if (module === undefined) {
    module = new WebAssembly.Module(moduleBytes(shared, fused));
    compiled.set(key, module);
  }
  return kernelsOf(new WebAssembly.Instance(module, { env: { memory } }).exports, memory, shared, fused);
}

/** Whether this engine has relaxed SIMD's fused multiply-add (Node ≥ 22, Chrome ≥ 114; not Node 20 without a flag). */
function relaxedSimd(): boolean {
  return typeof WebAssembly !== 'undefined' && WebAssembly.validate(moduleBytes(false, true));
}

let fusedSetting: boolean | 'auto' = 'auto';
// undefined: not tried yet; null: this engine has no WebAssembly SIMD.
let mine: SimdKernels | null | undefined;

/**
 * Whether the kernels multiply-add with relaxed SIMD's `f32x4.relaxed_madd` (one fused, or at least
 * unordered, multiply-add: ≈20% faster where the CPU has FMA, and rounded once instead of twice) or
 * with `f32x4.mul` then `f32x4.add`. `'auto'` (the default) uses it where the engine has relaxed SIMD.
 * The next kernel call compiles the kernels again. Returns the previous setting.
 */
export function setFusedMultiplyAdd(setting: boolean | 'auto'): boolean | 'auto' {
  const previous = fusedSetting;
  fusedSetting = setting;
  mine = undefined;
  return previous;
}

/** The variants to try, best first: shared memory (for worker threads) where the engine allows it. */
function variants(): Array<{ shared: boolean; fused: boolean }> {
  const fused = fusedSetting === 'auto' ? relaxedSimd() : fusedSetting;
  return [true, false].map((shared) => ({ shared, fused })).filter(({ shared }) => WebAssembly.validate(moduleBytes(shared, fused)));
}

/**
 * This thread's kernels (compiled on first use), or null where WebAssembly SIMD is unavailable. A
 * browser's main thread refuses to compile modules over 4 KB synchronously: there, `useBackend` has
 * prepared them with {@link prepareSimdKernels}, and without that the callers fall back.
 */
export function simdKernels(): SimdKernels | null {
  if (mine !== undefined) return mine;
  mine = null;
  if (typeof WebAssembly === 'undefined') return mine;
  for (const { shared, fused } of variants()) {
    try {
      mine = instantiateOn(new WebAssembly.Memory({ initial: 1, maximum: MAXIMUM_PAGES, shared }), shared, fused);
      return mine;
    } catch {
      // No shared memory here (a browser page without cross-origin isolation), or no synchronous
      // compiles (a browser's main thread): try the next.
    }
  }
  return mine;
}

/**
 * Compiles and instantiates this thread's kernels without blocking, as browsers require on their main
 * thread; `useBackend('wasm' | 'cpu')` awaits it. Resolves to whether they are available.
 */
export async function prepareSimdKernels(): Promise<boolean> {
  // null here may be a synchronous compile a browser refused: the asynchronous one can still work.
  if (mine) return true;
  if (typeof WebAssembly === 'undefined') return simdKernels() !== null;
  for (const { shared, fused } of variants()) {
    try {
      const key = `${shared}/${fused}`;
      const module = compiled.get(key) ?? (await WebAssembly.compile(moduleBytes(shared, fused)));
      compiled.set(key, module);
      const memory = new WebAssembly.Memory({ initial: 1, maximum: MAXIMUM_PAGES, shared });
      const instance = await WebAssembly.instantiate(module, { env: { memory } });
      mine ??= kernelsOf(instance.exports, memory, shared, fused);
      return true;
    } catch {
      // Try the next variant (see simdKernels).
    }
  }
  return simdKernels() !== null;
}

let attached: SimdKernels | undefined;

/**
 * In a worker thread: kernels on the main thread's shared memory, for the shares it hands over (kept
 * apart from {@link simdKernels}, which the worker's own kernel calls use).
 */
export function attachSimdKernels(memory: WebAssembly.Memory, fused: boolean): SimdKernels {
  if (attached?.memory !== memory || attached.fused !== fused) attached = instantiateOn(memory, true, fused);
  return attached;
}

/**
 * This thread's kernels for a call of `caller`, after checking that the output channels come in whole
 * vectors of 4 and that each array holds the values of its shape (the input x, the filter, or the
 * output); the errors name the caller and the field.
 */
export function kernelsFor(
  caller: string,
  geometry: SimdGeometry,
  arrays: ReadonlyArray<readonly [field: string, values: Float32Array, shape: 'input' | 'filter' | 'output']>,
): SimdKernels {
  const kernels = simdKernels();
  if (kernels === null) throw new Error(`${caller}: this engine has no WebAssembly SIMD`);
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = geometry;
  if (outChannels % 4 !== 0) throw new RangeError(`${caller}: outChannels must be a multiple of 4, got ${outChannels}`);
  const sizes = {
    input: batchSize * inHeight * inWidth * inChannels,
    filter: filterHeight * filterWidth * inChannels * outChannels,
    output: batchSize * outHeight * outWidth * outChannels,
  };
  for (const [field, values, shape] of arrays) {
    if (values.length !== sizes[shape]) throw new RangeError(`${caller}: ${field} has ${values.length} values, expected ${sizes[shape]}`);
  }
  return kernels;
}

/** Whether a call needing `bytes` of memory fits a wasm32 memory. */
export function fitsMemory(bytes: number): boolean {
  return bytes <= MAXIMUM_PAGES * 65536;
}

/**
 * The memory as floats, grown to at least `bytes`; undefined when that is more than a wasm32 memory
 * holds (the caller falls back to another formulation).
 */
export function reserve(kernels: SimdKernels, bytes: number): Float32Array | undefined {
  const pages = Math.ceil(bytes / 65536) - kernels.memory.buffer.byteLength / 65536;
  if (pages > 0) {
    try {
      kernels.memory.grow(pages);
    } catch {
      return undefined;
    }
  }
  return new Float32Array(kernels.memory.buffer);
}

/** Bytes of x and of the second input a chunk of the batch may hold: small enough to stay in a core's L2 cache across the blocks. */
let chunkBytes = 128 * 1024;

/** For benchmarks and tests: the chunk size in bytes (≥ 1: down to one row at a time). Returns the previous value. */
export function setSimdChunkBytes(bytes: number): number {
  const previous = chunkBytes;
  chunkBytes = bytes;
  return previous;
}

/** Rows and columns of x zero-padded (or cropped) to exactly what the windows reach: no bounds checks in the loops. */
export function paddedExtent(geometry: SimdGeometry): { paddedHeight: number; paddedWidth: number } {
  return {
    paddedHeight: (geometry.outHeight - 1) * geometry.strideHeight + geometry.filterHeight,
    paddedWidth: (geometry.outWidth - 1) * geometry.strideWidth + geometry.filterWidth,
  };
}

/** Floats rounded up to whole 16-byte vectors. */
export const alignFloats = (floats: number): number => Math.ceil(floats / 4) * 4;

/**
 * How a call's batch is cut into chunks: whole images when one image's x and second input (dy, or y for
 * the forward convolution) fit the budget, else rows of one image.
 *
 * @param secondFloatsPerRow Floats of the second input per output row.
 */
export function chunking(geometry: SimdGeometry, secondFloatsPerRow: number): { imagesPerChunk: number; rowsPerChunk: number } {
  const { paddedHeight, paddedWidth } = paddedExtent(geometry);
  const rowFloats = paddedWidth * geometry.inChannels;
  const imageBytes = (paddedHeight * rowFloats + geometry.outHeight * secondFloatsPerRow) * 4;
  if (imageBytes <= chunkBytes) return { imagesPerChunk: Math.max(1, Math.floor(chunkBytes / imageBytes)), rowsPerChunk: geometry.outHeight };
  const rowBytes = (geometry.strideHeight * rowFloats + secondFloatsPerRow) * 4;
  return { imagesPerChunk: 1, rowsPerChunk: Math.max(1, Math.min(geometry.outHeight, Math.floor(chunkBytes / rowBytes))) };
}

/** Copies images [first, end) of x into the plan's zero-padded x. */
export function copyPaddedImages(heap: Float32Array, x: Float32Array, plan: SimdPlan, first: number, end: number): void {
  const { inHeight, inWidth, inChannels, padTop, padLeft } = plan.geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(plan.geometry);
  const rowFloats = paddedWidth * inChannels;
  const copiedColumns = Math.max(0, Math.min(inWidth, paddedWidth - padLeft));
  for (let image = first; image < end; image++) {
    for (let row = 0; row < paddedHeight; row++) {
      const target = plan.xStart + (image * paddedHeight + row) * rowFloats;
      const sourceRow = row - padTop;
      if (sourceRow < 0 || sourceRow >= inHeight || copiedColumns === 0) {
        heap.fill(0, target, target + rowFloats);
        continue;
      }
      const source = (image * inHeight + sourceRow) * inWidth * inChannels;
      heap.fill(0, target, target + padLeft * inChannels);
      heap.set(x.subarray(source, source + copiedColumns * inChannels), target + padLeft * inChannels);
      heap.fill(0, target + (padLeft + copiedColumns) * inChannels, target + rowFloats);
    }
  }
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
 * Runs a planned call on `threads` threads: each worker's images are copied in and its share started,
 * then this thread copies and runs its own share (the first images) while they work.
 *
 * @param copyImages Copies the inputs of images [first, end) into the memory (this thread).
 * @param runShare Runs images [first, end) into output region `region` on this thread.
 * @returns The output regions written: region i holds share i.
 */
export function runShared(
  kernels: SimdKernels,
  plan: SimdPlan,
  threads: number,
  copyImages: (first: number, end: number) => void,
  runShare: (first: number, end: number, region: number) => void,
): number {
  const batch = plan.geometry.batchSize;
  const pool = threads > 1 ? poolFor(batch, Number.POSITIVE_INFINITY) : undefined;
  if (pool === undefined) {
    copyImages(0, batch);
    runShare(0, batch, 0);
    return 1;
  }
  const shares = batchShares(batch, Math.min(threads, pool.size + 1));
  whilePoolBusy(() => runOnPool(pool, kernels, plan, shares, copyImages, runShare));
  return shares.length;
}

function runOnPool(
  pool: ConvPool,
  kernels: SimdKernels,
  plan: SimdPlan,
  shares: Array<[number, number]>,
  copyImages: (first: number, end: number) => void,
  runShare: (first: number, end: number, region: number) => void,
): void {
  for (const [first, end] of shares.slice(1)) copyImages(first, end);
  const { fused, memory } = kernels;
  pool.start(shares.slice(1).map(([firstImage, endImage], index) => ({ kind: 'simd', plan, firstImage, endImage, region: index + 1, fused, memory })));
  // A worker that failed or timed out may still be running on this memory: later calls get a new one.
  const waitForWorkers = () => {
    try {
      pool.wait();
    } catch (error) {
      if (mine === kernels) mine = undefined;
      throw error;
    }
  };
  try {
    const [first, end] = shares[0]!;
    copyImages(first, end);
    runShare(first, end, 0);
  } catch (error) {
    // Collect the workers all the same; this thread's error is the one to report.
    try {
      waitForWorkers();
    } catch {
      // reported through the error above
    }
    throw error;
  }
  waitForWorkers();
}
