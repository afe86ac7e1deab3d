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
