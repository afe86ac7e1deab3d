/**
 * How a direct SIMD kernel call lays out its data in the kernels' memory: x zero-padded to what the
 * windows reach, the second input and the output each on whole vectors, and the batch cut into chunks
 * that stay in cache.
 */
import type { SimdGeometry, SimdPlan } from '../threads/conv-protocol.js';
import type { SimdKernels } from './instance.js';

/** 4 GiB, wasm32's whole address space: reserved, not committed; a call that needs more falls back. */
export const MAXIMUM_PAGES = 65536;

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
 * A filter gradient's result from its pieces' partial sums: `regions` regions `regionFloats` apart from
 * `start`, each beginning with one piece's dW, added up in piece order (the same additions whichever
 * thread ran which piece, so the result does not depend on it) into the first region by the kernels'
 * `add` (4 floats an instruction), then copied into `dw`.
 */
export function sumRegions(kernels: SimdKernels, dw: Float32Array, start: number, regionFloats: number, regions: number): void {
  if (dw.length % 4 !== 0) throw new RangeError(`sumRegions: dw must hold whole vectors of 4 floats, got ${dw.length}`);
  for (let region = 1; region < regions; region++) kernels.add(4 * start, 4 * (start + region * regionFloats), dw.length / 4);
  dw.set(new Float32Array(kernels.memory.buffer, 4 * start, dw.length));
}
