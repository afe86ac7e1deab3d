/**
 * Batch normalisation's passes (ops/batch-norm.ts) as WebAssembly SIMD loops that run in place on the
 * wasm backend's own memory: the per-channel sums (Σx and Σx² forward, Σg and Σg·x in the gradient;
 * each f32x4 promoted to two f64x2, so the sums stay float64), the affine map y = x·scale + shift (plus
 * a residual, then max(0, ·)), and dx = g·a + x·b + k (g = dy, masked by y > 0 after a ReLU; with a
 * residual, the sums pass writes g out as its gradient and the dx pass reads it), four channels per f32x4.
 * V8 runs the same loops in JavaScript one float at a time; XNNPACK's elementwise ops take a pass over
 * the values each.
 *
 * The module imports the wasm backend's memory (TF.js's emscripten module exports it), so the kernels
 * read and write the tensors where they are: no copies. Where that memory or WebAssembly SIMD is not
 * available, or the channels are not a multiple of 4, the kernels use the JavaScript loops.
 */
import { FunctionBody, I32, V128, encodeModule } from './wasm-module.js';

/** The SIMD passes, bound to one memory. Pointers in bytes; rows × vectors of 4 floats. */
export interface BatchNormSimd {
  /**
   * Adds each channel's Σx and Σx² over `rows` rows of x (float64, accumulated in f64x2 from the
   * promoted floats) to `sums` (Σx for every channel, then Σx²: 2 × 4·vectors doubles). Call it per
   * block of rows that stays in cache.
   */
  moments(x: number, sums: number, rows: number, vectors: number): void;
  /** The same for Σg and Σg·x, g = dy (masked by y > 0 with `relu`); with `g` (a pointer; null for none) g is written there too. */
  gradientSums(relu: boolean, dy: number, x: number, y: number, sums: number, rows: number, vectors: number, g: number | null): void;
  /**
   * y = x·scale + shift per channel (scale then shift: `vectors` × 4 floats each at `coefficients`),
   * plus `residual` (a pointer to values of x's shape; null for none), then max(0, ·) with `relu`.
   */
  affine(relu: boolean, x: number, y: number, coefficients: number, rows: number, vectors: number, residual: number | null): void;
  /** dx = g·a + x·b + k per channel (a, b, k one after the other at `coefficients`); g = dy, or dy where y > 0 with `relu`. */
  inputGradient(relu: boolean, dy: number, x: number, y: number, dx: number, coefficients: number, rows: number, vectors: number): void;
}

const AFFINE_PARAMETERS = 5;
const GRADIENT_PARAMETERS = 7;

/**
 * y = x·scale + shift (+ residual; relu: max(0, ·)) over rows × vectors. Parameters: x, y,
 * coefficients, rows, vectors, and with `residual` the residual's pointer.
 */
function affineKernel(relu: boolean, residual: boolean): FunctionBody {
  const f = new FunctionBody(Array.from({ length: AFFINE_PARAMETERS + (residual ? 1 : 0) }, () => I32));
  const [x, y, coefficients, rows, vectors, residualValues] = [0, 1, 2, 3, 4, 5];
  const rowCounter = f.local(I32), vectorCounter = f.local(I32), scale = f.local(I32), shiftOffset = f.local(I32);
  f.get(vectors).i32(16).mul().set(shiftOffset);
  f.countedLoop(rowCounter, { local: rows }, () => {
    f.get(coefficients).set(scale);
    f.countedLoop(vectorCounter, { local: vectors }, () => {
      f.get(y);
      f.get(x).load().get(scale).load().mulF32x4();
      f.get(scale).get(shiftOffset).add().load().addF32x4();
      if (residual) f.get(residualValues).load().addF32x4();
      if (relu) f.zeros().maxF32x4();
      f.store();
      f.increment(x, 16).increment(y, 16).increment(scale, 16);
      if (residual) f.increment(residualValues, 16);
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

/** Lanes that move a vector's two high floats to its low half, for f64x2.promote_low_f32x4. */
const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];

/**
 * Per-channel sums over rows of one column of 4 channels at a time, accumulators in registers: Σa and
 * Σa·b, with a = x and b = x (moments) or a = g and b = x (gradient sums; `gradient` true, `relu` masks
 * g by y > 0; `writeG` writes g out, for a residual's gradient and the dx pass). Parameters: moments x,
 * sums, rows, vectors; gradient dy, x, y, sums, rows, vectors (and g with `writeG`).
 */
function sumsKernel(gradient: boolean, relu: boolean, writeG = false): FunctionBody {
  const names = gradient ? ['dy', 'x', 'y', 'sums', 'rows', 'vectors', ...(writeG ? ['g'] : [])] : ['x', 'sums', 'rows', 'vectors'];
  const f = new FunctionBody(names.map(() => I32));
  const index = (name: string) => names.indexOf(name);
  const [x, sums, rows, vectors] = [index('x'), index('sums'), index('rows'), index('vectors')];
  const [dy, y, g] = [index('dy'), index('y'), index('g')];
  const vectorCounter = f.local(I32), rowCounter = f.local(I32), column = f.local(I32), offset = f.local(I32);
  const sumOut = f.local(I32), productOffset = f.local(I32), rowBytes = f.local(I32);
  const a = f.local(V128), b = f.local(V128), aLow = f.local(V128), aHigh = f.local(V128);
  const s0 = f.local(V128), s1 = f.local(V128), p0 = f.local(V128), p1 = f.local(V128);
  f.get(vectors).i32(16).mul().set(rowBytes);
  f.get(vectors).i32(32).mul().set(productOffset);
  f.i32(0).set(column);
  f.get(sums).set(sumOut);
  f.countedLoop(vectorCounter, { local: vectors }, () => {
    f.get(sumOut).load().set(s0).get(sumOut).load(16).set(s1);
    f.get(sumOut).get(productOffset).add().load().set(p0).get(sumOut).get(productOffset).add().load(16).set(p1);
    f.get(column).set(offset);
    f.countedLoop(rowCounter, { local: rows }, () => {
      if (gradient) {
        f.get(dy).get(offset).add().load();
        if (relu) f.get(y).get(offset).add().load().zeros().greaterF32x4().and();
        f.set(a);
        if (writeG) f.get(g).get(offset).add().get(a).store();
        f.get(x).get(offset).add().load().set(b);
      } else {
        f.get(x).get(offset).add().load().set(a);
      }
      f.get(a).promoteLowF32x4().set(aLow);
      f.get(a).get(a).shuffle(HIGH_HALF).promoteLowF32x4().set(aHigh);
      f.get(s0).get(aLow).addF64x2().set(s0);
      f.get(s1).get(aHigh).addF64x2().set(s1);
      if (gradient) {
        f.get(p0).get(aLow).get(b).promoteLowF32x4().mulF64x2().addF64x2().set(p0);
        f.get(p1).get(aHigh).get(b).get(b).shuffle(HIGH_HALF).promoteLowF32x4().mulF64x2().addF64x2().set(p1);
      } else {
        f.get(p0).get(aLow).get(aLow).mulF64x2().addF64x2().set(p0);
        f.get(p1).get(aHigh).get(aHigh).mulF64x2().addF64x2().set(p1);
      }
      f.increment(offset, { local: rowBytes });
    });
    f.get(sumOut).get(s0).store().get(sumOut).get(s1).store(16);
    f.get(sumOut).get(productOffset).add().get(p0).store();
    f.get(sumOut).get(productOffset).add().get(p1).store(16);
    f.increment(column, 16).increment(sumOut, 32);
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
          { name: 'affine', body: affineKernel(false, false) },
          { name: 'affineRelu', body: affineKernel(true, false) },
          { name: 'affineResidual', body: affineKernel(false, true) },
          { name: 'affineResidualRelu', body: affineKernel(true, true) },
          { name: 'gradient', body: inputGradientKernel(false) },
          { name: 'gradientRelu', body: inputGradientKernel(true) },
          { name: 'moments', body: sumsKernel(false, false) },
          { name: 'gradientSums', body: sumsKernel(true, false) },
          { name: 'gradientSumsRelu', body: sumsKernel(true, true) },
          { name: 'gradientSumsResidual', body: sumsKernel(true, false, true) },
          { name: 'gradientSumsResidualRelu', body: sumsKernel(true, true, true) },
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
    const { affine, affineRelu, affineResidual, affineResidualRelu, gradient, gradientRelu, moments, gradientSums, gradientSumsRelu, gradientSumsResidual, gradientSumsResidualRelu } =
      exports;
    simd = {
      moments: (x, sums, rows, vectors) => moments!(x, sums, rows, vectors),
      gradientSums: (relu, dy, x, y, sums, rows, vectors, g) =>
        g === null
          ? (relu ? gradientSumsRelu! : gradientSums!)(dy, x, y, sums, rows, vectors)
          : (relu ? gradientSumsResidualRelu! : gradientSumsResidual!)(dy, x, y, sums, rows, vectors, g),
      affine: (relu, x, y, coefficients, rows, vectors, residual) =>
        residual === null
          ? (relu ? affineRelu! : affine!)(x, y, coefficients, rows, vectors)
          : (relu ? affineResidualRelu! : affineResidual!)(x, y, coefficients, rows, vectors, residual),
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

/** Rows per call of the SIMD sums: a block of rows whose columns stay in the first-level cache. */
const SUMS_BLOCK_ROWS = 64;

/**
 * Per-channel Σa and Σa·b (float64) by `sums` over blocks of rows, in a scratch area of the backend's
 * memory: `scratch` (a float32 buffer of at least 4·channels floats, 8-byte aligned) ends up holding Σa
 * for every channel, then Σa·b, as doubles; returns views of both.
 *
 * @param sums Runs the SIMD sums over `rows` rows starting `rowOffset` bytes into the tensors.
 */
export function blockedSums(
  scratch: Float32Array,
  channels: number,
  rows: number,
  sums: (rowOffset: number, rows: number) => void,
): [Float64Array, Float64Array] {
  const doubles = new Float64Array(scratch.buffer, scratch.byteOffset, 2 * channels);
  doubles.fill(0);
  const rowBytes = 4 * channels;
  for (let first = 0; first < rows; first += SUMS_BLOCK_ROWS) sums(first * rowBytes, Math.min(SUMS_BLOCK_ROWS, rows - first));
  return [doubles.subarray(0, channels), doubles.subarray(channels)];
}
