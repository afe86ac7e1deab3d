/**
 * Conv2D gradients written as a few large tf ops (strided slices, one matMul, stride-1 convolutions), so
 * that each backend runs them through its fastest kernels (XNNPACK's GEMM and convolution on wasm).
 *
 * TF.js 4.22 ships no `Conv2DBackpropFilter` for wasm at all, and the cpu one is a scalar six-deep loop;
 * the wasm `Conv2DBackpropInput` is a direct loop several times slower than the forward convolution.
 */
import * as tf from '@tensorflow/tfjs-core';
import { float32Buffers } from '../typed-array-backend.js';
import { simdFilterGradient, simdFilterGradientAvailable, simdFilterGradientSupports, type FilterGradientGeometry } from '../simd/filter-gradient.js';
import { simdSubPixelInputGradient, simdSubPixelSupports } from '../simd/sub-pixel.js';
import { simdConvolutionSupports } from '../simd/convolution.js';
import { simdWinogradConvolution, winogradChosen } from '../simd/winograd.js';
import { isOurs } from '../kernels/registry.js';
import type { SimdGeometry } from '../threads/conv-protocol.js';

/** Padding as the Conv2D kernels accept it: a mode, a single number, or explicit `[[0,0],[t,b],[l,r],[0,0]]`. */
export type ConvPadding = 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;

/** Attributes of a convolution gradient, exactly as TF.js passes them to the backprop kernels. */
export interface ConvGradientAttributes {
  /** Strides `[height, width]` or one number for both. */
  strides: [number, number] | number;
  /** Padding of the forward convolution. */
  pad: ConvPadding;
  /** Layout of `x`, `dy` and `dx`; the filter is always `[height, width, inChannels, outChannels]`. */
  dataFormat?: 'NHWC' | 'NCHW';
  /** How a fractional output size rounds when `pad` is a number. */
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/** The attributes of a backprop kernel call that the gradient functions read. */
export function convGradientAttributesOf(attrs: tf.NamedAttrMap | undefined): ConvGradientAttributes {
  const { strides, pad, dataFormat, dimRoundingMode } = (attrs ?? {}) as unknown as ConvGradientAttributes;
  return { strides, pad, dataFormat, dimRoundingMode };
}

/**
 * How the filter gradient is formed. `direct` (the default, the fastest measured: see the package README)
 * is one WebAssembly SIMD loop over the positions on backends whose values are in memory (wasm, cpu;
 * stride-1 3×3 filters by Winograd F(2×2, 3×3) where that measured faster, simd/winograd-filter-gradient.ts)
 * and `convolution` elsewhere (or without WebAssembly SIMD, or with output channels not a multiple of 4).
 * (Two GEMM forms measured slower are kept for the benchmark only: filter-gradient-matmul.ts.)
 */
export type FilterGradientMethod = 'direct' | 'convolution';
/** How the input gradient is formed; `sub-pixel` is the fastest measured (see the package README); both are the same at stride 1. */
export type InputGradientMethod = 'sub-pixel' | 'zero-insertion';

type Rank4 = [number, number, number, number];

export function toNhwc(t: tf.Tensor4D, dataFormat: 'NHWC' | 'NCHW' | undefined): tf.Tensor4D {
  return dataFormat === 'NCHW' ? tf.transpose(t, [0, 2, 3, 1]) : t;
}

function nhwcShape(shape: Rank4, dataFormat: 'NHWC' | 'NCHW' | undefined): Rank4 {
  const [n, a, b, c] = shape;
  return dataFormat === 'NCHW' ? [n, b, c, a] : shape;
}

export function convolutionInfo(
  inputShape: Rank4,
  filterShape: Rank4,
  attributes: ConvGradientAttributes,
): tf.backend_util.Conv2DInfo {
  // Inputs are converted to NHWC before this, so the layout here is always channels-last.
  return tf.backend_util.computeConv2DInfo(
    nhwcShape(inputShape, attributes.dataFormat),
    filterShape,
    attributes.strides,
    1,
    attributes.pad,
    attributes.dimRoundingMode,
    false,
    'channelsLast',
  );
}

/**
 * Pads (positive amounts) or crops (negative amounts) the two spatial axes of an NHWC tensor. Gradient
 * windows can need less than the forward padding (a 'valid' convolution whose stride skips the last rows)
 * or more (numeric padding rounded up with `dimRoundingMode: 'ceil'`).
 */
function padOrCrop(t: tf.Tensor4D, top: number, bottom: number, left: number, right: number): tf.Tensor4D {
  const cropped =
    top < 0 || bottom < 0 || left < 0 || right < 0
      ? tf.slice(
          t,
          [0, Math.max(0, -top), Math.max(0, -left), 0],
          [
            t.shape[0],
            t.shape[1] - Math.max(0, -top) - Math.max(0, -bottom),
            t.shape[2] - Math.max(0, -left) - Math.max(0, -right),
            t.shape[3],
          ],
        )
      : t;
  if (top <= 0 && bottom <= 0 && left <= 0 && right <= 0) return cropped;
  return tf.pad(cropped, [
    [0, 0],
    [Math.max(0, top), Math.max(0, bottom)],
    [Math.max(0, left), Math.max(0, right)],
    [0, 0],
  ]);
}

/**
 * A stride-1 'valid' convolution of `x` padded (positive amounts) or cropped (negative amounts) on its
 * spatial axes. Padding alone goes to the convolution itself (XNNPACK reads zeros instead of a padded
 * copy); a crop needs the slice.
 */
function convolvePadded(
  x: tf.Tensor4D,
  filter: tf.Tensor4D,
  [top, bottom, left, right]: [number, number, number, number],
  dilations: [number, number] = [1, 1],
): tf.Tensor4D {
  if (top >= 0 && bottom >= 0 && left >= 0 && right >= 0) {
    return tf.conv2d(x, filter, 1, [[0, 0], [top, bottom], [left, right], [0, 0]], 'NHWC', dilations);
  }
  return tf.conv2d(padOrCrop(x, top, bottom, left, right), filter, 1, 'valid', 'NHWC', dilations);
}

/** The window of padded `x` that tap (row, column) of the filter sees: shape [batch, outHeight, outWidth, inChannels]. */
export function tapWindow(xPadded: tf.Tensor4D, info: tf.backend_util.Conv2DInfo, row: number, column: number): tf.Tensor4D {
  const { batchSize, outHeight, outWidth, inChannels, strideHeight, strideWidth } = info;
  if (strideHeight === 1 && strideWidth === 1) {
    return tf.slice(xPadded, [0, row, column, 0], [batchSize, outHeight, outWidth, inChannels]);
  }
  return tf.stridedSlice(
    xPadded,
    [0, row, column, 0],
    [batchSize, row + (outHeight - 1) * strideHeight + 1, column + (outWidth - 1) * strideWidth + 1, inChannels],
    [1, strideHeight, strideWidth, 1],
  ) as tf.Tensor4D;
}

/**
 * The input pixels a 1×1 filter with no padding visits, `x[:, i·s_h, j·s_w, :]` for every output
 * position: one copy loop on wasm and cpu (wasm's strided slices took 40-160 ms for these shapes).
 */
function subsample(x: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, strideHeight, strideWidth } = info;
  if (strideHeight === 1 && strideWidth === 1 && outHeight === inHeight && outWidth === inWidth) return x;
  if (!valuesInMemory() || x.dtype !== 'float32') return tapWindow(x, info, 0, 0);
  const buffers = float32Buffers('subsample', tf.backend(), [x], [[batchSize, outHeight, outWidth, inChannels]]);
  const source = buffers.inputs[0]!;
  const target = buffers.outputs[0]!.values;
  let index = 0;
  for (let batch = 0; batch < batchSize; batch++) {
    for (let row = 0; row < outHeight; row++) {
      for (let column = 0; column < outWidth; column++) {
        const start = ((batch * inHeight + row * strideHeight) * inWidth + column * strideWidth) * inChannels;
        for (let channel = 0; channel < inChannels; channel++) target[index++] = source[start + channel]!;
      }
    }
  }
  return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
}

/** Padding (or, negative, cropping) of `x` so that every filter window is in range and nothing past the last window remains. */
function windowPadding(info: tf.backend_util.Conv2DInfo): [number, number, number, number] {
  const { inHeight, inWidth, outHeight, outWidth, strideHeight, strideWidth, filterHeight, filterWidth, padInfo } = info;
  const neededHeight = (outHeight - 1) * strideHeight + filterHeight;
  const neededWidth = (outWidth - 1) * strideWidth + filterWidth;
  return [padInfo.top, neededHeight - inHeight - padInfo.top, padInfo.left, neededWidth - inWidth - padInfo.left];
}

/** `x` padded so that every filter window is in range and nothing past the last window remains. */
export function padForWindows(x: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  return padOrCrop(x, ...windowPadding(info));
}

/** The direct form's geometry, or undefined where `conv2dFilterGradient`'s default does not run it (backend, dtype, channels). */
function directGeometry(
  x: tf.TensorInfo,
  dy: tf.TensorInfo,
  filterShape: Rank4,
  attributes: ConvGradientAttributes,
): FilterGradientGeometry | undefined {
  if (!valuesInMemory() || x.dtype !== 'float32' || dy.dtype !== 'float32' || !simdFilterGradientAvailable()) return undefined;
  const info = convolutionInfo(x.shape as Rank4, filterShape, attributes);
  const geometry: FilterGradientGeometry = { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
  return simdFilterGradientSupports(geometry) ? geometry : undefined;
}

/** Whether {@link conv2dFilterGradient}'s default method runs the direct SIMD loop for these inputs on the active backend. */
export function filterGradientIsDirect(x: tf.TensorInfo, dy: tf.TensorInfo, filterShape: Rank4, attributes: ConvGradientAttributes): boolean {
  return directGeometry(x, dy, filterShape, attributes) !== undefined;
}

/**
 * Gradient of a Conv2D with respect to its filter: `dW[kh, kw, ci, co] = Σ x[b, oh·s+kh−top, ow·s+kw−left, ci] · dy[b, oh, ow, co]`.
 *
 * @param x Forward input, NHWC (or NCHW with `dataFormat: 'NCHW'`).
 * @param dy Gradient of the loss with respect to the forward output, same layout as `x`.
 * @param filterShape `[height, width, inChannels, outChannels]` of the filter.
 * @param attributes Strides, padding and layout of the forward convolution.
 * @param method Formulation; the default is the fastest measured.
 * @returns The filter gradient, shape `filterShape`. The caller owns it; all intermediates are disposed.
 */
export function conv2dFilterGradient(
  x: tf.Tensor4D,
  dy: tf.Tensor4D,
  filterShape: Rank4,
  attributes: ConvGradientAttributes,
  method: FilterGradientMethod = 'direct',
): tf.Tensor4D {
  return tf.tidy(() => {
    const info = convolutionInfo(x.shape, filterShape, attributes);
    const { batchSize, outHeight, outWidth, inChannels, outChannels, filterHeight, filterWidth } = info;
    const dyNhwc = toNhwc(dy, attributes.dataFormat);
    const positions = batchSize * outHeight * outWidth;

    if (method === 'direct') {
      const geometry = directGeometry(x, dy, filterShape, attributes);
      if (geometry !== undefined) {
        const buffers = float32Buffers('Conv2DBackpropFilter', tf.backend(), [toNhwc(x, attributes.dataFormat), dyNhwc], [filterShape]);
        simdFilterGradient(buffers.inputs[0]!, buffers.inputs[1]!, buffers.outputs[0]!.values, geometry);
        return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
      }
      method = 'convolution';
    }

    if (method === 'convolution' && filterHeight === 1 && filterWidth === 1 && info.padInfo.top === 0 && info.padInfo.left === 0) {
      // A 1×1 filter's gradient is one GEMM over the positions it visits: dW = x_sᵀ·dy (4-6 ms → 1-4 ms
      // for a ResNet shortcut, whose dilated-convolution form packs all of dy as a filter).
      const visited = subsample(toNhwc(x, attributes.dataFormat), info);
      // The transpose is explicit: wasm's shipped BatchMatMul (which a worker thread runs) loops in
      // scalar code for transposeA.
      const visitedT = tf.transpose(tf.reshape(visited, [positions, inChannels]));
      const gradient = tf.matMul(visitedT, tf.reshape(dyNhwc, [positions, outChannels]));
      return tf.reshape(gradient, filterShape);
    }

    if (method === 'convolution') {
      // Batch becomes the reduced channel axis: a stride-1 convolution of x (channels as batch) with dy as
      // a filter dilated by the forward stride; the forward padding is the convolution's own.
      const xByChannel = tf.transpose(toNhwc(x, attributes.dataFormat), [3, 1, 2, 0]);
      const dyAsFilter = tf.transpose(dyNhwc, [1, 2, 0, 3]);
      const byChannel = convolvePadded(xByChannel, dyAsFilter, windowPadding(info), [info.strideHeight, info.strideWidth]);
      return tf.transpose(byChannel, [1, 2, 0, 3]);
    }

    throw new Error(`conv2dFilterGradient: unknown method '${String(method)}'; expected 'direct' or 'convolution'`);
  });
}

let loopsEnabled = true;

/** For tests: `false` makes the helpers below use tf ops on every backend. Returns the previous setting. */
export function setValueLoops(enabled: boolean): boolean {
  const previous = loopsEnabled;
  loopsEnabled = enabled;
  return previous;
}

/** Whether the active backend keeps values in CPU memory, where the loops below beat a chain of small ops. */
function valuesInMemory(): boolean {
  const name = tf.getBackend();
  return loopsEnabled && (name === 'wasm' || name === 'cpu');
}

/**
 * Taps of the filter flipped in both spatial axes with its channel axes swapped, as the input gradient
 * convolves with it: `[i, j, o, c] = filter[h − 1 − rows[i], w − 1 − columns[j], c, o]` (rows and
 * columns index the flipped filter). On wasm and cpu one loop over the values; `tf.reverse` and
 * `tf.stridedSlice` on wasm took ≈1–4 ms each for a [3, 3, 128, 128] filter.
 */
function flippedTaps(filter: tf.Tensor4D, rows: number[], columns: number[]): tf.Tensor4D {
  const [height, width, inChannels, outChannels] = filter.shape;
  if (!valuesInMemory() || filter.dtype !== 'float32') {
    const flipped = tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]);
    const tap = (row: number, column: number) => tf.reshape(tf.slice(flipped, [row, column, 0, 0], [1, 1, outChannels, inChannels]), [outChannels, inChannels]);
    return tf.stack(rows.map((row) => tf.stack(columns.map((column) => tap(row, column))))) as tf.Tensor4D;
  }
  const buffers = float32Buffers('flippedTaps', tf.backend(), [filter], [[rows.length, columns.length, outChannels, inChannels]]);
  const source = buffers.inputs[0]!;
  const target = buffers.outputs[0]!.values;
  let index = 0;
  for (const row of rows) {
    for (const column of columns) {
      const tap = ((height - 1 - row) * width + (width - 1 - column)) * inChannels * outChannels;
      for (let output = 0; output < outChannels; output++) {
        for (let input = 0; input < inChannels; input++) target[index++] = source[tap + input * outChannels + output]!;
      }
    }
  }
  return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
}

const range = (start: number, end: number, step = 1): number[] => Array.from({ length: Math.max(0, Math.ceil((end - start) / step)) }, (_, index) => start + index * step);

let winogradInputGradient = true;

/**
 * For benchmarks and tests: whether the stride-1 input gradient hands the forward filter to the Winograd
 * kernel itself (true, the default), whose filter transform reads it flipped and transposed, or
 * makes the flipped filter a tensor first and convolves with it through `tf.conv2d` (false: the path
 * before issue 18's change, which computes the same values). Returns the previous setting.
 */
export function setWinogradInputGradient(direct: boolean): boolean {
  const previous = winogradInputGradient;
  winogradInputGradient = direct;
  return previous;
}

/**
 * A stride-1 input gradient computed by the Winograd kernel directly from the forward filter, where
 * `tf.conv2d` with the flipped filter would run that kernel anyway (our `Conv2D` is registered for the
 * active backend, float32, padding not negative, and `winogradChosen` for the convolution's geometry):
 * the flipped filter as a tensor (a JavaScript loop over its values, then copied into the kernel's
 * memory again) cost more main-thread time than the forward convolution of the same shape (0.67 against
 * 0.16 ms at 32 × 4×4×128). Its values, and so dx, are those `tf.conv2d` gives bit for bit. Undefined
 * where that path does not run Winograd: the caller takes it.
 *
 * @param top Rows of zeros above dy (filter height − 1 − the forward padding); `left` likewise.
 */
function inputGradientByWinograd(dy: tf.Tensor4D, filter: tf.Tensor4D, info: tf.backend_util.Conv2DInfo, top: number, left: number): tf.Tensor4D | undefined {
  if (!winogradInputGradient || !valuesInMemory() || !isOurs(tf.getBackend(), tf.Conv2D) || dy.dtype !== 'float32' || filter.dtype !== 'float32') return undefined;
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth } = info;
  // The padding below and to the right that convolvePadded would give tf.conv2d; negative would be a crop.
  const bottom = inHeight + filterHeight - 1 - top - outHeight;
  const right = inWidth + filterWidth - 1 - left - outWidth;
  if (top < 0 || left < 0 || bottom < 0 || right < 0) return undefined;
  // The convolution of dy with the flipped filter: dy's channels in, x's out, dx's size out.
  const geometry: SimdGeometry = {
    batchSize,
    inHeight: outHeight,
    inWidth: outWidth,
    inChannels: outChannels,
    outHeight: inHeight,
    outWidth: inWidth,
    outChannels: inChannels,
    filterHeight,
    filterWidth,
    strideHeight: 1,
    strideWidth: 1,
    padTop: top,
    padLeft: left,
  };
  // Exactly where our Conv2D would take Winograd for it (kernels/conv2d.ts, simd/convolution.ts).
  if (!simdConvolutionSupports(geometry) || !winogradChosen(geometry)) return undefined;
  const buffers = float32Buffers(tf.Conv2DBackpropInput, tf.backend(), [dy, filter], [[batchSize, inHeight, inWidth, inChannels]]);
  simdWinogradConvolution(buffers.inputs[0]!, buffers.inputs[1]!, buffers.outputs[0]!.values, geometry, 'flipped');
  return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
}

/**
 * Zero-insertion: scatter dy onto the stride grid, then one stride-1 convolution with the flipped filter.
 * Simple, but for stride s it multiplies s² times more zeros than values.
 */
function inputGradientZeroInsertion(dy: tf.Tensor4D, filter: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  const { batchSize, outHeight, outWidth, outChannels, strideHeight, strideWidth, filterHeight, filterWidth, padInfo } = info;
  let spread = dy;
  if (strideHeight > 1 || strideWidth > 1) {
    const withGaps = tf.pad(tf.reshape(dy, [batchSize, outHeight, 1, outWidth, 1, outChannels]), [
      [0, 0],
      [0, 0],
      [0, strideHeight - 1],
      [0, 0],
      [0, strideWidth - 1],
      [0, 0],
    ]);
    spread = tf.reshape(withGaps, [batchSize, outHeight * strideHeight, outWidth * strideWidth, outChannels]);
  }
  const top = filterHeight - 1 - padInfo.top;
  const left = filterWidth - 1 - padInfo.left;
  if (strideHeight === 1 && strideWidth === 1) {
    const direct = inputGradientByWinograd(dy, filter, info, top, left);
    if (direct !== undefined) return direct;
  }
  const flipped = flippedTaps(filter, range(0, filterHeight), range(0, filterWidth));
  return convolvePadded(spread, flipped, [
    top,
    info.inHeight + filterHeight - 1 - top - spread.shape[1],
    left,
    info.inWidth + filterWidth - 1 - left - spread.shape[2],
  ]);
}

/**
 * Sub-pixel: each of the s_h·s_w output phases is a stride-1 convolution of dy with the taps of the filter
 * that land on that phase; the phases are then interleaved with one reshape. No multiplication by zero.
 */
function inputGradientSubPixel(dy: tf.Tensor4D, filter: tf.Tensor4D, info: tf.backend_util.Conv2DInfo): tf.Tensor4D {
  const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, strideHeight, strideWidth, padInfo } = info;
  if (strideHeight === 1 && strideWidth === 1) return inputGradientZeroInsertion(dy, filter, info);
  if (valuesInMemory() && dy.dtype === 'float32' && filter.dtype === 'float32') {
    // One call of the direct SIMD kernels: dy copied once, every phase written into dx in place, the
    // batch shared with the worker threads (simd/sub-pixel.ts).
    const geometry = { ...info, padTop: padInfo.top, padLeft: padInfo.left };
    if (simdSubPixelSupports(geometry)) {
      const buffers = float32Buffers(tf.Conv2DBackpropInput, tf.backend(), [dy, filter], [[batchSize, inHeight, inWidth, inChannels]]);
      simdSubPixelInputGradient(buffers.inputs[0]!, buffers.inputs[1]!, buffers.outputs[0]!.values, geometry);
      return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
    }
  }
  // Positions u = i + top on the padded grid split as u = q·s + phase; rows q run over [0, rowsPerPhase).
  const rowsPerPhase = Math.ceil((padInfo.top + inHeight) / strideHeight);
  const columnsPerPhase = Math.ceil((padInfo.left + inWidth) / strideWidth);
  const { filterHeight, filterWidth } = info;
  // phases[rowPhase][columnPhase]: [batch, rowsPerPhase, columnsPerPhase, inChannels], or null where no tap lands.
  const phases: Array<Array<tf.Tensor4D | null>> = [];
  for (let rowPhase = 0; rowPhase < strideHeight; rowPhase++) {
    const columnPhases: Array<tf.Tensor4D | null> = [];
    for (let columnPhase = 0; columnPhase < strideWidth; columnPhase++) {
      const tapRows = rowPhase < filterHeight ? Math.ceil((filterHeight - rowPhase) / strideHeight) : 0;
      const tapColumns = columnPhase < filterWidth ? Math.ceil((filterWidth - columnPhase) / strideWidth) : 0;
      if (tapRows === 0 || tapColumns === 0) {
        columnPhases.push(null);
        continue;
      }
      // Taps rowPhase, rowPhase+s, … of the filter, flipped: in the flipped filter they sit at
      // filterHeight−1−rowPhase−m·s, i.e. every s-th row running backwards from the end.
      const lastRow = filterHeight - 1 - rowPhase - (tapRows - 1) * strideHeight;
      const lastColumn = filterWidth - 1 - columnPhase - (tapColumns - 1) * strideWidth;
      const subFilter = flippedTaps(filter, range(lastRow, filterHeight - rowPhase, strideHeight), range(lastColumn, filterWidth - columnPhase, strideWidth));
      // dx at q reads dy[q − m] for m < taps: pad taps−1 in front, and enough behind to reach q = rowsPerPhase−1.
      columnPhases.push(convolvePadded(dy, subFilter, [tapRows - 1, rowsPerPhase - outHeight, tapColumns - 1, columnsPerPhase - outWidth]));
    }
    phases.push(columnPhases);
  }
  return interleavePhases(phases, info, rowsPerPhase, columnsPerPhase);
}

/**
 * dx from its phases: dx[b, i, j] = phases[u mod s_h][v mod s_w][b, ⌊u/s_h⌋, ⌊v/s_w⌋] with u = i + top,
 * v = j + left. On wasm and cpu one pass writing dx; elsewhere two stacks, a reshape and a slice.
 */
function interleavePhases(
  phases: Array<Array<tf.Tensor4D | null>>,
  info: tf.backend_util.Conv2DInfo,
  rowsPerPhase: number,
  columnsPerPhase: number,
): tf.Tensor4D {
  const { batchSize, inHeight, inWidth, inChannels, strideHeight, strideWidth, padInfo } = info;
  const present = phases.flat().filter((phase): phase is tf.Tensor4D => phase !== null);
  if (!valuesInMemory() || present.some((phase) => phase.dtype !== 'float32')) {
    const zeros = () => tf.zeros([batchSize, rowsPerPhase, columnsPerPhase, inChannels]) as tf.Tensor4D;
    // [batch, q_r, q_c, phase_c, channels], then [batch, q_r, phase_r, q_c, phase_c, channels] → rows q_r·s + phase_r.
    const rows = phases.map((columnPhases) => tf.stack(columnPhases.map((phase) => phase ?? zeros()), 3));
    const interleaved = tf.reshape<tf.Rank.R4>(tf.stack(rows, 2), [batchSize, rowsPerPhase * strideHeight, columnsPerPhase * strideWidth, inChannels]);
    return tf.slice(interleaved, [0, padInfo.top, padInfo.left, 0], [batchSize, inHeight, inWidth, inChannels]);
  }
  const buffers = float32Buffers('interleavePhases', tf.backend(), present, [[batchSize, inHeight, inWidth, inChannels]]);
  const views: Array<Array<Float32Array | null>> = [];
  let next = 0;
  for (const columnPhases of phases) views.push(columnPhases.map((phase) => (phase === null ? null : buffers.inputs[next++]!)));
  const dx = buffers.outputs[0]!.values;
  // Zeros first where a phase has no tap (a 1×1 filter at stride 2 leaves three quarters of dx so), then
  // each present phase copied to every s-th row and column of dx: no division or test per pixel.
  if (present.length < strideHeight * strideWidth) dx.fill(0);
  const imageFloats = inHeight * inWidth * inChannels;
  const rowFloats = inWidth * inChannels;
  const columnStep = strideWidth * inChannels;
  for (let rowPhase = 0; rowPhase < strideHeight; rowPhase++) {
    // The first dx row i with (i + top) mod s_h = rowPhase; phase row q = (i + top − rowPhase) / s_h.
    const firstRow = (((rowPhase - padInfo.top) % strideHeight) + strideHeight) % strideHeight;
    for (let columnPhase = 0; columnPhase < strideWidth; columnPhase++) {
      const phase = views[rowPhase]![columnPhase];
      if (phase === null || phase === undefined) continue;
      const firstColumn = (((columnPhase - padInfo.left) % strideWidth) + strideWidth) % strideWidth;
      const firstSourceColumn = (firstColumn + padInfo.left - columnPhase) / strideWidth;
      for (let batch = 0; batch < batchSize; batch++) {
        for (let row = firstRow; row < inHeight; row += strideHeight) {
          const q = (row + padInfo.top - rowPhase) / strideHeight;
          let source = ((batch * rowsPerPhase + q) * columnsPerPhase + firstSourceColumn) * inChannels;
          const rowStart = batch * imageFloats + row * rowFloats;
          for (let target = rowStart + firstColumn * inChannels, end = rowStart + rowFloats; target < end; target += columnStep) {
            for (let channel = 0; channel < inChannels; channel++) dx[target + channel] = phase[source + channel]!;
            source += inChannels;
          }
        }
      }
    }
  }
  return tf.engine().makeTensorFromTensorInfo(buffers.outputs[0]!.info) as tf.Tensor4D;
}

/**
 * Gradient of a Conv2D with respect to its input.
 *
 * @param inputShape Shape of the forward input, in `attributes.dataFormat` layout.
 * @param dy Gradient of the loss with respect to the forward output.
 * @param filter The forward filter, `[height, width, inChannels, outChannels]`.
 * @param attributes Strides, padding and layout of the forward convolution.
 * @param method Formulation; the default is the fastest measured.
 * @returns The input gradient, shape `inputShape`. The caller owns it; all intermediates are disposed.
 */
export function conv2dInputGradient(
  inputShape: Rank4,
  dy: tf.Tensor4D,
  filter: tf.Tensor4D,
  attributes: ConvGradientAttributes,
  method: InputGradientMethod = 'sub-pixel',
): tf.Tensor4D {
  return tf.tidy(() => {
    const info = convolutionInfo(inputShape, filter.shape, attributes);
    const dyNhwc = toNhwc(dy, attributes.dataFormat);
    const dx =
      method === 'zero-insertion'
        ? inputGradientZeroInsertion(dyNhwc, filter, info)
        : inputGradientSubPixel(dyNhwc, filter, info);
    return attributes.dataFormat === 'NCHW' ? tf.transpose(dx, [0, 3, 1, 2]) : dx;
  });
}
