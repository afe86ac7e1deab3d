/**
 * The stride-1 3 × 3 NHWC filter gradient (Conv2DBackpropFilter) by Winograd F(2×2, 3×3) transposed, in
 * WebAssembly SIMD: 16 multiply-adds per 2 × 2 output-gradient tile and channel pair instead of the
 * direct loop's 36 (filter-gradient.ts). After the forward and input-gradient convolutions went to
 * Winograd (winograd.ts), the stride-1 3 × 3 filter gradients were the largest convolution cost of the
 * recipe's step, and the direct loop runs its 7 × 7 and 4 × 4 layers slowly (short rows of positions).
 *
 * dW = Gᵀ [Σ_t V_t ⊙ W_t] G, per tile t of dy: V_t = Bᵀ d_t B (the forward's input transform of x's
 * 4 × 4 window), W_t = A dY_t Aᵀ (4 × 4 from the tile's 2 × 2 output gradient), the sum over tiles
 * 16 matrix products M[k] = V[k]ᵀ · W[k] (input × output channels, summed over tiles: the direct filter
 * gradient's register block of 4 input × 8 output channels, with tiles for positions). dy is copied
 * zero-padded to whole tiles, so that odd sides (7 × 7) add nothing from past the output. The tiles
 * (across the images) go in blocks of whole tile rows small enough for a core's L2 cache: per block, V
 * and W into the block's scratch, then the products added into the piece's M. The batch is shared with
 * the worker threads as the direct filter gradient's is: one piece of images per region, each piece's
 * M transformed into its own dW there, the pieces' dW added in piece order. So the result does not
 * depend on which thread ran which piece; it does, in the last bits, on how the batch is cut into pieces
 * and tiles into blocks (each block's sums are added into M), as the direct loop's does on its pieces
 * and chunks.
 *
 * Rounding: each M[k] sums a quarter as many products as the direct loop's sums (one per tile, not per
 * position), of values the transforms formed from up to 4 inputs (x) and 2 (dy); the output transform
 * adds up to 9. Against a float64 sum it measured 2.8e-8 to 5.2e-7 of dW's norm where the direct loop
 * had 2.8e-8 to 5.0e-7 (batch 1-32, 4-512 channels; at most 2.4× the direct loop's error, at
 * 32 × 4×4×128 → 128: 3.2e-7 against 1.4e-7; winograd-filter-gradient.test.ts).
 */
import type { SimdGeometry, SimdPlan } from '../threads/conv-protocol.js';
import { runShared, simdPieces, simdThreads } from '../threads/parallel-conv.js';
import { kernelsFor, simdKernels, type SimdKernels } from './instance.js';
import { alignFloats, copyPaddedImages, fitsMemory, reserve, sumRegions } from './memory.js';
// V, W and M matrices are laid out as the forward's (16 floats past their values, off the L1 cache's sets), on the same tiles.
import { isWinogradShape, matrixFloats, tiledGeometry, tileGrid } from './winograd.js';

/** Bytes of V and W one block of tiles may hold: within a core's L2 cache. */
let blockBytes = 512 * 1024;

/** For benchmarks and tests: the scratch bytes of one block of tiles (≥ 1: down to one row of tiles). Returns the previous value. */
export function setWinogradFilterGradientBlockBytes(bytes: number): number {
  const previous = blockBytes;
  blockBytes = bytes;
  return previous;
}

let setting: boolean | 'auto' = 'auto';

/**
 * For benchmarks and tests: whether wasm's `Conv2DBackpropFilter` (`simdFilterGradient`) computes the
 * stride-1 3×3 filter gradients it can by Winograd F(2×2, 3×3) (`'auto'`, the default: where it
 * measured faster, see {@link winogradFilterGradientChosen}; `true`: wherever it can) or by the direct
 * loop (`false`). Returns the previous setting.
 */
export function setWinogradFilterGradient(use: boolean | 'auto'): boolean | 'auto' {
  const previous = setting;
  setting = use;
  return previous;
}

function layout(geometry: SimdGeometry, regions: number): { plan: SimdPlan; bytes: number } {
  const { batchSize, inChannels, outChannels } = geometry;
  const { tileRows, tileColumns } = tileGrid(geometry);
  const secondStart = alignFloats(batchSize * (2 * tileRows + 2) * (2 * tileColumns + 2) * inChannels);
  const outputStart = secondStart + alignFloats(batchSize * 4 * tileRows * tileColumns * outChannels);
  const dwFloats = alignFloats(9 * inChannels * outChannels);
  const scratchStart = outputStart + dwFloats;
  const tileFloats = 16 * (inChannels + outChannels);
  const tileRowsPerBlock = Math.max(1, Math.min(batchSize * tileRows, Math.floor(blockBytes / (4 * tileFloats * tileColumns))));
  const blockTiles = tileRowsPerBlock * tileColumns;
  // A region: the piece's dW, its M, the block's V and W.
  const regionFloats = dwFloats + 16 * (matrixFloats(inChannels, outChannels) + matrixFloats(blockTiles, inChannels) + matrixFloats(blockTiles, outChannels));
  const plan: SimdPlan = {
    family: 'winograd-filter',
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
  return { plan, bytes: (scratchStart + regions * regionFloats) * 4 };
}

/**
 * Whether {@link simdWinogradFilterGradient} handles this geometry here: the SIMD kernels run here, a
 * 3 × 3 filter at stride 1, input and output channels in whole vectors of 4, data that fits a wasm32 memory.
 */
export function simdWinogradFilterGradientSupports(geometry: SimdGeometry): boolean {
  return simdKernels() !== null && isWinogradShape(geometry) && fitsMemory(layout(geometry, Math.min(geometry.batchSize, 256)).bytes);
}

/**
 * Whether `simdFilterGradient` computes this geometry by Winograd: where it can and measured faster
 * than the direct loop, unless {@link setWinogradFilterGradient} says otherwise. Measured (minimum of 20
 * calls interleaved with the direct loop's, one thread, relaxed multiply-add, on the loaded 2-core VM):
 * the recipe's 32 × 28×28×16 → 16, 14×14×32 → 32, 7×7×64 → 64 and 4×4×128 → 128 took 1.83, 1.44, 1.72
 * and 1.83 ms against 2.60, 2.43, 2.56 and 3.85 ms; 2 × 2 and 3 × 3 sides won too (32 × 2×2×128 → 128:
 * 0.60 against 1.11 ms; 3×3×64 → 64: 0.48 against 0.53 ms), and 8 → 8 or 4 → 16 channels at 28 × 28
 * (0.65 against 0.70, 0.67 against 0.70 ms). It lost where a side is 1 (half of every tile or more is
 * padding: 32 × 1×1×128 → 128, 0.60 against 0.50 ms), with 4 → 4 channels (the transforms outweigh the
 * products: 28 × 28, 0.40 against 0.39 ms) and on small calls (1 × 7×7×64 → 64: 0.109 against 0.097 ms;
 * 32 × 5×5×8 → 8: 0.058 against 0.040 ms: zeroing and transforming the 16 matrices M, and many short
 * product calls), so those stay direct: Winograd needs both sides ≥ 2, input × output channels ≥ 64,
 * and that times the call's positions ≥ 2²⁰.
 */
export function winogradFilterGradientChosen(geometry: SimdGeometry): boolean {
  if (setting === false || !simdWinogradFilterGradientSupports(geometry)) return false;
  if (setting === true) return true;
  const { batchSize, outHeight, outWidth, inChannels, outChannels } = geometry;
  const pairs = inChannels * outChannels;
  return outHeight >= 2 && outWidth >= 2 && pairs >= 64 && batchSize * outHeight * outWidth * pairs >= 2 ** 20;
}

/**
 * Computes the filter gradient of an NHWC convolution with a 3 × 3 filter at stride 1 (dilation 1) by
 * Winograd F(2×2, 3×3) into `dw`, sharing the batch with the convolution worker threads when
 * `useBackend('wasm', { threads })` started some.
 *
 * @param x Forward input values, `[batch, inHeight, inWidth, inChannels]`.
 * @param dy Output gradient values, `[batch, outHeight, outWidth, outChannels]`.
 * @param dw Receives `[3, 3, inChannels, outChannels]`; every value is written.
 */
export function simdWinogradFilterGradient(x: Float32Array, dy: Float32Array, dw: Float32Array, geometry: SimdGeometry): void {
  const caller = 'simdWinogradFilterGradient';
  const kernels = kernelsFor(caller, geometry, [
    ['x', x, 'input'],
    ['dy', dy, 'output'],
    ['dw', dw, 'filter'],
  ]);
  const { batchSize, inChannels, outChannels, outHeight, outWidth, filterHeight, filterWidth, strideHeight, strideWidth } = geometry;
  if (filterHeight !== 3 || filterWidth !== 3) throw new RangeError(`${caller}: the filter must be 3×3, got ${filterHeight}×${filterWidth}`);
  if (strideHeight !== 1 || strideWidth !== 1) throw new RangeError(`${caller}: strides must be 1, got ${strideHeight}×${strideWidth}`);
  if (inChannels % 4 !== 0) throw new RangeError(`${caller}: inChannels must be a multiple of 4, got ${inChannels}`);
  const { tileRows, tileColumns } = tileGrid(geometry);
  const threads = simdThreads(kernels, batchSize, batchSize * tileRows * tileColumns * 16 * inChannels * outChannels);
  const pieces = simdPieces(batchSize, threads);
  const { plan, bytes } = layout(geometry, pieces.length);
  const heap = reserve(kernels, bytes);
  if (heap === undefined) throw new RangeError(`${caller}: ${bytes} bytes of x, dy and scratch do not fit a WebAssembly memory`);
  const tiled = { ...plan, geometry: tiledGeometry(geometry) };
  const rowFloats = outWidth * outChannels;
  const paddedRowFloats = 2 * tileColumns * outChannels;
  const regions = runShared(
    kernels,
    plan,
    threads,
    pieces,
    (first, end) => {
      copyPaddedImages(heap, x, tiled, first, end);
      // dy zero-padded to whole tiles: the padding's products add nothing.
      for (let image = first; image < end; image++) {
        for (let row = 0; row < 2 * tileRows; row++) {
          const target = plan.secondStart + (image * 2 * tileRows + row) * paddedRowFloats;
          if (row >= outHeight) {
            heap.fill(0, target, target + paddedRowFloats);
            continue;
          }
          const source = (image * outHeight + row) * rowFloats;
          heap.set(dy.subarray(source, source + rowFloats), target);
          heap.fill(0, target + rowFloats, target + paddedRowFloats);
        }
      }
    },
    (first, end, region) => runWinogradFilterGradientShare(kernels, plan, first, end, region),
  );
  // Each region starts with its piece's dW (then its M, V and W).
  sumRegions(kernels, dw, plan.scratchStart!, plan.regionFloats, regions);
}

/**
 * Sums images [first, end) of a planned Winograd filter gradient into region `region`'s dW (its M
 * zeroed first). Runs on any thread whose kernels share the plan's memory.
 */
export function runWinogradFilterGradientShare(kernels: SimdKernels, plan: SimdPlan, first: number, end: number, region: number): void {
  const { inChannels, outChannels } = plan.geometry;
  const { tileRows, tileColumns } = tileGrid(plan.geometry);
  const tileRowsPerBlock = plan.tileRowsPerBlock!;
  const paddedHeight = 2 * tileRows + 2;
  const xRowFloats = (2 * tileColumns + 2) * inChannels;
  const dyRowFloats = 2 * tileColumns * outChannels;
  const dwStart = plan.scratchStart! + region * plan.regionFloats;
  const mStart = dwStart + alignFloats(9 * inChannels * outChannels);
  const mMatrix = matrixFloats(inChannels, outChannels);
  const vStart = mStart + 16 * mMatrix;
  const blockTiles = tileRowsPerBlock * tileColumns;
  const wStart = vStart + 16 * matrixFloats(blockTiles, inChannels);
  new Float32Array(kernels.memory.buffer).fill(0, mStart, mStart + 16 * mMatrix);
  const { input, gradient, filterGradient } = kernels.winograd;
  const products = kernels.filter[3]!;
  const wideBlocks = Math.floor(outChannels / 8);
  const narrowOffset = wideBlocks * 8;
  const endRow = end * tileRows;
  for (let firstRow = first * tileRows; firstRow < endRow; firstRow += tileRowsPerBlock) {
    const rows = Math.min(tileRowsPerBlock, endRow - firstRow);
    const tiles = rows * tileColumns;
    const vMatrix = matrixFloats(tiles, inChannels);
    const wMatrix = matrixFloats(tiles, outChannels);
    for (let row = 0; row < rows; row++) {
      const image = Math.floor((firstRow + row) / tileRows);
      const tileRow = (firstRow + row) % tileRows;
      const x = plan.xStart + (image * paddedHeight + 2 * tileRow) * xRowFloats;
      input(4 * x, 4 * (vStart + row * tileColumns * inChannels), tileColumns, inChannels / 4, 4 * xRowFloats, 4 * inChannels, 8 * inChannels, 4 * vMatrix);
      const dy = plan.secondStart + (image * 2 * tileRows + 2 * tileRow) * dyRowFloats;
      gradient(4 * dy, 4 * (wStart + row * tileColumns * outChannels), tileColumns, outChannels / 4, 4 * dyRowFloats, 4 * outChannels, 8 * outChannels, 4 * wMatrix);
    }
    // M[k] += V[k]ᵀ W[k]: 4 input × 8 output channels in registers, summed over the block's tiles.
    // images, rows, columns, xImage, xRow, xColumn, dyPosition, dwRow.
    const strides = [1, 1, tiles, 0, 0, 4 * inChannels, 4 * outChannels, 4 * outChannels] as const;
    for (let k = 0; k < 16; k++) {
      const w = 4 * (wStart + k * wMatrix);
      for (let firstInput = 0; firstInput < inChannels; firstInput += 4) {
        const v = 4 * (vStart + k * vMatrix + firstInput);
        const m = 4 * (mStart + k * mMatrix + firstInput * outChannels);
        if (wideBlocks > 0) products[1]!(v, w, m, ...strides, wideBlocks);
        if (narrowOffset < outChannels) products[0]!(v, w + 4 * narrowOffset, m + 4 * narrowOffset, ...strides, 1);
      }
    }
  }
  filterGradient(4 * mStart, 4 * dwStart, (inChannels * outChannels) / 4, 4 * mMatrix, 4 * inChannels * outChannels);
}
