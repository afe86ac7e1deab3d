import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigError,
  assertChoice,
  assertKnownOptions,
  assertInterval,
  assertNumber,
  crossEntropy,
  meanEntropy,
  validateSchedulable,
  type Classifier,
  type ModelMode,
  type PrepareContext,
  type RegularizerPlugin,
  type Schedulable,
} from '@regstack/regularizer';

/**
 * Options of {@link meAda}. Names follow the paper: T_adv = `steps`, η = `stepSize`, β = `beta`,
 * γ = `gamma`. The reference code (garyzhao/ME-ADA, CIFAR-10 script) uses T_adv = 15, η = 20 on
 * inputs normalised to [−1, 1], β = 10, γ = 1, batch 128.
 */
export interface MeAdaOptions {
  /** T_adv: gradient-ascent steps per generated batch, an integer ≥ 1. Default 5 (the reference: 15). */
  steps?: number;
  /**
   * η: the ascent rate, x⁺ ← x⁺ + η·∇J, on raw inputs in [0, 1]. A number > 0 or a schedule.
   * Default 5: the reference's η = 20 moves its [−1, 1] inputs as η = 5 moves raw [0, 1] pixels.
   * J averages over the batch (as the reference), so each example moves by η/B times its own
   * gradient: scale η with the batch size (the default assumes the reference's 128).
   */
  stepSize?: Schedulable;
  /** β: weight of the predictive entropy in the ascent objective. A number ≥ 0 or a schedule. Default 10 (the reference). */
  beta?: Schedulable;
  /** γ: weight of the feature-distance penalty in the ascent objective. A number ≥ 0 or a schedule. Default 1 (the reference). */
  gamma?: Schedulable;
  /**
   * w: weight of the loss on generated inputs, total = (1 − w)·CE(clean) + w·CE(x⁺). A number in
   * [0, 1] or a schedule. Default 0.5 (a batch of generated samples beside each clean batch, as
   * after the reference's first maximisation phase doubles the training set).
   */
  weight?: Schedulable;
  /**
   * Generate every N optimizer steps (step % N = 0), an integer ≥ 1. On other steps the plugin
   * costs nothing and contributes weight 0: a cheap stand-in for the paper's periodic phases.
   * Default 1.
   */
  every?: number;
  /**
   * The valid input range [low, high] the generated inputs are clipped to after the last ascent
   * step (the reference clamps once, when it stores the images), or null. Default [0, 1].
   */
  clip?: readonly [number, number] | null;
  /**
   * The model's mode during the ascent: `eval` (default; the reference calls `network.eval()`
   * before maximising) or `frozen-stats` (batch statistics, running statistics untouched).
   */
  ascentMode?: 'eval' | 'frozen-stats';
}

/** The generated inputs of a step, a constant of the step (absent on skipped steps). */
export type MeAdaState = {
  /** x⁺ after T_adv ascent steps, clipped. */
  generated?: tf.Tensor;
};

const OWNER = 'meAda';
const OPTIONS = ['steps', 'stepSize', 'beta', 'gamma', 'weight', 'every', 'clip', 'ascentMode'] as const;

/**
 * ME-ADA (Zhao et al., NeurIPS 2020, "Maximum-Entropy Adversarial Data Augmentation for Improved
 * Generalization and Robustness"), in an online, per-batch form.
 *
 * From the clean batch x, T_adv steps of gradient ASCENT (rate η) on
 *   J(x⁺) = CE(f(x⁺), y) + β·H(softmax f(x⁺)) − γ·‖z(x⁺) − z(x)‖²
 * (z = the model's penultimate features, CE and H averaged over the batch and the squared distance
 * over batch and features, as the reference code's `CrossEntropyLoss`, `entropy_loss` and
 * `MSELoss`), starting at x⁺ = x, produce inputs that the loss then also trains on:
 * total = (1 − w)·CE(clean) + w·CE(f(x⁺), y).
 *
 * How it differs from the paper: the paper runs periodic maximisation phases over the whole
 * training set and appends the generated images to it (k phases, every T_min epochs); here each
 * step generates from its own batch (every `every` steps), so no data set grows. The
 * ascent runs in `prepare`, outside the weight tape, so x⁺ is a constant for the weights; z(x) is
 * taken from the first ascent step's own forward pass (at x⁺ = x the distance and its gradient
 * are zero), which saves a pass. The loss on x⁺ runs in `frozen-stats` mode, so generated inputs
 * do not move running statistics (the reference trains on them in train mode).
 *
 * A `generated-loss` plugin named `me-ada`, declaring `weight` as its `mixWeight` (see
 * `composeRegularizers`). The model must return penultimate features
 * (`ClassifierOutput.features`): two outputs `[features, logits]` with `classifierFromLayersModel`.
 *
 * @throws ConfigError naming the field (e.g. `meAda.stepSize`) for an unknown option or a bad
 *   value, and `model.features` when the model returns no features.
 */
export function meAda(options: MeAdaOptions = {}): RegularizerPlugin<MeAdaState> {
  assertKnownOptions(OWNER, options, OPTIONS);
  const steps = assertNumber(`${OWNER}.steps`, options.steps ?? 5, { min: 1, integer: true });
  const stepSize = validateSchedulable(`${OWNER}.stepSize`, options.stepSize ?? 5, { min: 0, minExclusive: true });
  const beta = validateSchedulable(`${OWNER}.beta`, options.beta ?? 10, { min: 0 });
  const gamma = validateSchedulable(`${OWNER}.gamma`, options.gamma ?? 1, { min: 0 });
  const weight = validateSchedulable(`${OWNER}.weight`, options.weight ?? 0.5, { min: 0, max: 1 });
  const every = assertNumber(`${OWNER}.every`, options.every ?? 1, { min: 1, integer: true });
  const clip = assertInterval(`${OWNER}.clip`, options.clip === undefined ? [0, 1] : options.clip);
  const ascentMode: ModelMode = assertChoice(`${OWNER}.ascentMode`, options.ascentMode ?? 'eval', ['eval', 'frozen-stats'] as const);
  const active = (step: number) => step % every === 0;

  return {
    specificationVersion: 'v1',
    name: 'me-ada',
    stage: 'generated-loss',
    mixWeight: weight, // declared, so a stack whose mix weights exceed 1 is rejected when composed
    prepare(context: PrepareContext): MeAdaState {
      if (!active(context.step)) return {};
      const eta = assertNumber(`${OWNER}.stepSize`, context.value(stepSize), { min: 0, minExclusive: true });
      const betaNow = assertNumber(`${OWNER}.beta`, context.value(beta), { min: 0 });
      const gammaNow = assertNumber(`${OWNER}.gamma`, context.value(gamma), { min: 0 });
      const { model, random } = context;
      const labels = context.clean.labels;
      let cleanFeatures: tf.Tensor2D | undefined;
      let generated: tf.Tensor = context.clean.inputs;
      try {
        for (let index = 0; index < steps; index++) {
          const previous = generated;
          generated = tf.tidy(() => {
            const objective = (inputs: tf.Tensor) => {
              const output = model.apply(inputs, { mode: ascentMode, random });
              const features = featuresOf(output.features, model);
              const confident = tf.add(crossEntropy(output.logits, labels), tf.mul(betaNow, meanEntropy(output.logits)));
              if (cleanFeatures === undefined) {
                cleanFeatures = tf.keep(features);
                return confident as tf.Scalar;
              }
              return tf.sub(confident, tf.mul(gammaNow, tf.mean(tf.square(tf.sub(features, cleanFeatures))))) as tf.Scalar;
            };
            return tf.add(previous, tf.mul(eta, tf.grad(objective)(previous)));
          });
          if (previous !== context.clean.inputs) previous.dispose();
        }
      } finally {
        cleanFeatures?.dispose();
      }
      if (clip) {
        const unclipped = generated;
        generated = tf.clipByValue(unclipped, clip[0], clip[1]);
        unclipped.dispose();
      }
      return { generated };
    },
    loss(context, state) {
      if (!state.generated) return { value: tf.scalar(0), mixWeight: 0 };
      const mixWeight = assertNumber(`${OWNER}.weight`, context.value(weight), { min: 0, max: 1 });
      const logits = context.forward(state.generated, 'frozen-stats').logits;
      return { value: crossEntropy(logits, context.clean.labels), mixWeight };
    },
  };
}

function featuresOf(features: tf.Tensor2D | undefined, model: Classifier): tf.Tensor2D {
  if (features instanceof tf.Tensor) return features;
  throw new ConfigError(
    'model.features',
    `ME-ADA needs the model's penultimate features, but its apply() returned none (a ${model.numClasses}-class model with logits only): ` +
      'return { logits, features } from a classifierFromFunction forward, or give a LayersModel two outputs [features, logits]',
  );
}


