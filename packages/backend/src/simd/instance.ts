/**
 * This thread's instance of the direct SIMD kernels (kernel-code.ts, encoded by wasm-module.ts): compiled
 * once per variant (shared memory or not, fused multiply-add or not) and instantiated on a memory of
 * their own, or, in a worker thread, on the main thread's shared memory.
 *
 * The memory is a shared WebAssembly memory where the engine allows one (Node; browsers with
 * cross-origin isolation), so that the worker threads (threads/parallel-conv.ts) can run the same
 * kernels on their share of the images in place. Without shared memory the kernels run on the main
 * thread alone.
 */
import { CHANNEL_BLOCK, POSITION_BLOCK, addKernel, convolutionKernel, filterGradientKernel } from './kernel-code.js';
import {
  winogradFilterGradientKernel,
  winogradFilterKernel,
  winogradFlippedFilterKernel,
  winogradGemmKernel,
  winogradGradientKernel,
  winogradInputKernel,
  winogradOutputKernel,
} from './winograd-code.js';
import { encodeModule, type FunctionBody } from './wasm-module.js';
import { MAXIMUM_PAGES } from './memory.js';
import type { SimdGeometry } from '../threads/conv-protocol.js';

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
  /**
   * The Winograd F(2×2, 3×3) kernels (winograd-code.ts); gemm[positions − 1][vectors − 1]. The filter
   * gradient's: `gradient` transforms dy's tiles, `filterGradient` the summed products into dW (its
   * products are the `filter` family's). `flippedFilter` is `filter` reading a forward filter flipped
   * and transposed, for the stride-1 input gradient.
   */
  winograd: { input: Kernel; output: Kernel; filter: Kernel; flippedFilter: Kernel; gemm: Kernel[][]; gradient: Kernel; filterGradient: Kernel };
  /** add(target, source, vectors): `vectors` × 4 floats at byte address `source` added into `target`. */
  add: Kernel;
}


function moduleBytes(shared: boolean, fused: boolean): Uint8Array<ArrayBuffer> {
  const functions: Array<{ name: string; body: FunctionBody }> = [];
  for (let inputs = 1; inputs <= CHANNEL_BLOCK; inputs++) {
    for (const vectors of [1, 2]) functions.push({ name: `f${inputs}v${vectors}`, body: filterGradientKernel(inputs, vectors, fused) });
  }
  for (let positions = 1; positions <= POSITION_BLOCK; positions++) {
    for (const vectors of [1, 2]) functions.push({ name: `c${positions}v${vectors}`, body: convolutionKernel(positions, vectors, fused) });
  }
  for (let positions = 1; positions <= POSITION_BLOCK; positions++) {
    for (const vectors of [1, 2]) functions.push({ name: `g${positions}v${vectors}`, body: winogradGemmKernel(positions, vectors, fused) });
  }
  functions.push({ name: 'wi', body: winogradInputKernel() }, { name: 'wo', body: winogradOutputKernel() }, { name: 'wf', body: winogradFilterKernel() });
  functions.push({ name: 'wt', body: winogradFlippedFilterKernel() });
  functions.push({ name: 'wg', body: winogradGradientKernel() }, { name: 'wd', body: winogradFilterGradientKernel() });
  functions.push({ name: 'ad', body: addKernel() });
  return encodeModule(functions, { initial: 1, maximum: MAXIMUM_PAGES, shared });
}

const compiled = new Map<string, WebAssembly.Module>();

function kernelsOf(exports: WebAssembly.Exports, memory: WebAssembly.Memory, shared: boolean, fused: boolean): SimdKernels {
  const functions = exports as Record<string, Kernel>;
  const family = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => [1, 2].map((vectors) => functions[`${prefix}${i + 1}v${vectors}`]!));
  return {
    memory,
    shared,
    fused,
    filter: family('f', CHANNEL_BLOCK),
    convolution: family('c', POSITION_BLOCK),
    winograd: {
      input: functions.wi!,
      output: functions.wo!,
      filter: functions.wf!,
      flippedFilter: functions.wt!,
      gemm: family('g', POSITION_BLOCK),
      gradient: functions.wg!,
      filterGradient: functions.wd!,
    },
    add: functions.ad!,
  };
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

/** Whether {@link engineHasRelaxedSimd} has seen relaxed SIMD on this engine. */
let relaxedSimdSeen = false;

/** Whether this engine has relaxed SIMD's fused multiply-add (Node ≥ 22, Chrome ≥ 114; not Node 20 without a flag). */
export function engineHasRelaxedSimd(): boolean {
  // Once seen, kept: this package only ever turns V8's flag on (V8 does not support turning wasm
  // features off once code has compiled), and the check encodes the whole module (≈5 ms), which
  // `setFusedMultiplyAdd` would otherwise pay twice on every `useBackend` call.
  relaxedSimdSeen ||= typeof WebAssembly !== 'undefined' && WebAssembly.validate(moduleBytes(false, true));
  return relaxedSimdSeen;
}

let fusedSetting: boolean | 'auto' = 'auto';
// undefined: not tried yet; null: this engine has no WebAssembly SIMD.
let mine: SimdKernels | null | undefined;

/**
 * Whether the kernels multiply-add with relaxed SIMD's `f32x4.relaxed_madd` (one fused, or at least
 * unordered, multiply-add: ≈20% faster where the CPU has FMA, and rounded once instead of twice) or
 * with `f32x4.mul` then `f32x4.add`. `'auto'` (the default) uses it where the engine has relaxed SIMD.
 * Where that changes the form of this thread's kernels, the next kernel call compiles them again (on a
 * new memory); kernels already of that form are kept. Returns the previous setting.
 */
export function setFusedMultiplyAdd(setting: boolean | 'auto'): boolean | 'auto' {
  const previous = fusedSetting;
  fusedSetting = setting;
  // Kernels of the form asked for are kept: `useBackend` sets this on every call, and new kernels mean
  // a new memory that grows again from one page, whose pages are touched anew, and that every worker
  // thread must be sent and instantiate again (the old memory, tens of MB, waits for the collector).
  // None yet (null) is tried again: the engine may have it now.
  if (mine === null || (mine !== undefined && mine.fused !== resolvedFused())) mine = undefined;
  return previous;
}

/** Whether the kernels multiply-add fused under the current setting, on this engine now. */
function resolvedFused(): boolean {
  return fusedSetting === 'auto' ? engineHasRelaxedSimd() : fusedSetting;
}

/** The variants to try, best first: shared memory (for worker threads) where the engine allows it. */
function variants(): Array<{ shared: boolean; fused: boolean }> {
  const fused = resolvedFused();
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

/**
 * Drops this thread's kernels if they are `kernels`, so that the next call makes new ones on a new
 * memory: a worker that failed or timed out may still be running on the old one.
 */
export function forgetSimdKernels(kernels: SimdKernels): void {
  if (mine === kernels) mine = undefined;
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
