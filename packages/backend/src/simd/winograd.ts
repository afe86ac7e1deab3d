/**
 * A stride-1 3 × 3 NHWC Conv2D by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray 2015) in
 * WebAssembly SIMD: 16 multiply-adds per 2 × 2 outputs and channel pair instead of the direct loop's 36.
 * The direct kernel (convolution.ts) already runs at about the limit of 128-bit SIMD on the CPUs we
 * measured, so doing less arithmetic is what is left to gain on the stride-1 3 × 3 layers (forward, and
 * the stride-1 input gradient, a forward convolution with the flipped filter).
 *
 * One call: U = G g Gᵀ of the filter once ([16][input][output channels], winograd-code.ts), x copied
 * zero-padded as for the direct kernel but out to whole 2 × 2 tiles (odd sizes such as 7 × 7 get a last
 * row and column of tiles half outside, whose extra outputs are computed and not copied out). The tiles
 * (enumerated across the images, so that a 4 × 4 layer still fills its blocks) go in blocks of whole
 * tile rows small enough for a core's L2 cache: for each block, V = Bᵀ d B into the block's scratch
 * ([16][tiles][input channels]), the 16 products M[k] = V[k] · U[k] (a 4 tiles × 8 channels register
 * block, as the direct kernel's), and Y = Aᵀ M A into the padded output. The batch is shared with the
 * worker threads as the direct kernel's is, each piece in its own scratch region.
 *
 * F(2, 3) rounds differently from the direct sum: the transforms add and subtract up to 4 inputs
 * before the products and 9 after, and the products are summed in transformed space, so float32
 * results differ from the direct loop's in the last bits. Against a float64 sum it measured no worse:
 * 1.5e-7 to 7.2e-7 of the output's norm where the direct loop had 0.9e-7 to 1.07e-6 (up to 512 input
 * channels), each of the 16 products summing only the input channels, a chain 9× shorter than the
 * direct loop's (winograd.test.ts). Larger tiles (F(4×4, 3×3)) would save more multiply-adds, with
 * transform constants that lose more precision.
 */
import type { SimdGeometry, SimdPlan } from '../threads/conv-protocol.js';
import { runShared, simdPieces, simdThreads } from '../threads/parallel-conv.js';
import { kernelsFor, simdKernels, type SimdKernels } from './instance.js';
import { alignFloats, copyPaddedImages, fitsMemory, reserve } from './memory.js';

/** Rows and columns of 2 × 2 output tiles: the output rounded up to whole tiles (the filter gradient tiles dy the same way). */
export function tileGrid(geometry: SimdGeometry): { tileRows: number; tileColumns: number } {
  return { tileRows: Math.ceil(geometry.outHeight / 2), tileColumns: Math.ceil(geometry.outWidth / 2) };
}

/** The geometry whose output is the whole tiles: its padded x (memory.ts) reaches every tile's window. */
export function tiledGeometry(geometry: SimdGeometry): SimdGeometry {
  const { tileRows, tileColumns } = tileGrid(geometry);
  return { ...geometry, outHeight: 2 * tileRows, outWidth: 2 * tileColumns };
}

/** Bytes of V and M one block of tiles may hold: with the block's share of U, within a core's L2 cache. */
let blockBytes = 256 * 1024;

/** For benchmarks and tests: the scratch bytes of one block of tiles (≥ 1: down to one row of tiles). Returns the previous value. */
export function setWinogradBlockBytes(bytes: number): number {
  const previous = blockBytes;
  blockBytes = bytes;
  return previous;
}

let setting: boolean | 'auto' = 'auto';

/**
 * For benchmarks and tests: whether wasm's `Conv2D` (`simdConvolution`) computes the stride-1 3×3
 * convolutions it can by Winograd F(2×2, 3×3) (`'auto'`, the default, and `true`: it measured faster on
 * all of them, see {@link winogradChosen}) or by the direct kernel (`false`). Returns the previous setting.
 */
export function setWinogradConvolution(use: boolean | 'auto'): boolean | 'auto' {
  const previous = setting;
  setting = use;
  return previous;
}

/**
 * Floats from one tap of the filter (and one matrix of U) to the next: its input × output channels, and
 * 16 more, so that the filter transform's 9 loads and 16 stores are not all a power of two apart (with
 * 128 × 128 channels they were 64 KiB apart, the same set of the L1 cache: the transform took 0.40 ms
 * of a 2.1 ms call).
 */
function filterPlaneFloats(geometry: SimdGeometry): number {
  return geometry.inChannels * geometry.outChannels + 16;
}

/**
 * Floats from one matrix of V (or M) to the next in a block of `tiles` tiles: 16 more than its values,
 * for the same reason as {@link filterPlaneFloats} (blocks of 32 tiles × 64 channels put the input
 * transform's 16 stores 8 KiB apart: it ran 4-5× slower per tile than at 28 × 28 × 16).
 */
export function matrixFloats(tiles: number, channels: number): number {
  return tiles * channels + 16;
}

function layout(geometry: SimdGeometry, regions: number): { plan: SimdPlan; wStart: number; bytes: number } {
  const { batchSize, inChannels, outChannels } = geometry;
  const { tileRows, tileColumns } = tileGrid(geometry);
  const paddedHeight = 2 * tileRows + 2;
  const paddedWidth = 2 * tileColumns + 2;
  const secondStart = alignFloats(batchSize * paddedHeight * paddedWidth * inChannels);
  // The filter, its taps `planeFloats` apart, transformed into U (planes as far apart) before the tiles run.
  const planeFloats = filterPlaneFloats(geometry);
  const wStart = secondStart + 16 * planeFloats;
  const outputStart = wStart + 9 * planeFloats;
  const scratchStart = outputStart + batchSize * 4 * tileRows * tileColumns * outChannels;
  const tileFloats = 16 * (inChannels + outChannels);
  const tileRowsPerBlock = Math.max(1, Math.min(batchSize * tileRows, Math.floor(blockBytes / (4 * tileFloats * tileColumns))));
  const regionFloats = 16 * (matrixFloats(tileRowsPerBlock * tileColumns, inChannels) + matrixFloats(tileRowsPerBlock * tileColumns, outChannels));
  const plan: SimdPlan = {
    family: 'winograd',
    geometry,
    xStart: 0,
    secondStart,
    outputStart,
    regionFloats,
    imagesPerChunk: 1,
    rowsPerChunk: geometry.outHeight,
    scratchStart,
    tileRowsPerBlock,
  };
  return { plan, wStart, bytes: (scratchStart + regions * regionFloats) * 4 };
}

/**
 * Whether {@link simdWinogradConvolution} handles this geometry here: the direct kernels run here, a
 * 3 × 3 filter at stride 1, input and output channels in whole vectors of 4, data that fits a wasm32 memory.
 */
export function simdWinogradSupports(geometry: SimdGeometry): boolean {
  return simdKernels() !== null && isWinogradShape(geometry) && fitsMemory(layout(geometry, Math.min(geometry.batchSize, 256)).bytes);
}

/**
 * The shape both Winograd F(2×2, 3×3) drivers (this forward one and winograd-filter-gradient.ts) take: a
 * 3 × 3 filter at stride 1, input and output channels in whole vectors of 4 (at least one: the kernels'
 * loops run at least once), padding that is not negative.
 */
export function isWinogradShape(geometry: SimdGeometry): boolean {
  const { filterHeight, filterWidth, strideHeight, strideWidth, inChannels, outChannels, padTop, padLeft } = geometry;
  const channels = inChannels > 0 && outChannels > 0 && inChannels % 4 === 0 && outChannels % 4 === 0;
  return filterHeight === 3 && filterWidth === 3 && strideHeight === 1 && strideWidth === 1 && channels && padTop >= 0 && padLeft >= 0;
}

/**
 * Whether `simdConvolution` computes this geometry by Winograd: wherever it can, unless
 * {@link setWinogradConvolution} says otherwise. No geometry it can compute measured slower than the
 * direct kernel (minimum of 40 calls, one thread, relaxed multiply-add): the recipe's 32 × 28×28×16 →
 * 16, 14×14×32 → 32, 7×7×64 → 64 and 4×4×128 → 128 took 1.54, 1.25, 1.46 and 1.44 ms against 2.37,
 * 2.53, 2.48 and 3.15 ms; 4 → 4 channels at 28 × 28 0.32 against 0.33 ms; even where most of the tiles'
 * outputs are padding (32 × 1×1×128 → 128: 0.43 against 0.69 ms, the direct kernel's 1-position blocks
 * being slow too) or the call is small (1 × 7×7×64 → 64: 0.09 against 0.12 ms).
 */
export function winogradChosen(geometry: SimdGeometry): boolean {
  return setting !== false && simdWinogradSupports(geometry);
}

/**
 * How {@link simdWinogradConvolution} reads its filter. `'as-is'`: `[3, 3, inChannels, outChannels]`, tap
 * (i, j) at `w[i, j]`. `'flipped'`: the filter of the forward convolution whose stride-1 input gradient
 * this convolution is, `[3, 3, outChannels, inChannels]`, used flipped in both spatial axes with its
 * channel axes swapped: tap (i, j) is `w[2 − i, 2 − j]` transposed. The filter transform reads it so
 * (winograd-code.ts), where the input gradient otherwise made the flipped filter a tensor of its own
 * first and this copied that in again (ops/conv-gradients.ts); the same values reach the same transform
 * either way, so U and the outputs are the same bit for bit.
 */
export type WinogradFilterForm = 'as-is' | 'flipped';

/**
 * Computes an NHWC convolution with a 3 × 3 filter at stride 1 (dilation 1) by Winograd F(2×2, 3×3)
 * into `y`, sharing the batch with the convolution worker threads when `useBackend('wasm', { threads })`
 * started some.
 *
 * @param x Input values, `[batch, inHeight, inWidth, inChannels]`.
 * @param w Filter values: `[3, 3, inChannels, outChannels]`, or with `filter: 'flipped'` the filter of the
 *   forward convolution whose input gradient this is, `[3, 3, outChannels, inChannels]` (see {@link WinogradFilterForm}).
 * @param y Receives `[batch, outHeight, outWidth, outChannels]`; every value is written.
 * @param filter How to read `w`.
 */
export function simdWinogradConvolution(x: Float32Array, w: Float32Array, y: Float32Array, geometry: SimdGeometry, filter: WinogradFilterForm = 'as-is'): void {
  const kernels = kernelsFor('simdWinogradConvolution', geometry, [
    ['x', x, 'input'],
    ['w', w, 'filter'],
    ['y', y, 'output'],
  ]);
  const { batchSize, inChannels, outChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth } = geometry;
  if (filterHeight !== 3 || filterWidth !== 3) throw new RangeError(`simdWinogradConvolution: the filter must be 3×3, got ${filterHeight}×${filterWidth}`);
  if (strideHeight !== 1 || strideWidth !== 1) throw new RangeError(`simdWinogradConvolution: strides must be 1, got ${strideHeight}×${strideWidth}`);
  if (inChannels % 4 !== 0) throw new RangeError(`simdWinogradConvolution: inChannels must be a multiple of 4, got ${inChannels}`);
  if (filter !== 'as-is' && filter !== 'flipped') throw new RangeError(`simdWinogradConvolution: filter must be 'as-is' or 'flipped', got '${String(filter)}'`);
  // A sum over no input channels, or no outputs (the kernels' loops would run 2³² times).
  if (inChannels === 0 || outChannels === 0) {
    y.fill(0);
    return;
  }
  const { tileRows, tileColumns } = tileGrid(geometry);
  const threads = simdThreads(kernels, batchSize, batchSize * tileRows * tileColumns * 16 * inChannels * outChannels);
  const pieces = simdPieces(batchSize, threads);
  const { plan, wStart, bytes } = layout(geometry, pieces.length);
  const heap = reserve(kernels, bytes);
  if (heap === undefined) throw new RangeError(`simdWinogradConvolution: ${bytes} bytes of x, U, y and scratch do not fit a WebAssembly memory`);
  const pairs = inChannels * outChannels;
  const planeFloats = filterPlaneFloats(geometry);
  if (filter === 'flipped') {
    // The forward filter as it is, in the taps' space (9 planes hold it); the transform reads it flipped
    // and transposed, 4 × 4 channels at a time, into U (the JavaScript loop that wrote the flipped taps,
    // in 4 × 4 blocks, took 0.08 ms of a 3×3×128×128 filter against this copy's 0.02 ms).
    heap.set(w, wStart);
    kernels.winograd.flippedFilter(4 * wStart, 4 * plan.secondStart, inChannels / 4, outChannels / 4, 4 * inChannels, 4 * pairs, 4 * outChannels, 4 * planeFloats);
  } else {
    for (let tap = 0; tap < 9; tap++) heap.set(w.subarray(tap * pairs, (tap + 1) * pairs), wStart + tap * planeFloats);
    kernels.winograd.filter(4 * wStart, 4 * plan.secondStart, pairs / 4, 4 * planeFloats, 4 * planeFloats);
  }
  const tiled = { ...plan, geometry: tiledGeometry(geometry) };
  // The valid outputs of the whole tiles: all of them when the output's sides are even.
  const paddedWidth = 2 * tileColumns;
  const paddedHeight = 2 * tileRows;
  const rowFloats = outWidth * outChannels;
  const imageFloats = outHeight * rowFloats;
  // Each piece's images out as soon as it is done: this thread's while the workers finish theirs.
  const copyOut = (first: number, end: number) => {
    if (paddedWidth === outWidth && paddedHeight === outHeight) {
      y.set(heap.subarray(plan.outputStart + first * imageFloats, plan.outputStart + end * imageFloats), first * imageFloats);
      return;
    }
    for (let image = first; image < end; image++) {
      for (let row = 0; row < outHeight; row++) {
        const source = plan.outputStart + (image * paddedHeight + row) * paddedWidth * outChannels;
        y.set(heap.subarray(source, source + rowFloats), (image * outHeight + row) * rowFloats);
      }
    }
  };
  runShared(
    kernels,
    plan,
    threads,
    pieces,
    (first, end) => copyPaddedImages(heap, x, tiled, first, end),
    (first, end, region) => runWinogradShare(kernels, plan, first, end, region),
    copyOut,
  );
}

/**
 * Computes images [first, end) of a planned Winograd convolution in scratch region `region`. Runs on any
 * thread whose kernels share the plan's memory.
 */
export function runWinogradShare(kernels: SimdKernels, plan: SimdPlan, first: number, end: number, region: number): void {
  const { inChannels, outChannels } = plan.geometry;
  const { tileRows, tileColumns } = tileGrid(plan.geometry);
  const tileRowsPerBlock = plan.tileRowsPerBlock!;
  const paddedHeight = 2 * tileRows + 2;
  const xRowFloats = (2 * tileColumns + 2) * inChannels;
  const yRowFloats = 2 * tileColumns * outChannels;
  const scratch = plan.scratchStart! + region * plan.regionFloats;
  const vStart = scratch;
  const mStart = scratch + 16 * matrixFloats(tileRowsPerBlock * tileColumns, inChannels);
  const { input, output, gemm } = kernels.winograd;
  const wideBlocks = Math.floor(outChannels / 8);
  const narrowOffset = wideBlocks * 8;
  const endRow = end * tileRows;
  for (let firstRow = first * tileRows; firstRow < endRow; firstRow += tileRowsPerBlock) {
    const rows = Math.min(tileRowsPerBlock, endRow - firstRow);
    const tiles = rows * tileColumns;
    const vMatrix = 4 * matrixFloats(tiles, inChannels);
    const mMatrix = 4 * matrixFloats(tiles, outChannels);
    for (let row = 0; row < rows; row++) {
      const image = Math.floor((firstRow + row) / tileRows);
      const tileRow = (firstRow + row) % tileRows;
      const x = plan.xStart + (image * paddedHeight + 2 * tileRow) * xRowFloats;
      input(4 * x, 4 * (vStart + row * tileColumns * inChannels), tileColumns, inChannels / 4, 4 * xRowFloats, 4 * inChannels, 8 * inChannels, vMatrix);
    }
    const multiply = (positions: number, blocks: number, firstTile: number) => {
      const family = gemm[positions - 1]!;
      const v = 4 * (vStart + firstTile * inChannels);
      const m = 4 * (mStart + firstTile * outChannels);
      // matrices, position blocks, vMatrix, uMatrix, mMatrix, taps, vPosition, uTap, mPosition.
      const strides = [16, blocks, vMatrix, 4 * filterPlaneFloats(plan.geometry), mMatrix, inChannels, 4 * inChannels, 4 * outChannels, 4 * outChannels] as const;
      if (wideBlocks > 0) family[1]!(v, 4 * plan.secondStart, m, ...strides, wideBlocks);
      if (narrowOffset < outChannels) family[0]!(v, 4 * (plan.secondStart + narrowOffset), m + 4 * narrowOffset, ...strides, 1);
    };
    const positionBlocks = Math.floor(tiles / 4);
    if (positionBlocks > 0) multiply(4, positionBlocks, 0);
    if (tiles % 4 > 0) multiply(tiles % 4, 1, positionBlocks * 4);
    for (let row = 0; row < rows; row++) {
      const image = Math.floor((firstRow + row) / tileRows);
      const tileRow = (firstRow + row) % tileRows;
      const y = plan.outputStart + (image * 2 * tileRows + 2 * tileRow) * yRowFloats;
      output(4 * (mStart + row * tileColumns * outChannels), 4 * y, tileColumns, outChannels / 4, mMatrix, 4 * yRowFloats, 4 * outChannels, 8 * outChannels);
    }
  }
}
