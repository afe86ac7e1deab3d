/**
 * A dilation-1 NHWC Conv2D as one direct loop in WebAssembly SIMD:
 * `y[b, oh, ow, co] = Σ_{kh, kw, ci} x[b, oh·s_h + kh − top, ow·s_w + kw − left, ci] · w[kh, kw, ci, co]`.
 *
 * x is copied once, zero-padded, into the kernels' memory; a block of 4 output positions × 8 output
 * channels stays in registers while the loop runs over the filter's taps, so each filter vector loaded
 * serves 4 positions and each input value 8 channels. 1.2-1.3× faster than wasm's shipped (XNNPACK)
 * Conv2D on ResNet-18's layers, and it shares the batch with the worker threads without copies.
 * Stride-1 3 × 3 convolutions go to the Winograd F(2×2, 3×3) kernels instead where those are faster
 * (winograd.ts).
 */
import type { SimdGeometry, SimdPlan } from '../threads/conv-protocol.js';
import { POSITION_BLOCK } from './kernel-code.js';
import { alignFloats, chunking, copyPaddedImages, fitsMemory, paddedExtent, reserve } from './memory.js';
import { kernelsFor, simdKernels, type SimdKernels } from './instance.js';
import { runShared, simdPieces, simdThreads } from '../threads/parallel-conv.js';
import { simdWinogradConvolution, winogradChosen } from './winograd.js';

/** Geometry of one convolution. */
export type ConvolutionGeometry = SimdGeometry;

function layout(geometry: SimdGeometry): { plan: SimdPlan; bytes: number } {
  const { batchSize, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(geometry);
  const secondStart = alignFloats(batchSize * paddedHeight * paddedWidth * inChannels);
  const outputStart = secondStart + alignFloats(filterHeight * filterWidth * inChannels * outChannels);
  const yFloats = batchSize * outHeight * outWidth * outChannels;
  const plan: SimdPlan = { family: 'forward', geometry, xStart: 0, secondStart, outputStart, regionFloats: 0, ...chunking(geometry, outWidth * outChannels) };
  return { plan, bytes: (outputStart + yFloats) * 4 };
}

/** Whether {@link simdConvolution} runs here and handles this geometry: output channels in whole vectors of 4, data that fits a wasm32 memory. */
export function simdConvolutionSupports(geometry: ConvolutionGeometry): boolean {
  return simdKernels() !== null && geometry.outChannels % 4 === 0 && geometry.padTop >= 0 && geometry.padLeft >= 0 && fitsMemory(layout(geometry).bytes);
}

/**
 * Computes an NHWC convolution (dilation 1) into `y`, sharing the batch with the convolution worker
 * threads when `useBackend('wasm', { threads })` started some.
 *
 * @param x Input values, `[batch, inHeight, inWidth, inChannels]`.
 * @param w Filter values, `[filterHeight, filterWidth, inChannels, outChannels]`.
 * @param y Receives `[batch, outHeight, outWidth, outChannels]`; every value is written.
 */
export function simdConvolution(x: Float32Array, w: Float32Array, y: Float32Array, geometry: ConvolutionGeometry): void {
  // Stride-1 3 × 3 filters, where it measured faster: 2.25× fewer multiply-adds (winograd.ts).
  if (winogradChosen(geometry)) {
    simdWinogradConvolution(x, w, y, geometry);
    return;
  }
  const kernels = kernelsFor('simdConvolution', geometry, [
    ['x', x, 'input'],
    ['w', w, 'filter'],
    ['y', y, 'output'],
  ]);
  const { batchSize, inChannels, filterHeight, filterWidth } = geometry;
  // A sum over no input channels (the kernels' loops would run 2³² times).
  if (inChannels === 0) {
    y.fill(0);
    return;
  }
  const { plan, bytes } = layout(geometry);
  const heap = reserve(kernels, bytes);
  if (heap === undefined) throw new RangeError(`simdConvolution: ${bytes} bytes of x, w and y do not fit a WebAssembly memory`);
  heap.set(w, plan.secondStart);
  const threads = simdThreads(kernels, batchSize, y.length * filterHeight * filterWidth * inChannels);
  const imageFloats = y.length / batchSize;
  runShared(
    kernels,
    plan,
    threads,
    simdPieces(batchSize, threads),
    (first, end) => copyPaddedImages(heap, x, plan, first, end),
    (first, end) => runConvolutionShare(kernels, plan, first, end),
    // Each piece's images out as soon as it is done: this thread's while the workers finish theirs.
    (first, end) => y.set(heap.subarray(plan.outputStart + first * imageFloats, plan.outputStart + end * imageFloats), first * imageFloats),
  );
}

/** Computes images [first, end) of a planned convolution. Runs on any thread whose kernels share the plan's memory. */
export function runConvolutionShare(kernels: SimdKernels, plan: SimdPlan, first: number, end: number): void {
  const { inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth } = plan.geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(plan.geometry);
  const rowFloats = paddedWidth * inChannels;
  const wideBlocks = Math.floor(outChannels / 8);
  const narrowOffset = wideBlocks * 8;
  const columnBlocks = Math.floor(outWidth / POSITION_BLOCK);
  const remainder = outWidth - columnBlocks * POSITION_BLOCK;
  const xPosition = 4 * strideWidth * inChannels;
  const yPosition = 4 * outChannels;
  // The kernels' parameters after images, rows and column blocks (which vary per call).
  const strides = [
    4 * paddedHeight * rowFloats, // xImage
    4 * strideHeight * rowFloats, // xRow
    xPosition,
    4 * outHeight * outWidth * outChannels, // yImage
    4 * outWidth * outChannels, // yRow
    yPosition,
    filterHeight, // filterRows
    filterWidth * inChannels, // taps
    4 * rowFloats, // xFilterRow
    4 * outChannels, // wTap
  ] as const;
  for (let firstImage = first; firstImage < end; firstImage += plan.imagesPerChunk) {
    const images = Math.min(plan.imagesPerChunk, end - firstImage);
    for (let firstRow = 0; firstRow < outHeight; firstRow += plan.rowsPerChunk) {
      const rows = Math.min(plan.rowsPerChunk, outHeight - firstRow);
      const xChunk = 4 * (plan.xStart + (firstImage * paddedHeight + firstRow * strideHeight) * rowFloats);
      const yChunk = 4 * (plan.outputStart + (firstImage * outHeight + firstRow) * outWidth * outChannels);
      const run = (positions: number, blocks: number, firstColumn: number) => {
        const family = kernels.convolution[positions - 1]!;
        const xFirst = xChunk + firstColumn * xPosition;
        const yFirst = yChunk + firstColumn * yPosition;
        if (wideBlocks > 0) family[1]!(xFirst, 4 * plan.secondStart, yFirst, images, rows, blocks, ...strides, wideBlocks);
        if (narrowOffset < outChannels) family[0]!(xFirst, 4 * (plan.secondStart + narrowOffset), yFirst + 4 * narrowOffset, images, rows, blocks, ...strides, 1);
      };
      if (columnBlocks > 0) run(POSITION_BLOCK, columnBlocks, 0);
      if (remainder > 0) run(remainder, 1, columnBlocks * POSITION_BLOCK);
    }
  }
}
