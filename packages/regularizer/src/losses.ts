import * as tf from '@tensorflow/tfjs-core';

/** One-hot float targets of integer labels. */
export function oneHotTargets(labels: tf.Tensor1D, numClasses: number): tf.Tensor2D {
  return tf.tidy(() => tf.cast(tf.oneHot(tf.cast(labels, 'int32'), numClasses), 'float32') as tf.Tensor2D);
}

/** Per-example cross-entropy −Σ_k t_k log softmax(z)_k of logits against soft targets, shape [batch]. */
export function softCrossEntropyPerExample(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => tf.neg(tf.sum(tf.mul(targets, tf.logSoftmax(logits)), -1)) as tf.Tensor1D);
}

/** Cross-entropy of logits against soft targets, reduced over the batch (mean by default). */
export function softCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor2D, reduction: 'mean' | 'sum' = 'mean'): tf.Scalar {
  return tf.tidy(() => {
    const perExample = softCrossEntropyPerExample(logits, targets);
    return (reduction === 'sum' ? tf.sum(perExample) : tf.mean(perExample)) as tf.Scalar;
  });
}

/** Cross-entropy of logits against integer labels. */
export function crossEntropy(logits: tf.Tensor2D, labels: tf.Tensor1D, reduction: 'mean' | 'sum' = 'mean'): tf.Scalar {
  return tf.tidy(() => softCrossEntropy(logits, oneHotTargets(labels, logits.shape[1]), reduction));
}

/** Per-example entropy H(softmax(z)) = −Σ p log p, computed through logSoftmax, shape [batch]. */
export function entropyPerExample(logits: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => {
    const logProbabilities = tf.logSoftmax(logits);
    return tf.neg(tf.sum(tf.mul(tf.exp(logProbabilities), logProbabilities), -1)) as tf.Tensor1D;
  });
}

/** Mean entropy of the predicted distributions over the batch. */
export function meanEntropy(logits: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => tf.mean(entropyPerExample(logits)) as tf.Scalar);
}
