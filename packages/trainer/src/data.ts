import * as tf from '@tensorflow/tfjs-core';
import { DataError, type Batch } from '@regstack/regularizer';

/**
 * What the trainer reads data from: a size and a way to materialise any batch of examples by index.
 * `@regstack/datasets`' `Dataset` satisfies it; {@link tensorData} adapts two tensors.
 */
export interface DataSource {
  /** Number of examples. */
  readonly size: number;
  /** Raw inputs in [0,1] and int32 labels of the examples at `indices`; the caller disposes them. */
  batch(indices: ArrayLike<number>): Batch;
}

/** Adapts in-memory tensors (inputs [n, ...], integer labels [n]) to a {@link DataSource}. */
export function tensorData(inputs: tf.Tensor, labels: tf.Tensor1D): DataSource {
  if (inputs.shape[0] !== labels.shape[0]) {
    throw new DataError('labels', `has ${labels.shape[0]} labels for ${inputs.shape[0]} inputs`);
  }
  return {
    size: inputs.shape[0]!,
    batch: (indices) =>
      tf.tidy(() => {
        const index = tf.tensor1d(Array.from(indices), 'int32');
        return { inputs: tf.gather(inputs, index), labels: tf.cast(tf.gather(labels, index), 'int32') as tf.Tensor1D };
      }),
  };
}

/** Splits `order` into consecutive batches of `batchSize` (the last one may be smaller unless `dropLast`). */
export function batchIndices(order: ArrayLike<number>, batchSize: number, dropLast = false): Int32Array[] {
  const batches: Int32Array[] = [];
  for (let start = 0; start < order.length; start += batchSize) {
    const end = Math.min(order.length, start + batchSize);
    if (dropLast && end - start < batchSize) break;
    batches.push(Int32Array.from({ length: end - start }, (_, i) => order[start + i]!));
  }
  return batches;
}
