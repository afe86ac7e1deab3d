/**
 * The Conv2D filter gradient as one direct loop in WebAssembly SIMD:
 * `dW[kh, kw, ci, co] = Σ_{b, oh, ow} x[b, oh·s_h + kh − top, ow·s_w + kw − left, ci] · dy[b, oh, ow, co]`.
 *
 * Every other formulation on wasm goes through XNNPACK with the wrong operand as the "weights": as a
 * convolution it packs all of dy as a filter and needs x transposed; as a GEMM it needs im2col columns
 * and a transpose. Here x (zero-padded once) and dy are copied into the kernels' memory and a block of
 * 4 input × 8 output channels is summed in registers over cache-sized chunks of the batch. With
 * worker threads each thread sums its images into its own dW, added up at the end. Stride-1 3 × 3
 * filters go to Winograd F(2×2, 3×3) instead where that is faster (winograd-filter-gradient.ts).
 */
import type { SimdGeometry, SimdPlan } from '../threads/conv-protocol.js';
import { CHANNEL_BLOCK } from './kernel-code.js';
import { alignFloats, chunking, copyPaddedImages, fitsMemory, paddedExtent, reserve, sumRegions } from './memory.js';
import { kernelsFor, simdKernels, type SimdKernels } from './instance.js';
import { runShared, simdPieces, simdThreads } from '../threads/parallel-conv.js';
import { simdWinogradFilterGradient, winogradFilterGradientChosen } from './winograd-filter-gradient.js';

/** Geometry of one filter gradient. */
export type FilterGradientGeometry = SimdGeometry;

/** Whether {@link simdFilterGradient} can run here (WebAssembly with SIMD). */
export function simdFilterGradientAvailable(): boolean {
  return simdKernels() !== null;
}

/** Output regions a plan leaves room for: one per thread, far more threads than a machine runs. */
const MAXIMUM_REGIONS = 256;

function layout(geometry: SimdGeometry, regions: number): { plan: SimdPlan; bytes: number } {
  const { batchSize, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(geometry);
  const dwFloats = filterHeight * filterWidth * inChannels * outChannels;
  const secondStart = alignFloats(batchSize * paddedHeight * paddedWidth * inChannels);
  const outputStart = secondStart + alignFloats(batchSize * outHeight * outWidth * outChannels);
  const regionFloats = alignFloats(dwFloats);
  const plan: SimdPlan = { family: 'filter', geometry, xStart: 0, secondStart, outputStart, regionFloats, ...chunking(geometry, outWidth * outChannels) };
  return { plan, bytes: (outputStart + regions * regionFloats) * 4 };
}

/** Whether {@link simdFilterGradient} handles this geometry: output channels in whole vectors of 4, and the data fits a wasm32 memory. */
export function simdFilterGradientSupports(geometry: FilterGradientGeometry): boolean {
  return geometry.outChannels % 4 === 0 && geometry.padTop >= 0 && geometry.padLeft >= 0 && fitsMemory(layout(geometry, MAXIMUM_REGIONS).bytes);
}

/**
 * Computes the filter gradient of an NHWC convolution (dilation 1) into `dw`, sharing the batch with
 * the convolution worker threads when `useBackend('wasm', { threads })` started some.
 *
 * @param x Forward input values, `[batch, inHeight, inWidth, inChannels]`.
 * @param dy Output gradient values, `[batch, outHeight, outWidth, outChannels]`.
 * @param dw Receives `[filterHeight, filterWidth, inChannels, outChannels]`; every value is written.
 */
export function simdFilterGradient(x: Float32Array, dy: Float32Array, dw: Float32Array, geometry: FilterGradientGeometry): void {
  // Stride-1 3 × 3 filters, where it measured faster: 2.25× fewer multiply-adds (winograd-filter-gradient.ts).
  if (winogradFilterGradientChosen(geometry)) {
    simdWinogradFilterGradient(x, dy, dw, geometry);
    return;
  }
  const kernels = kernelsFor('simdFilterGradient', geometry, [
    ['x', x, 'input'],
    ['dy', dy, 'output'],
    ['dw', dw, 'filter'],
  ]);
  const { batchSize, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = geometry;
  const threads = simdThreads(kernels, batchSize, batchSize * outHeight * outWidth * outChannels * filterHeight * filterWidth * inChannels);
  const pieces = simdPieces(batchSize, threads);
  const { plan, bytes } = layout(geometry, pieces.length);
  const heap = reserve(kernels, bytes);
  if (heap === undefined) throw new RangeError(`simdFilterGradient: ${bytes} bytes of x and dy do not fit a WebAssembly memory`);
  const positionFloats = outHeight * outWidth * outChannels;
  const regions = runShared(
    kernels,
    plan,
    threads,
    pieces,
    (first, end) => {
      copyPaddedImages(heap, x, plan, first, end);
      heap.set(dy.subarray(first * positionFloats, end * positionFloats), plan.secondStart + first * positionFloats);
    },
    (first, end, region) => runFilterGradientShare(kernels, plan, first, end, region),
  );
  sumRegions(kernels, dw, plan.outputStart, plan.regionFloats, regions);
}

/**
 * Sums images [first, end) of a planned filter gradient into output region `region` (zeroed first).
 * Runs on any thread whose kernels share the plan's memory.
 */
export function runFilterGradientShare(kernels: SimdKernels, plan: SimdPlan, first: number, end: number, region: number): void {
  const { inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth } = plan.geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(plan.geometry);
  const rowFloats = paddedWidth * inChannels;
  const dwStart = plan.outputStart + region * plan.regionFloats;
  new Float32Array(kernels.memory.buffer).fill(0, dwStart, dwStart + filterHeight * filterWidth * inChannels * outChannels);

  const wideBlocks = Math.floor(outChannels / 8);
  const narrowOffset = wideBlocks * 8;
  const strides = [4 * paddedHeight * rowFloats, 4 * strideHeight * rowFloats, 4 * strideWidth * inChannels, 4 * outChannels, 4 * outChannels] as const;
  for (let firstImage = first; firstImage < end; firstImage += plan.imagesPerChunk) {
    const images = Math.min(plan.imagesPerChunk, end - firstImage);
    for (let firstRow = 0; firstRow < outHeight; firstRow += plan.rowsPerChunk) {
      const rows = Math.min(plan.rowsPerChunk, outHeight - firstRow);
      const dyChunk = 4 * (plan.secondStart + (firstImage * outHeight + firstRow) * outWidth * outChannels);
      for (let kh = 0; kh < filterHeight; kh++) {
        for (let kw = 0; kw < filterWidth; kw++) {
          for (let firstInput = 0; firstInput < inChannels; firstInput += CHANNEL_BLOCK) {
            const family = kernels.filter[Math.min(CHANNEL_BLOCK, inChannels - firstInput) - 1]!;
            const xChunk = 4 * (plan.xStart + ((firstImage * paddedHeight + firstRow * strideHeight + kh) * paddedWidth + kw) * inChannels + firstInput);
            const dwChunk = 4 * (dwStart + ((kh * filterWidth + kw) * inChannels + firstInput) * outChannels);
            if (wideBlocks > 0) family[1]!(xChunk, dyChunk, dwChunk, images, rows, outWidth, ...strides, wideBlocks);
            if (narrowOffset < outChannels) family[0]!(xChunk, dyChunk + 4 * narrowOffset, dwChunk + 4 * narrowOffset, images, rows, outWidth, ...strides, 1);
          }
        }
      }
    }
  }
}
