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
export function labelSmoothing(options: LabelSmoothingOptions = {}): RegularizerPlugin {
  assertKnownOptions(OWNER, options, ['epsilon']);
  const epsilon = validateSchedulable(`${OWNER}.epsilon`, options.epsilon ?? 0.1);
  assertScheduleRange(`${OWNER}.epsilon`, epsilon, EPSILON_RANGE);
  return {
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

/**
 * Checks every value a declared schedule can take against a range at construction, so that a bad
 * schedule fails when the stack is built rather than epochs into a run. Functions are checked
 * each step instead.
 */
function assertScheduleRange(field: string, value: Schedulable, range: Parameters<typeof assertNumber>[2]): void {
  if (typeof value === 'function') return;
  if (typeof value === 'number') {
    assertNumber(field, value, range);
    return;
  }
  switch (value.type) {
    case 'constant':
      assertNumber(`${field}.value`, value.value, range);
      break;
    case 'step':
      value.values.forEach((entry, index) => assertNumber(`${field}.values[${index}]`, entry, range));
      break;
    default:
      // Linear and cosine ramps stay between their end points.
      assertNumber(`${field}.from`, value.from, range);
      assertNumber(`${field}.to`, value.to, range);
  }
}
