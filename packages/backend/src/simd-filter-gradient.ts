/**
 * The Conv2D filter gradient as one direct loop in WebAssembly SIMD:
 * `dW[kh, kw, ci, co] = Σ_{b, oh, ow} x[b, oh·s_h + kh − top, ow·s_w + kw − left, ci] · dy[b, oh, ow, co]`.
 *
 * Every other formulation on wasm goes through XNNPACK with the wrong operand as the "weights": as a
 * convolution it packs all of dy as a filter and needs x transposed; as a GEMM it needs im2col columns
 * and a transpose. Here x (zero-padded once) and dy are copied into this module's own memory and the
 * sum runs in place: a 4 (input channels) × 8 (output channels) block of accumulators stays in
 * registers while the loop walks the positions of a cache-sized chunk of the batch.
 */
import { FunctionBody, I32, V128, encodeModule } from './wasm-module.js';

/** Input channels per block (1-4 for the remainder) and output channels per block (8, or 4 for the remainder). */
const CHANNEL_BLOCK = 4;

/** Parameters of every kernel, in order (all i32; pointers and strides in bytes). */
const PARAMETERS = ['x', 'dy', 'dw', 'images', 'rows', 'columns', 'xImage', 'xRow', 'xColumn', 'dyPosition', 'dwRow', 'outputBlocks'] as const;

/**
 * Kernel for `inputs` input channels (1-4) and `vectors` × 4 output channels (1 or 2) per block: for each
 * of `outputBlocks` blocks side by side, sums over images × rows × columns positions and adds the sums
 * to dw's `inputs` rows (`dwRow` bytes apart).
 */
function kernel(inputs: number, vectors: number): FunctionBody {
  const f = new FunctionBody(PARAMETERS.map(() => I32));
  const p = Object.fromEntries(PARAMETERS.map((parameter, index) => [parameter, index])) as Record<(typeof PARAMETERS)[number], number>;
  const [blockCounter, imageCounter, rowCounter, columnCounter, xImage, xRow, xp, dyp, dyBlock, dwBlock, dwp] = Array.from({ length: 11 }, () => f.local(I32));
  const accumulators = Array.from({ length: inputs * vectors }, () => f.local(V128));
  const dyVectors = Array.from({ length: vectors }, () => f.local(V128));
  const broadcast = f.local(V128);
  const blockBytes = 16 * vectors;

  f.get(p.dy).set(dyBlock).get(p.dw).set(dwBlock);
  f.countedLoop(blockCounter, { local: p.outputBlocks }, () => {
    for (const accumulator of accumulators) f.zeros().set(accumulator);
    f.get(p.x).set(xImage).get(dyBlock).set(dyp);
    f.countedLoop(imageCounter, { local: p.images }, () => {
      f.get(xImage).set(xRow);
      f.countedLoop(rowCounter, { local: p.rows }, () => {
        f.get(xRow).set(xp);
        f.countedLoop(columnCounter, { local: p.columns }, () => {
          for (const [v, dyVector] of dyVectors.entries()) f.get(dyp).load(16 * v).set(dyVector);
          for (let i = 0; i < inputs; i++) {
            f.get(xp).loadSplat(4 * i).set(broadcast);
            for (const [v, dyVector] of dyVectors.entries()) {
              const accumulator = accumulators[i * vectors + v]!;
              f.get(accumulator).get(broadcast).get(dyVector).mulF32x4().addF32x4().set(accumulator);
            }
          }
          f.increment(xp, { local: p.xColumn }).increment(dyp, { local: p.dyPosition });
        });
        f.increment(xRow, { local: p.xRow });
      });
      f.increment(xImage, { local: p.xImage });
    });
    // dw[i][block] += the block's sums (summed from zero per call: shorter float32 chains).
    f.get(dwBlock).set(dwp);
    for (let i = 0; i < inputs; i++) {
      for (let v = 0; v < vectors; v++) {
        f.get(dwp).get(dwp).load(16 * v).get(accumulators[i * vectors + v]!).addF32x4().store(16 * v);
      }
      f.increment(dwp, { local: p.dwRow });
    }
    f.increment(dyBlock, blockBytes).increment(dwBlock, blockBytes);
  });
  return f;
}

type Kernel = (...args: number[]) => void;

interface Instance {
  memory: WebAssembly.Memory;
  /** kernels[inputs − 1][vectors − 1]. */
  kernels: Kernel[][];
}

let instance: Instance | null | undefined;

function instantiate(): Instance | null {
  const functions: Array<{ name: string; body: FunctionBody }> = [];
  for (let inputs = 1; inputs <= CHANNEL_BLOCK; inputs++) {
    for (let vectors = 1; vectors <= 2; vectors++) functions.push({ name: `c${inputs}v${vectors}`, body: kernel(inputs, vectors) });
  }
  const bytes = encodeModule(functions, 1);
  // No WebAssembly SIMD (an old engine): callers fall back to another formulation.
  if (typeof WebAssembly === 'undefined' || !WebAssembly.validate(bytes)) return null;
  const exports = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as Record<string, unknown>;
  return {
    memory: exports['memory'] as WebAssembly.Memory,
    kernels: Array.from({ length: CHANNEL_BLOCK }, (_, i) => [1, 2].map((vectors) => exports[`c${i + 1}v${vectors}`] as Kernel)),
  };
}

/** The compiled kernels, or null where WebAssembly SIMD is unavailable. Compiled once per thread. */
function simdInstance(): Instance | null {
  if (instance === undefined) instance = instantiate();
  return instance;
}

/** Whether {@link simdFilterGradient} can run here (WebAssembly with SIMD). */
export function simdFilterGradientAvailable(): boolean {
  return simdInstance() !== null;
}

/** Geometry of one filter gradient, NHWC, as `tf.backend_util.Conv2DInfo` gives it. */
export interface FilterGradientGeometry {
  batchSize: number;
  inHeight: number;
  inWidth: number;
  inChannels: number;
  outHeight: number;
  outWidth: number;
  outChannels: number;
  filterHeight: number;
  filterWidth: number;
  strideHeight: number;
  strideWidth: number;
  /** Rows and columns of zeros before the first input row and column. */
  padTop: number;
  padLeft: number;
}

/** Whether {@link simdFilterGradient} handles this geometry: output channels in whole vectors of 4. */
export function simdFilterGradientSupports(geometry: FilterGradientGeometry): boolean {
  return geometry.outChannels % 4 === 0 && geometry.padTop >= 0 && geometry.padLeft >= 0;
}

/** Bytes of x and dy a chunk of the batch may hold: small enough to stay in a core's L1/L2 cache across the blocks. */
let chunkBytes = 128 * 1024;

/** For benchmarks and tests: the chunk size in bytes (≥ 1: down to one row at a time). Returns the previous value. */
export function setSimdChunkBytes(bytes: number): number {
  const previous = chunkBytes;
  chunkBytes = bytes;
  return previous;
}

/**
 * Computes the filter gradient of an NHWC convolution (dilation 1) into `dw`.
 *
 * @param x Forward input values, `[batch, inHeight, inWidth, inChannels]`.
 * @param dy Output gradient values, `[batch, outHeight, outWidth, outChannels]`.
 * @param dw Receives `[filterHeight, filterWidth, inChannels, outChannels]`; every value is written.
 */
export function simdFilterGradient(x: Float32Array, dy: Float32Array, dw: Float32Array, geometry: FilterGradientGeometry): void {
  const simd = simdInstance();
  if (simd === null) throw new Error('simdFilterGradient: this engine has no WebAssembly SIMD');
  if (!simdFilterGradientSupports(geometry)) throw new RangeError(`simdFilterGradient: outChannels must be a multiple of 4, got ${geometry.outChannels}`);
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth, padTop, padLeft } =
    geometry;
  // x padded (or cropped) to exactly the rows and columns the windows reach: no bounds checks in the loop.
  const paddedHeight = (outHeight - 1) * strideHeight + filterHeight;
  const paddedWidth = (outWidth - 1) * strideWidth + filterWidth;
  const imageFloats = paddedHeight * paddedWidth * inChannels;
  const xFloats = batchSize * imageFloats;
  const dyFloats = batchSize * outHeight * outWidth * outChannels;
  const dwFloats = filterHeight * filterWidth * inChannels * outChannels;
  if (x.length !== batchSize * inHeight * inWidth * inChannels) throw new RangeError(`simdFilterGradient: x has ${x.length} values, expected ${batchSize * inHeight * inWidth * inChannels}`);
  if (dy.length !== dyFloats) throw new RangeError(`simdFilterGradient: dy has ${dy.length} values, expected ${dyFloats}`);
  if (dw.length !== dwFloats) throw new RangeError(`simdFilterGradient: dw has ${dw.length} values, expected ${dwFloats}`);

  // Layout in the module's memory (floats): [x padded | dy | dw], each 16-byte aligned.
  const align = (floats: number) => Math.ceil(floats / 4) * 4;
  const xStart = 0;
  const dyStart = align(xFloats);
  const dwStart = dyStart + align(dyFloats);
  const bytes = (dwStart + dwFloats) * 4;
  const pages = Math.ceil(bytes / 65536) - simd.memory.buffer.byteLength / 65536;
  if (pages > 0) simd.memory.grow(pages);
  const heap = new Float32Array(simd.memory.buffer);

  const rowFloats = paddedWidth * inChannels;
  const copiedColumns = Math.max(0, Math.min(inWidth, paddedWidth - padLeft));
  for (let image = 0; image < batchSize; image++) {
    for (let row = 0; row < paddedHeight; row++) {
      const target = xStart + (image * paddedHeight + row) * rowFloats;
      const sourceRow = row - padTop;
      if (sourceRow < 0 || sourceRow >= inHeight || copiedColumns === 0) {
        heap.fill(0, target, target + rowFloats);
        continue;
      }
      const source = ((image * inHeight + sourceRow) * inWidth) * inChannels;
      heap.fill(0, target, target + padLeft * inChannels);
      heap.set(x.subarray(source, source + copiedColumns * inChannels), target + padLeft * inChannels);
      heap.fill(0, target + (padLeft + copiedColumns) * inChannels, target + rowFloats);
    }
  }
  heap.set(dy, dyStart);
  heap.fill(0, dwStart, dwStart + dwFloats);

  // A chunk is whole images when one fits the cache budget, else rows of one image.
  const imageBytes = (imageFloats + outHeight * outWidth * outChannels) * 4;
  const rowBytes = (strideHeight * rowFloats + outWidth * outChannels) * 4;
  const imagesPerChunk = imageBytes <= chunkBytes ? Math.max(1, Math.floor(chunkBytes / imageBytes)) : 1;
  const rowsPerChunk = imageBytes <= chunkBytes ? outHeight : Math.max(1, Math.min(outHeight, Math.floor(chunkBytes / rowBytes)));

  const wideBlocks = Math.floor(outChannels / 8);
  const narrowOffset = wideBlocks * 8;
  const strides = [4 * imageFloats, 4 * strideHeight * rowFloats, 4 * strideWidth * inChannels, 4 * outChannels, 4 * outChannels] as const;
  for (let firstImage = 0; firstImage < batchSize; firstImage += imagesPerChunk) {
    const images = Math.min(imagesPerChunk, batchSize - firstImage);
    for (let firstRow = 0; firstRow < outHeight; firstRow += rowsPerChunk) {
      const rows = Math.min(rowsPerChunk, outHeight - firstRow);
      const dyChunk = 4 * (dyStart + (firstImage * outHeight + firstRow) * outWidth * outChannels);
      for (let kh = 0; kh < filterHeight; kh++) {
        for (let kw = 0; kw < filterWidth; kw++) {
          for (let firstInput = 0; firstInput < inChannels; firstInput += CHANNEL_BLOCK) {
            const kernels = simd.kernels[Math.min(CHANNEL_BLOCK, inChannels - firstInput) - 1]!;
            const xChunk = 4 * (xStart + ((firstImage * paddedHeight + firstRow * strideHeight + kh) * paddedWidth + kw) * inChannels + firstInput);
            const dwChunk = 4 * (dwStart + ((kh * filterWidth + kw) * inChannels + firstInput) * outChannels);
            if (wideBlocks > 0) kernels[1]!(xChunk, dyChunk, dwChunk, images, rows, outWidth, ...strides, wideBlocks);
            if (narrowOffset < outChannels) kernels[0]!(xChunk, dyChunk + 4 * narrowOffset, dwChunk + 4 * narrowOffset, images, rows, outWidth, ...strides, 1);
          }
        }
      }
    }
  }
  dw.set(heap.subarray(dwStart, dwStart + dwFloats));
}
