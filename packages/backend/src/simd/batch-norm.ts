/**
 * Batch normalisation's two elementwise passes (ops/batch-norm.ts) as WebAssembly SIMD loops that run
 * in place on the wasm backend's own memory: the affine map y = x·scale + shift (then max(0, ·)), and
 * dx = g·a + x·b + k (g = dy, masked by y > 0 after a ReLU), four channels per f32x4. V8 runs the same
 * loops in JavaScript one float at a time; XNNPACK's elementwise ops take a pass over the values each.
 *
 * The module imports the wasm backend's memory (TF.js's emscripten module exports it), so the kernels
 * read and write the tensors where they are: no copies. Where that memory or WebAssembly SIMD is not
 * available, or the channels are not a multiple of 4, the kernels use the JavaScript loops.
 */
import { FunctionBody, I32, V128, encodeModule } from './wasm-module.js';

/** The SIMD passes, bound to one memory. Pointers in bytes; rows × vectors of 4 floats. */
export interface BatchNormSimd {
  /** y = x·scale + shift per channel (scale then shift: `vectors` × 4 floats each at `coefficients`), then max(0, ·) with `relu`. */
  affine(relu: boolean, x: number, y: number, coefficients: number, rows: number, vectors: number): void;
  /** dx = g·a + x·b + k per channel (a, b, k one after the other at `coefficients`); g = dy, or dy where y > 0 with `relu`. */
  inputGradient(relu: boolean, dy: number, x: number, y: number, dx: number, coefficients: number, rows: number, vectors: number): void;
}

const AFFINE_PARAMETERS = 5;
const GRADIENT_PARAMETERS = 7;

/** y = x·scale + shift (relu: max(0, ·)) over rows × vectors. Parameters: x, y, coefficients, rows, vectors. */
function affineKernel(relu: boolean): FunctionBody {
  const f = new FunctionBody(Array.from({ length: AFFINE_PARAMETERS }, () => I32));
  const [x, y, coefficients, rows, vectors] = [0, 1, 2, 3, 4];
  const rowCounter = f.local(I32), vectorCounter = f.local(I32), scale = f.local(I32), shiftOffset = f.local(I32);
  f.get(vectors).i32(16).mul().set(shiftOffset);
  f.countedLoop(rowCounter, { local: rows }, () => {
    f.get(coefficients).set(scale);
    f.countedLoop(vectorCounter, { local: vectors }, () => {
      f.get(y);
      f.get(x).load().get(scale).load().mulF32x4();
      f.get(scale).get(shiftOffset).add().load().addF32x4();
      if (relu) f.zeros().maxF32x4();
      f.store();
      f.increment(x, 16).increment(y, 16).increment(scale, 16);
    });
  });
  return f;
}

/** dx = g·a + x·b + k over rows × vectors. Parameters: dy, x, y, dx, coefficients, rows, vectors. */
function inputGradientKernel(relu: boolean): FunctionBody {
  const f = new FunctionBody(Array.from({ length: GRADIENT_PARAMETERS }, () => I32));
  const [dy, x, y, dx, coefficients, rows, vectors] = [0, 1, 2, 3, 4, 5, 6];
  const rowCounter = f.local(I32), vectorCounter = f.local(I32), a = f.local(I32), stride = f.local(I32);
  f.get(vectors).i32(16).mul().set(stride);
  f.countedLoop(rowCounter, { local: rows }, () => {
    f.get(coefficients).set(a);
    f.countedLoop(vectorCounter, { local: vectors }, () => {
      f.get(dx);
      f.get(dy).load();
      if (relu) f.get(y).load().zeros().greaterF32x4().and();
      f.get(a).load().mulF32x4();
      f.get(x).load().get(a).get(stride).add().load().mulF32x4().addF32x4();
      f.get(a).get(stride).add().get(stride).add().load().addF32x4();
      f.store();
      f.increment(dy, 16).increment(x, 16).increment(dx, 16).increment(a, 16);
      if (relu) f.increment(y, 16);
    });
  });
  return f;
}

let compiled: WebAssembly.Module | null | undefined;

/** The module, compiled once; null where the engine has no WebAssembly SIMD. */
function batchNormModule(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    compiled = new WebAssembly.Module(
      encodeModule(
        [
          { name: 'affine', body: affineKernel(false) },
          { name: 'affineRelu', body: affineKernel(true) },
          { name: 'gradient', body: inputGradientKernel(false) },
          { name: 'gradientRelu', body: inputGradientKernel(true) },
        ],
        // No maximum: the import then accepts the backend's memory whatever its own maximum.
        { initial: 1, shared: false },
      ),
    );
  } catch {
    compiled = null;
  }
  return compiled;
}

const instances = new WeakMap<WebAssembly.Memory, BatchNormSimd | null>();

/**
 * The SIMD passes on the wasm backend's memory, or null where they cannot run there (no exported
 * memory, a shared one, no WebAssembly SIMD).
 */
export function batchNormSimd(backend: unknown): BatchNormSimd | null {
  const memory = (backend as { wasm?: { asm?: { memory?: unknown } } }).wasm?.asm?.memory;
  if (!(memory instanceof WebAssembly.Memory)) return null;
  const known = instances.get(memory);
  if (known !== undefined) return known;
  // A shared memory (TF.js's threaded wasm build) would need a module declaring one with its maximum:
  // that build keeps the JavaScript loops.
  const shared = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const module = shared ? null : batchNormModule();
  let simd: BatchNormSimd | null = null;
  if (module !== null) {
    const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<string, (...args: number[]) => void>;
    const { affine, affineRelu, gradient, gradientRelu } = exports as Record<'affine' | 'affineRelu' | 'gradient' | 'gradientRelu', (...args: number[]) => void>;
    simd = {
      affine: (relu, x, y, coefficients, rows, vectors) => (relu ? affineRelu! : affine!)(x, y, coefficients, rows, vectors),
      inputGradient: (relu, dy, x, y, dx, coefficients, rows, vectors) => (relu ? gradientRelu! : gradient!)(dy, x, y, dx, coefficients, rows, vectors),
    };
  }
  instances.set(memory, simd);
  return simd;
}

/** Where the wasm backend keeps a tensor's values: a byte offset into its memory. */
export function memoryOffset(backend: unknown, dataId: object): number {
  const data = (backend as { dataIdMap: { get(dataId: object): { memoryOffset: number } | undefined } }).dataIdMap.get(dataId);
  if (data === undefined) throw new Error('@regstack/backend: a tensor with no data on the wasm backend');
  return data.memoryOffset;
}
