/** What the convolution pool (conv-pool.ts) and its workers (conv-worker.ts) exchange. */

/** Slots of the Int32Array over a worker's control buffer. */
export const CONTROL = { state: 0, ready: 1 } as const;

/** Values of `CONTROL.state`. */
export const State = { Idle: 0, Work: 1, Done: 2, Failed: 3, Stop: 4 } as const;

/** One input of a job: where its values start in the shared buffer (in floats) and its shape. */
export interface JobInput {
  offset: number;
  shape: number[];
}

/**
 * A worker's share of one convolution: `forward` (inputs x, filter → y), `filter` (x, dy → dW, to be
 * summed over the shares) or `input` (dy, filter → dx), with the forward convolution's attributes
 * (NHWC). `buffer`, when present, replaces the worker's shared buffer (it grows with the jobs).
 */
export interface ConvJob {
  kind: 'forward' | 'filter' | 'input';
  inputs: [JobInput, JobInput];
  attributes: {
    strides: number | [number, number];
    pad: 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];
    dimRoundingMode?: 'floor' | 'round' | 'ceil';
    dilations?: number | [number, number];
  };
  /** The result's shape (for `filter` the filter's, for `input` the share's input shape). */
  outputShape: number[];
  outputOffset: number;
  buffer?: SharedArrayBuffer;
}

/** Geometry of a direct SIMD kernel call (NHWC, dilation 1), as `tf.backend_util.Conv2DInfo` gives it. */
export interface SimdGeometry {
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

/**
 * Where a direct SIMD kernel call's data lies in the shared memory, and how it is cut: what every
 * thread running a share needs besides its images.
 */
export interface SimdPlan {
  /** `filter`: x, dy → dW (one region per thread, summed after); `forward`: x, w → y. */
  family: 'filter' | 'forward';
  geometry: SimdGeometry;
  /** Offsets in floats: x zero-padded to every window's reach, the second input (dy or w), the output. */
  xStart: number;
  secondStart: number;
  outputStart: number;
  /** Floats from one thread's output region to the next (filter gradients). */
  regionFloats: number;
  /** Chunks of the batch that stay in cache: whole images, or rows of one image. */
  imagesPerChunk: number;
  rowsPerChunk: number;
}

/** A share of a direct SIMD kernel call: images [firstImage, endImage) into output region `region`. */
export interface SimdJob {
  kind: 'simd';
  plan: SimdPlan;
  firstImage: number;
  endImage: number;
  region: number;
  /** Whether the main thread's kernels use relaxed SIMD's multiply-add: the worker's do the same. */
  fused: boolean;
  /** The shared memory, sent with a worker's first share. */
  memory?: WebAssembly.Memory;
}
