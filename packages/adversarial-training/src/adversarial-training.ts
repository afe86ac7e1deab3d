import * as tf from '@tensorflow/tfjs-core';
import {
  ConfigError,
  DataError,
  assertChoice,
  assertKnownOptions,
  assertInterval,
  assertNumber,
  crossEntropy,
  lossInputGradient,
  oneHotTargets,
  validateSchedulable,
  type ModelMode,
  type PrepareContext,
  type RegularizerPlugin,
  type Schedulable,
} from '@regstack/regularizer';

/** Options of {@link adversarialTraining}. */
export interface AdversarialTrainingOptions {
  /**
   * `fgsm`: one signed (L∞) or normalised (L2) gradient step of size `stepSize` (Goodfellow et al.
   * 2015). `pgd`: `steps` such steps, each projected back onto the ε-ball (Madry et al. 2018).
   * Default `fgsm`.
   */
  attack?: 'fgsm' | 'pgd';
  /** The threat model: `linf` (steps along sign ∇x) or `l2` (steps along ∇x/‖∇x‖₂ per example). Default `linf`. */
  norm?: 'linf' | 'l2';
  /**
   * Radius ε of the perturbation ball, in input units (raw pixels in [0, 1]). A number ≥ 0 or a
   * schedule (an ε ramp is common). Default 8/255 for `linf` (the CIFAR standard) and 0.5 for `l2`
   * (the CIFAR L2 standard of Madry et al.'s robustness library).
   */
  epsilon?: Schedulable;
  /**
   * Size of one attack step, in input units. A number > 0 or a schedule. Default: ε for FGSM, and
   * 2.5·ε/steps for PGD (Madry et al.'s rule: 2/255 for ε = 8/255 and 10 steps).
   */
  stepSize?: Schedulable;
  /** PGD only: the number of steps, an integer ≥ 1. Default 10 (FGSM takes exactly one). */
  steps?: number;
  /**
   * Start from a random point of the ε-ball instead of the clean input: uniform in the L∞ box, or
   * for L2 a uniform direction scaled by a radius uniform in [0, ε] (as torchattacks' PGDL2).
   * Default false for FGSM, true for PGD (Madry et al.). FGSM with a random start is the "fast"
   * adversarial training of Wong et al. (2020), who use a step of 1.25·ε.
   */
  randomStart?: boolean;
  /**
   * The valid input range [low, high] every adversarial input is clipped to after each step, or
   * null for no clipping. Default [0, 1]: the stack's inputs are raw pixels.
   */
  clip?: readonly [number, number] | null;
  /**
   * Weight w in [0, 1] of the adversarial loss: the step minimises (1 − w)·CE(clean) + w·CE(x_adv).
   * A number or a schedule. Default 0.5 (Goodfellow et al.'s α = 0.5); 1 trains on adversarial
   * inputs only (Madry et al.).
   */
  weight?: Schedulable;
  /**
   * The model's mode while the attack computes its gradients. `frozen-stats` (default): batch
   * statistics and dropout as in training, running statistics untouched (as RCAD). `eval`: running
   * statistics, no dropout.
   */
  attackMode?: 'frozen-stats' | 'eval';
}

/** The attack's result, a constant of the step (a type alias, so it is a TF.js TensorContainer). */
export type AdversarialTrainingState = {
  /** The adversarial inputs x + δ, clipped to the valid range. */
  adversarial: tf.Tensor;
};

const OWNER = 'adversarialTraining';
const OPTIONS = ['attack', 'norm', 'epsilon', 'stepSize', 'steps', 'randomStart', 'clip', 'weight', 'attackMode'] as const;
/** Keeps a zero gradient's normalisation finite (as the RCAD reference's 1e-10). */
const NORM_FLOOR = 1e-10;

/**
 * Adversarial training with FGSM (Goodfellow et al. 2015) or PGD (Madry et al. 2018), under an L∞
 * or L2 threat model. The loss on adversarial inputs is mixed with the clean loss:
 * total = (1 − w)·CE(f(x'), t) + w·CE(f(x_adv), y).
 *
 * - The attack runs in `prepare`, outside the weight tape: x_adv is a constant of the step, so the
 *   weights get the gradient of CE(f(x_adv), y) with x_adv held fixed (as in PyTorch, where the
 *   attack's graph is detached).
 * - The attack maximises the cross-entropy SUMMED over the batch, of the clean inputs against their
 *   hard labels. Without a random start, its first gradient is requested from the step's cache as
 *   `{ at: 'clean', reduction: 'sum', mode: attackMode }`: with the default mode that is the very
 *   gradient RCAD asks for, computed once for both. Later PGD steps compute their own.
 * - The adversarial loss is the mean CE against the clean hard labels (mixup and label smoothing
 *   shape only the base loss), in `frozen-stats` mode: batch statistics as training would use, but
 *   running statistics NOT updated by the adversarial pass, so they describe clean data (the base
 *   pass already updates them once per step; a second `train` pass would update them twice).
 * - Random starts draw seeds from the step's seeded generator (`random.seed()`, once for L∞, twice
 *   for L2: direction then radius), so a run is reproducible.
 *
 * A `generated-loss` plugin named `adversarial-training`; it declares its `weight` as its `mixWeight`, so
 * `composeRegularizers` rejects a stack whose generated-loss weights add up to more than 1.
 *
 * @throws ConfigError naming the field (e.g. `adversarialTraining.epsilon`) for an unknown option or
 *   a bad value; schedule functions are checked each step.
 * @throws DataError when clean inputs lie outside the `clip` range.
 */
export function adversarialTraining(options: AdversarialTrainingOptions = {}): RegularizerPlugin<AdversarialTrainingState> {
  assertKnownOptions(OWNER, options, OPTIONS);
  const attack = assertChoice(`${OWNER}.attack`, options.attack ?? 'fgsm', ['fgsm', 'pgd'] as const);
  const norm = assertChoice(`${OWNER}.norm`, options.norm ?? 'linf', ['linf', 'l2'] as const);
  const attackMode: ModelMode = assertChoice(`${OWNER}.attackMode`, options.attackMode ?? 'frozen-stats', ['frozen-stats', 'eval'] as const);
  const epsilon = validateSchedulable(`${OWNER}.epsilon`, options.epsilon ?? (norm === 'linf' ? 8 / 255 : 0.5), { min: 0 });
  const stepSize = options.stepSize === undefined ? undefined : validateSchedulable(`${OWNER}.stepSize`, options.stepSize, { min: 0, minExclusive: true });
  const weight = validateSchedulable(`${OWNER}.weight`, options.weight ?? 0.5, { min: 0, max: 1 });
  let steps = 1;
  if (attack === 'pgd') steps = assertNumber(`${OWNER}.steps`, options.steps ?? 10, { min: 1, integer: true });
  else if (options.steps !== undefined && options.steps !== 1) {
    throw new ConfigError(`${OWNER}.steps`, `FGSM takes exactly one step, got ${String(options.steps)}; use attack: 'pgd' for more`);
  }
  const randomStart = options.randomStart ?? attack === 'pgd';
  if (typeof randomStart !== 'boolean') throw new ConfigError(`${OWNER}.randomStart`, `expected a boolean, got ${String(randomStart)}`);
  const clip = assertInterval(`${OWNER}.clip`, options.clip === undefined ? [0, 1] : options.clip);

  return {
    specificationVersion: 'v1',
    name: 'adversarial-training',
    stage: 'generated-loss',
    mixWeight: weight, // declared, so a stack whose mix weights exceed 1 is rejected when composed
    prepare(context: PrepareContext): AdversarialTrainingState {
      const radius = assertNumber(`${OWNER}.epsilon`, context.value(epsilon), { min: 0 });
      const size =
        stepSize === undefined
          ? attack === 'fgsm'
            ? radius
            : (2.5 * radius) / steps
          : assertNumber(`${OWNER}.stepSize`, context.value(stepSize), { min: 0, minExclusive: true });
      const clean = context.clean.inputs;
      if (clip) assertWithin(clean, clip);
      const targets = oneHotTargets(context.clean.labels, context.numClasses);
      const project = (candidate: tf.Tensor) =>
        tf.tidy(() => {
          const delta = tf.sub(candidate, clean);
          const inBall = norm === 'linf' ? tf.clipByValue(delta, -radius, radius) : tf.mul(delta, tf.minimum(1, tf.div(radius, tf.add(perExampleNorm(delta), NORM_FLOOR))));
          const moved = tf.add(clean, inBall);
          return clip ? tf.clipByValue(moved, clip[0], clip[1]) : moved;
        });

      const ownGradient = (at: tf.Tensor) => {
        const computed = lossInputGradient(context.model, at, targets, { reduction: 'sum', mode: attackMode, random: context.random });
        // lossInputGradient keeps its logits (tf.keep), so an enclosing tidy would not free them.
        tf.dispose([computed.loss, computed.logits]);
        return computed.gradient;
      };
      let adversarial = randomStart ? tf.tidy(() => project(tf.add(clean, randomPoint(clean, radius, norm, context)))) : clean;
      for (let index = 0; index < steps; index++) {
        const previous = adversarial;
        adversarial = tf.tidy(() => {
          const gradient = index === 0 && !randomStart ? context.inputGradient({ at: 'clean', reduction: 'sum', mode: attackMode }).gradient : ownGradient(previous);
          const direction = norm === 'linf' ? tf.sign(gradient) : tf.div(gradient, tf.add(perExampleNorm(gradient), NORM_FLOOR));
          return project(tf.add(previous, tf.mul(direction, size)));
        });
        if (previous !== clean) previous.dispose();
      }
      targets.dispose();
      return { adversarial };
    },
    loss(context, state) {
      const mixWeight = assertNumber(`${OWNER}.weight`, context.value(weight), { min: 0, max: 1 });
      const logits = context.forward(state.adversarial, 'frozen-stats').logits;
      return { value: crossEntropy(logits, context.clean.labels), mixWeight };
    },
  };
}

/** @deprecated Renamed {@link AdversarialTrainingState}; the alias will be removed in a later release. */
export type AdversarialState = AdversarialTrainingState;

/** ‖t_i‖₂ over all axes but the batch axis, shaped [batch, 1, …, 1] to broadcast against t. */
function perExampleNorm(tensor: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const flat = tf.reshape(tensor, [tensor.shape[0]!, -1]);
    const norms = tf.sqrt(tf.sum(tf.square(flat), 1));
    return tf.reshape(norms, [tensor.shape[0]!, ...tensor.shape.slice(1).map(() => 1)]);
  });
}

/** A random perturbation in the ε-ball: uniform in the L∞ box; for L2 a uniform direction times a uniform radius. */
function randomPoint(like: tf.Tensor, radius: number, norm: 'linf' | 'l2', context: PrepareContext): tf.Tensor {
  return tf.tidy(() => {
    if (norm === 'linf') return tf.randomUniform(like.shape, -radius, radius, 'float32', context.random.seed());
    const direction = tf.randomNormal(like.shape, 0, 1, 'float32', context.random.seed());
    const scale = tf.randomUniform([like.shape[0]!, ...like.shape.slice(1).map(() => 1)], 0, radius, 'float32', context.random.seed());
    return tf.mul(tf.div(direction, tf.add(perExampleNorm(direction), NORM_FLOOR)), scale);
  });
}

function assertWithin(inputs: tf.Tensor, [low, high]: readonly [number, number]): void {
  const [minimum, maximum] = tf.tidy(() => [tf.min(inputs).dataSync()[0]!, tf.max(inputs).dataSync()[0]!]);
  if (minimum! < low || maximum! > high) {
    throw new DataError(
      'batch.inputs',
      `adversarial training clips to ${OWNER}.clip [${low}, ${high}] but the clean inputs span [${minimum}, ${maximum}]; ` +
        'pass raw inputs (the model normalises) or set clip to the inputs\' range or null',
    );
  }
}


