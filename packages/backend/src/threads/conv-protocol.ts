/** What the convolution pool (conv-pool.ts) and its workers (conv-worker.ts) exchange. */

/**
 * Slots of the Int32Array over a worker's control buffer. `job`: 0 when the job to run was posted on
 * the worker's port, else the id of a SIMD job the worker was sent before (see {@link SimdJob.id}).
 */
export const CONTROL = { state: 0, ready: 1, job: 2 } as const;
/** Int32 slots of a worker's control buffer. */
export const CONTROL_SLOTS = 3;

/**
 * SIMD jobs a worker keeps by id. A training step repeats the same few dozen calls (one per layer
 * shape and family), so after the first step each call sends a number, not a message: posting one
 * (structured clone and a wake-up of the worker's message port) cost 20–300 µs of the main thread per
 * call on the 2-core VM. Past this many the main thread forgets its ids and sends messages again.
 */
export const SIMD_JOB_CACHE = 256;

/**
 * Slots of the Int32Array over a shared call's claims buffer: `next`, the next piece to claim
 * (`Atomics.add`); `copied`, how many pieces (in order) have their images copied into the shared memory,
 * or {@link COPY_ABORTED} when the main thread failed while copying (the threads claim no more).
 */
export const CLAIMS = { next: 0, copied: 1 } as const;
/** Int32 slots of the claims buffer. */
export const CLAIM_SLOTS = 2;
/** `CLAIMS.copied` when the copy failed: a thread waiting for its piece stops instead. */
export const COPY_ABORTED = -1;

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
  /**
   * `filter`: x, dy → dW (one region per piece of the batch, summed after in order); `forward`: x, w → y;
   * `winograd`: x, U (the transformed filter) → y by Winograd F(2×2, 3×3), each piece in its own scratch
   * region (simd/winograd.ts); `winograd-filter`: x, dy → dW by Winograd F(2×2, 3×3) transposed, each
   * piece's dW at the start of its scratch region, summed after in order (simd/winograd-filter-gradient.ts);
   * `sub-pixel`: dy, the phases' sub-filters → dx of a strided convolution, its phases written into one
   * padded dx (simd/sub-pixel.ts).
   */
  family: 'filter' | 'forward' | 'winograd' | 'winograd-filter' | 'sub-pixel';
  geometry: SimdGeometry;
  /** Offsets in floats: x zero-padded to every window's reach, the second input (dy or w), the output. */
  xStart: number;
  secondStart: number;
  outputStart: number;
  /** Floats from one piece's output region to the next (filter gradients). */
  regionFloats: number;
  /** Chunks of the batch that stay in cache: whole images, or rows of one image. */
  imagesPerChunk: number;
  rowsPerChunk: number;
  /**
   * `winograd` and `winograd-filter` only: where the pieces' scratch regions start (floats; region i at `scratchStart` + i ·
   * `regionFloats`), and how many rows of tiles (across images) one block of tiles holds.
   */
  scratchStart?: number;
  tileRowsPerBlock?: number;
  /**
   * `sub-pixel` only: the forward strides, the phases that have taps, and whether dx is zeroed first
   * (some phase has none, as a 1 × 1 filter at stride 2 leaves three of four).
   */
  subPixel?: { strideHeight: number; strideWidth: number; phases: SubPixelPhase[]; zeroFirst: boolean };
}

/**
 * One phase of a sub-pixel input gradient (simd/sub-pixel.ts): dx's rows ≡ `rowPhase` and columns ≡
 * `columnPhase` modulo the stride, a stride-1 convolution of padded dy with `filterRows` × `filterColumns`
 * taps. Offsets in floats: into an image of padded dy, from the sub-filters' start, into an image of the
 * padded dx.
 */
export interface SubPixelPhase {
  rowPhase: number;
  columnPhase: number;
  filterRows: number;
  filterColumns: number;
  xOffset: number;
  wOffset: number;
  yOffset: number;
}

/**
 * A worker's part in a direct SIMD kernel call: the batch is cut into `pieces`, and every thread (the
 * main one included) claims the next unclaimed piece from the counter in `claims` until none is left,
 * running piece i's images into output region i. A thread that the system deschedules, or that wakes
 * late, then takes fewer pieces instead of holding the others up.
 */
export interface SimdJob {
  kind: 'simd';
  plan: SimdPlan;
  /** Image ranges [first, end) in batch order; piece i writes output region i. */
  pieces: Array<[number, number]>;
  /**
   * An Int32Array's buffer ({@link CLAIMS}): the next piece to claim (`Atomics.add`) and how many pieces
   * are copied in so far; a thread that claims a piece not copied yet waits for it.
   */
  claims: SharedArrayBuffer;
  /** Whether the main thread's kernels use relaxed SIMD's multiply-add: the worker's do the same. */
  fused: boolean;
  /** The shared memory, sent with a worker's first share. */
  memory?: WebAssembly.Memory;
  /**
   * Set on a job posted to a worker: the worker keeps it under this id (at most {@link SIMD_JOB_CACHE},
   * the oldest dropped first), and a later call with the same plan, pieces and form only writes the id
   * into `CONTROL.job`.
   */
  id?: number;
}
