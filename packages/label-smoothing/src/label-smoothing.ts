import * as tf from '@tensorflow/tfjs-core';
import {
  assertKnownOptions,
  assertNumber,
  validateSchedulable,
  type RegularizerPlugin,
  type Schedulable,
  type StepContext,
} from '@regstack/regularizer';

/** Options of {@link labelSmoothing}. */
export interface LabelSmoothingOptions {
  /**
   * Smoothing ε in [0, 1]: targets become y·(1 − ε) + ε/K. A number or a schedule. Default 0.1,
   * the common choice (Szegedy et al. 2016); the RCAD reference script uses 0.6 for CIFAR-100.
   */
  epsilon?: Schedulable;
}

/** A target transform keeps no state between `prepare` and `loss`: it has neither. */
export type LabelSmoothingState = void;

const OWNER = 'labelSmoothing';
const EPSILON_RANGE = { min: 0, max: 1 } as const;

/**
 * Label smoothing: replaces the soft targets y by y·(1 − ε) + ε/K (the same formula as PyTorch's
 * `CrossEntropyLoss(label_smoothing=ε)` and TF.js's `losses.softmaxCrossEntropy`).
 *
 * A `target-transform` plugin: the stack applies it once, after every batch transform, so mixed
 * targets (mixup, cutmix) are smoothed as they are. It belongs to the exclusive group
 * `target-smoothing`, so a stack holding two smoothers is rejected by `composeRegularizers`.
 * Only the base loss sees the smoothed targets: input gradients requested `at: 'clean'` (RCAD,
 * attacks) keep the hard labels.
 *
 * @throws ConfigError naming the field (`labelSmoothing.epsilon`) for an unknown option or an ε
 *   outside [0, 1] (a schedule function is checked each step).
 */
export function labelSmoothing(options: LabelSmoothingOptions = {}): RegularizerPlugin<LabelSmoothingState> {
  assertKnownOptions(OWNER, options, ['epsilon']);
  const epsilon = validateSchedulable(`${OWNER}.epsilon`, options.epsilon ?? 0.1, EPSILON_RANGE);
  return {
    specificationVersion: 'v1',
    name: 'label-smoothing',
    stage: 'target-transform',
    exclusiveGroup: 'target-smoothing',
    transformTargets(targets: tf.Tensor2D, context: StepContext): tf.Tensor2D {
      const value = assertNumber(`${OWNER}.epsilon`, context.value(epsilon), EPSILON_RANGE);
      const numClasses = targets.shape[1];
      return tf.tidy(() => tf.add(tf.mul(targets, 1 - value), value / numClasses) as tf.Tensor2D);
    },
  };
}

