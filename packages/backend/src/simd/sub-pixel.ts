/**
 * The input gradient of a strided NHWC Conv2D (a transposed convolution) as one call of the direct SIMD
 * kernels, by sub-pixel phases: dx's rows and columns split by their remainder modulo the stride, and
 * each phase is a stride-1 convolution of dy with the filter taps that land on it (flipped, its channel
 * axes swapped). At stride 2 a 3 × 3 filter gives phases of 2 × 2, 2 × 1, 1 × 2 and 1 × 1 taps: 2.25
 * taps per dx value where the zero-insertion form multiplies by all 9, three quarters of them zeros.
 *
 * Before this, conv-gradients.ts ran the phases as separate `Conv2D` kernel calls and interleaved them
 * into dx with a JavaScript loop: four copies of dy, four flipped sub-filters as tensors, and only the
 * phases large enough to share went to the worker threads. Here dy is copied once (zero-padded for the
 * largest phase), the sub-filters are written once into the kernels' memory, and every phase of a
 * piece of the batch writes straight into its rows and columns of one padded dx (the kernels' output
 * strides step over the other phases), so a piece is one unit of work that a worker thread can take.
 * The sums are the direct kernel's, the same products in the same order as the phase convolutions
 * it replaces on wasm, so the values are those of the former path there, bit for bit (except where a
 * phase had 3 × 3 taps, a 5 × 5 filter at stride 2, which the former path ran by Winograd; on cpu it ran
 * TF.js's own loop): within float32 rounding of them everywhere (sub-pixel.test.ts).
 */
import type { SimdGeometry, SimdPlan, SubPixelPhase } from '../threads/conv-protocol.js';
import { POSITION_BLOCK } from './kernel-code.js';
import { alignFloats, chunking, copyPaddedImages, fitsMemory, paddedExtent, reserve } from './memory.js';
import { simdKernels, type SimdKernels } from './instance.js';
import { runShared, simdPieces, simdThreads } from '../threads/parallel-conv.js';

let enabled = true;

/**
 * For benchmarks and tests: whether strided input gradients on wasm and cpu run as one sub-pixel call
 * of the direct SIMD kernels (true, the default) or as separate phase convolutions interleaved
 * afterwards (false, the form before issue 18's change). The values are the same. Returns the previous setting.
 */
export function setSubPixelInputGradient(use: boolean): boolean {
  const previous = enabled;
  enabled = use;
  return previous;
}

/** Where each phase's values go, and what the call lays out in memory. */
interface SubPixelLayout {
  plan: SimdPlan;
  bytes: number;
  /** Multiply-adds of the call (what decides whether it is shared). */
  work: number;
}

/** Taps of a filter side of `size` at stride `stride` that land on phase `phase`: ⌈(size − phase) / stride⌉, none past the filter. */
function phaseTaps(size: number, stride: number, phase: number): number {
  return phase < size ? Math.ceil((size - phase) / stride) : 0;
}

/**
 * The call's plan. Its geometry is the convolution the phases run over dy: dy as x (`inHeight` × `inWidth`
 * × `inChannels` = the forward output), padded by the largest phase's taps − 1 in front, giving
 * `outHeight` × `outWidth` phase rows and columns of dx's `outChannels` channels. dx is laid out padded
 * to whole phases: `strideHeight` · rows × `strideWidth` · columns, the forward padding cropped off
 * when copied out.
 */
function layout(geometry: SimdGeometry): SubPixelLayout {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth, padTop, padLeft } = geometry;
  const rowTaps = Math.ceil(filterHeight / strideHeight);
  const columnTaps = Math.ceil(filterWidth / strideWidth);
  const phaseRows = Math.ceil((padTop + inHeight) / strideHeight);
  const phaseColumns = Math.ceil((padLeft + inWidth) / strideWidth);
  const dyGeometry: SimdGeometry = {
    batchSize,
    inHeight: outHeight,
    inWidth: outWidth,
    inChannels: outChannels,
    outHeight: phaseRows,
    outWidth: phaseColumns,
    outChannels: inChannels,
    filterHeight: rowTaps,
    filterWidth: columnTaps,
    strideHeight: 1,
    strideWidth: 1,
    padTop: rowTaps - 1,
    padLeft: columnTaps - 1,
  };
  const { paddedHeight, paddedWidth } = paddedExtent(dyGeometry);
  const bufferWidth = phaseColumns * strideWidth;
  const phases: SubPixelPhase[] = [];
  let wOffset = 0;
  let work = 0;
  for (let rowPhase = 0; rowPhase < strideHeight; rowPhase++) {
    for (let columnPhase = 0; columnPhase < strideWidth; columnPhase++) {
      const filterRows = phaseTaps(filterHeight, strideHeight, rowPhase);
      const filterColumns = phaseTaps(filterWidth, strideWidth, columnPhase);
      if (filterRows === 0 || filterColumns === 0) continue;
      phases.push({
        rowPhase,
        columnPhase,
        filterRows,
        filterColumns,
        // A phase with fewer taps than the largest starts that much further into the padding.
        xOffset: ((rowTaps - filterRows) * paddedWidth + (columnTaps - filterColumns)) * outChannels,
        wOffset,
        yOffset: (rowPhase * bufferWidth + columnPhase) * inChannels,
      });
      wOffset += filterRows * filterColumns * outChannels * inChannels;
      work += batchSize * phaseRows * phaseColumns * filterRows * filterColumns * outChannels * inChannels;
    }
  }
  const secondStart = alignFloats(batchSize * paddedHeight * paddedWidth * outChannels);
  const outputStart = secondStart + alignFloats(wOffset);
  const imageFloats = phaseRows * strideHeight * bufferWidth * inChannels;
  const { imagesPerChunk } = chunking(dyGeometry, strideHeight * bufferWidth * inChannels);
  const plan: SimdPlan = {
    family: 'sub-pixel',
    geometry: dyGeometry,
    xStart: 0,
    secondStart,
    outputStart,
    regionFloats: 0,
    imagesPerChunk,
    rowsPerChunk: phaseRows,
    subPixel: { strideHeight, strideWidth, phases, zeroFirst: phases.length < strideHeight * strideWidth },
  };
  return { plan, bytes: (outputStart + batchSize * imageFloats) * 4, work };
}

/**
 * Whether {@link simdSubPixelInputGradient} handles this forward geometry here: it is enabled
 * ({@link setSubPixelInputGradient}), the direct kernels run here, a stride above 1, dx's channels (the
 * forward input's) in whole vectors of 4, channels on both sides, padding that is not negative, data
 * that fits a wasm32 memory.
 */
export function simdSubPixelSupports(geometry: SimdGeometry): boolean {
  const { strideHeight, strideWidth, inChannels, outChannels, padTop, padLeft } = geometry;
  if (!enabled || simdKernels() === null || (strideHeight === 1 && strideWidth === 1)) return false;
  return inChannels > 0 && outChannels > 0 && inChannels % 4 === 0 && padTop >= 0 && padLeft >= 0 && fitsMemory(layout(geometry).bytes);
}

/**
 * Computes the gradient of a strided NHWC Conv2D (dilation 1) with respect to its input into `dx`,
 * sharing the batch with the convolution worker threads when `useBackend('wasm', { threads })` started
 * some: `dx[b, i, j, ci] = Σ dy[b, oh, ow, co] · w[i + top − oh·s_h, j + left − ow·s_w, ci, co]` over
 * the taps in range.
 *
 * @param dy The forward output's gradient, `[batch, outHeight, outWidth, outChannels]`.
 * @param w The forward filter, `[filterHeight, filterWidth, inChannels, outChannels]`.
 * @param dx Receives `[batch, inHeight, inWidth, inChannels]`; every value is written.
 * @param geometry The forward convolution's geometry.
 */
export function simdSubPixelInputGradient(dy: Float32Array, w: Float32Array, dx: Float32Array, geometry: SimdGeometry): void {
  const caller = 'simdSubPixelInputGradient';
  const kernels = simdKernels();
  if (kernels === null) throw new Error(`${caller}: this engine has no WebAssembly SIMD`);
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth, padTop, padLeft } = geometry;
  // Shapes as the forward call's: dy is its output, dx its input.
  const sizes: Array<[string, Float32Array, number]> = [
    ['dy', dy, batchSize * outHeight * outWidth * outChannels],
    ['w', w, filterHeight * filterWidth * inChannels * outChannels],
    ['dx', dx, batchSize * inHeight * inWidth * inChannels],
  ];
  for (const [field, values, size] of sizes) {
    if (values.length !== size) throw new RangeError(`${caller}: ${field} has ${values.length} values, expected ${size}`);
  }
  if (strideHeight === 1 && strideWidth === 1) throw new RangeError(`${caller}: a stride above 1 is expected, got 1×1 (stride-1 input gradients are forward convolutions)`);
  if (inChannels % 4 !== 0) throw new RangeError(`${caller}: inChannels must be a multiple of 4, got ${inChannels}`);
  if (padTop < 0 || padLeft < 0) throw new RangeError(`${caller}: padding must not be negative, got top ${padTop}, left ${padLeft}`);
  // A sum over no dy channels (the kernels' loops run at least once: 2³² times for none), or no dx.
  if (outChannels === 0 || inChannels === 0) {
    dx.fill(0);
    return;
  }
  const { plan, bytes, work } = layout(geometry);
  const heap = reserve(kernels, bytes);
  if (heap === undefined) throw new RangeError(`${caller}: ${bytes} bytes of dy, the filter and dx do not fit a WebAssembly memory`);
  // Each phase's taps, flipped, channel axes swapped: [filterRows][filterColumns][outChannels][inChannels].
  const { subPixel } = plan;
  for (const phase of subPixel!.phases) {
    let target = plan.secondStart + phase.wOffset;
    for (let row = 0; row < phase.filterRows; row++) {
      const filterRow = phase.rowPhase + (phase.filterRows - 1 - row) * strideHeight;
      for (let column = 0; column < phase.filterColumns; column++) {
        const tap = (filterRow * filterWidth + phase.columnPhase + (phase.filterColumns - 1 - column) * strideWidth) * inChannels * outChannels;
        for (let output = 0; output < outChannels; output++) {
          for (let input = 0, source = tap + output; input < inChannels; input++, source += outChannels) heap[target++] = w[source]!;
        }
      }
    }
  }
  const { outHeight: phaseRows, outWidth: phaseColumns } = plan.geometry;
  const bufferWidth = phaseColumns * strideWidth;
  const bufferImage = phaseRows * strideHeight * bufferWidth * inChannels;
  const rowFloats = inWidth * inChannels;
  const contiguous = padTop === 0 && padLeft === 0 && bufferWidth === inWidth && phaseRows * strideHeight === inHeight;
  const threads = simdThreads(kernels, batchSize, work);
  runShared(
    kernels,
    plan,
    threads,
    simdPieces(batchSize, threads),
    (first, end) => copyPaddedImages(heap, dy, plan, first, end),
    (first, end) => runSubPixelShare(kernels, plan, first, end),
    // Each piece's images out as soon as it is done, the forward padding cropped off.
    (first, end) => {
      if (contiguous) {
        dx.set(heap.subarray(plan.outputStart + first * bufferImage, plan.outputStart + end * bufferImage), first * bufferImage);
        return;
      }
      for (let image = first; image < end; image++) {
        for (let row = 0; row < inHeight; row++) {
          const source = plan.outputStart + image * bufferImage + ((row + padTop) * bufferWidth + padLeft) * inChannels;
          dx.set(heap.subarray(source, source + rowFloats), (image * inHeight + row) * rowFloats);
        }
      }
    },
  );
}

/**
 * Computes images [first, end) of a planned sub-pixel input gradient: every phase of each chunk of
 * images, written into its rows and columns of the padded dx. Runs on any thread whose kernels share
 * the plan's memory.
 */
export function runSubPixelShare(kernels: SimdKernels, plan: SimdPlan, first: number, end: number): void {
  const { strideHeight, strideWidth, phases, zeroFirst } = plan.subPixel!;
  const { inChannels: dyChannels, outHeight: phaseRows, outWidth: phaseColumns, outChannels: channels } = plan.geometry;
  const { paddedHeight, paddedWidth } = paddedExtent(plan.geometry);
  const bufferWidth = phaseColumns * strideWidth;
  const xImage = paddedHeight * paddedWidth * dyChannels;
  const yImage = phaseRows * strideHeight * bufferWidth * channels;
  const wideBlocks = Math.floor(channels / 8);
  const narrowOffset = wideBlocks * 8;
  const columnBlocks = Math.floor(phaseColumns / POSITION_BLOCK);
  const remainder = phaseColumns - columnBlocks * POSITION_BLOCK;
  const xPosition = 4 * dyChannels;
  const yPosition = 4 * strideWidth * channels;
  if (zeroFirst) new Float32Array(kernels.memory.buffer).fill(0, plan.outputStart + first * yImage, plan.outputStart + end * yImage);
  for (let firstImage = first; firstImage < end; firstImage += plan.imagesPerChunk) {
    const images = Math.min(plan.imagesPerChunk, end - firstImage);
    for (const phase of phases) {
      // images, rows, column blocks, then: xImage, xRow, xPosition, yImage, yRow, yPosition, filterRows, taps, xFilterRow, wTap.
      const strides = [4 * xImage, 4 * paddedWidth * dyChannels, xPosition, 4 * yImage, 4 * strideHeight * bufferWidth * channels, yPosition, phase.filterRows, phase.filterColumns * dyChannels, 4 * paddedWidth * dyChannels, 4 * channels] as const;
      const x = 4 * (plan.xStart + firstImage * xImage + phase.xOffset);
      const w = 4 * (plan.secondStart + phase.wOffset);
      const y = 4 * (plan.outputStart + firstImage * yImage + phase.yOffset);
      const run = (positions: number, blocks: number, firstColumn: number) => {
        const family = kernels.convolution[positions - 1]!;
        const xFirst = x + firstColumn * xPosition;
        const yFirst = y + firstColumn * yPosition;
        if (wideBlocks > 0) family[1]!(xFirst, w, yFirst, images, phaseRows, blocks, ...strides, wideBlocks);
        if (narrowOffset < channels) family[0]!(xFirst, w + 4 * narrowOffset, yFirst + 4 * narrowOffset, images, phaseRows, blocks, ...strides, 1);
      };
      if (columnBlocks > 0) run(POSITION_BLOCK, columnBlocks, 0);
      if (remainder > 0) run(remainder, 1, columnBlocks * POSITION_BLOCK);
    }
  }
}
