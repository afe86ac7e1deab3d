import * as tf from '@tensorflow/tfjs-core';
import {
  assertChoice,
  assertKnownOptions,
  assertNumber,
  meanEntropy,
  validateSchedulable,
  type LossContext,
  type LossTerm,
  type RegularizerPlugin,
  type Schedulable,
} from '@regstack/regularizer';

/** Options of {@link entropyMin}. */
export interface EntropyMinOptions {
  /**
   * Weight λ ≥ 0 of the mean entropy; a number or a schedule. Default 0.1: a common starting point,
   * not a value from either paper (both tune it per task; Grandvalet & Bengio by cross-validation).
   */
  lambda?: Schedulable;
  /**
   * `minimize` (default): adds +λ·mean H(p(x)), entropy minimisation (Grandvalet & Bengio 2004),
   * which makes predictions more confident. `maximize`: adds −λ·mean H(p(x)), the confidence
   * penalty (Pereyra et al. 2017), which makes them less confident.
   */
  mode?: 'minimize' | 'maximize';
}

const OWNER = 'entropyMin';
const LAMBDA_RANGE = { min: 0 } as const;

/** The plugin keeps no state between `prepare` and `loss`: it has no `prepare`. */
export type EntropyMinState = void;

/**
 * Entropy minimisation, or its opposite the confidence penalty: a `loss-term` plugin (name
 * `entropy-min`) adding ±λ·mean_i H(softmax(f(x_i))).
 *
 * The entropy is taken on the logits of the base loss's own forward pass (`context.base.logits`,
 * mode `train`, on the batch the base loss sees, mixed if a batch transform ran, first view with
 * `baseLoss: 'two-view'`), so the plugin costs no extra forward pass. Grandvalet & Bengio apply
 * the term to unlabelled data; here it applies to the training batch, as the confidence penalty does.
 *
 * @throws ConfigError naming the field (`entropyMin.lambda`, `entropyMin.mode`)
 *   for an unknown option or a bad value (a schedule function is checked each step).
 */
export function entropyMin(options: EntropyMinOptions = {}): RegularizerPlugin<EntropyMinState> {
  assertKnownOptions(OWNER, options, ['lambda', 'mode']);
  const lambda = validateSchedulable(`${OWNER}.lambda`, options.lambda ?? 0.1, LAMBDA_RANGE);
  const mode = assertChoice(`${OWNER}.mode`, options.mode ?? 'minimize', ['minimize', 'maximize'] as const);
  const sign = mode === 'minimize' ? 1 : -1;
  return {
    specificationVersion: 'v1',
    name: 'entropy-min',
    stage: 'loss-term',
    readsBase: true, // the entropy is taken on the base pass's logits
    loss(context: LossContext): LossTerm {
      const weight = assertNumber(`${OWNER}.lambda`, context.value(lambda), LAMBDA_RANGE);
      return { value: tf.tidy(() => tf.mul(sign * weight, meanEntropy(context.base.logits)) as tf.Scalar) };
    },
  };
}


/** @deprecated Renamed {@link entropyMin}, after its package `@regstack/entropy-min`; the alias will be removed in a later release. */
export const entropyMinimization = entropyMin;
/** @deprecated Renamed {@link EntropyMinOptions}. */
export type EntropyMinimizationOptions = EntropyMinOptions;
