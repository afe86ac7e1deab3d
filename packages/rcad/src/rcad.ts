import * as tf from '@tensorflow/tfjs-core';
import {
  DataError,
  assertChoice,
  assertKnownOptions,
  assertNumber,
  meanEntropy,
  validateSchedulable,
  type LossContext,
  type LossTerm,
  type PrepareContext,
  type RegularizerPlugin,
  type Schedulable,
} from '@regstack/regularizer';

/** Options of {@link rcad}. Defaults are the reference script's CIFAR-100 run. */
export interface RcadOptions {
  /**
   * Step size α ≥ 0 along the normalised input gradient, in raw [0,1] input units: every example
   * moves by exactly α in L2 norm. Default 1.0 (the reference's CIFAR-100, WRN-28-10 run). α scales
   * with input size: 1.0 over 3·32·32 values is an RMS change of ≈ 0.018 per value; the same
   * per-value change on 28·28·1 Fashion-MNIST is α ≈ 0.5. A number or a schedule.
   */
  alpha?: Schedulable;
  /**
   * Weight λ ≥ 0 of the term λ·(log K − mean H(p(x̃))). Default 0.2 (the reference's CIFAR-100
   * run). A number or a schedule; at a step where λ is 0 the plugin skips its passes entirely.
   */
  lambda?: Schedulable;
  /**
   * Model mode of both passes (the input gradient and the forward pass on x̃). `frozen-stats`
   * (default, as the reference): batch statistics, running statistics not updated, dropout active.
   * `eval`: running statistics, no dropout.
   */
  mode?: 'frozen-stats' | 'eval';
}

/** What `prepare` hands to `loss`: the perturbed inputs, absent when λ is 0 at this step. */
export type RcadState = { lambda: number; perturbed?: tf.Tensor };

const OWNER = 'rcad';
const NON_NEGATIVE = { min: 0 } as const;
/** Added to each example's gradient norm, as in the reference script, so a zero gradient gives d = 0. */
const NORM_EPSILON = 1e-10;

/**
 * x̃ = x + α·g / (‖g‖₂ + 1e-10), with the L2 norm taken per example over every non-batch axis:
 * each example moves by α (or not at all where its gradient is zero). No projection and no
 * clipping to [0,1], as in the reference script. Pure: returns a new tensor and disposes nothing.
 *
 * `rcad()` uses it with the gradient of the summed cross-entropy; call it yourself to look at x̃
 * (e.g. with `lossInputGradient` from `@regstack/regularizer`).
 *
 * @param gradient ∂loss/∂x, same shape as `inputs`.
 * @param inputs Raw inputs x, shape [batch, ...].
 * @param alpha Step length α per example.
 * @throws DataError naming `gradient` or `inputs` when the shapes disagree; ConfigError naming
 *   `alpha` when α is not a finite number.
 */
export function rcadPerturbation(gradient: tf.Tensor, inputs: tf.Tensor, alpha: number): tf.Tensor {
  if (!(inputs instanceof tf.Tensor)) throw new DataError('inputs', 'expected a tf.Tensor');
  if (!(gradient instanceof tf.Tensor)) throw new DataError('gradient', 'expected a tf.Tensor');
  if (inputs.rank < 2) throw new DataError('inputs', `expected rank ≥ 2 ([batch, ...]), got shape [${inputs.shape}]`);
  if (!tf.util.arraysEqual(gradient.shape, inputs.shape)) {
    throw new DataError('gradient', `shape [${gradient.shape}] differs from the inputs' shape [${inputs.shape}]`);
  }
  assertNumber('alpha', alpha);
  return tf.tidy(() => {
    const exampleAxes = Array.from({ length: inputs.rank - 1 }, (_, index) => index + 1);
    const norm = tf.add(tf.sqrt(tf.sum(tf.square(gradient), exampleAxes, true)), NORM_EPSILON);
    return tf.add(inputs, tf.mul(alpha, tf.div(gradient, norm)));
  });
}

/**
 * RCAD, "Reducing Confidence along Adversarial Directions" (Setlur, Eysenbach, Smith, Levine,
 * NeurIPS 2022), as the official script `train_maxent.py` computes it. A `loss-term` plugin
 * named `rcad`.
 *
 * - prepare (outside the weight tape, so d is a constant): g = ∇ₓ of the SUMMED plain cross-entropy
 *   at the clean, un-augmented inputs with their hard labels (label smoothing and mixup do not
 *   reach it); d = g/(‖g‖₂ + 1e-10) per example; x̃ = x + α·d (see {@link rcadPerturbation}).
 *   The gradient comes from the step's cache, shared with any plugin asking for the same one.
 * - loss (inside the tape): λ·(log K − mean_i H(softmax(f(x̃_i)))), H through logSoftmax, f run in
 *   `mode`. Minimising it raises the entropy on x̃; log K only offsets the term to be ≥ 0.
 *
 * Where the paper's pseudo-code differs, this follows the code: a normalised direction (the paper
 * shows α·∇ₓ, raw); the gradient of the summed (not mean) loss, which with normalisation only
 * matters through the 1e-10; the constant log K offset; no label smoothing in the direction's loss
 * although the base loss is smoothed; batch statistics with running statistics frozen in both
 * passes. Both step towards higher cross-entropy (the objective's x − α·∇ₓ log p).
 *
 * Cost: one extra forward+backward (the input gradient) and one extra forward+backward (the pass on
 * x̃) per step.
 *
 * @throws ConfigError naming the field (`rcad.alpha`, `rcad.lambda`, `rcad.mode`) for an unknown
 *   option or a bad value (a schedule function is checked each step).
 */
export function rcad(options: RcadOptions = {}): RegularizerPlugin<RcadState> {
  assertKnownOptions(OWNER, options, ['alpha', 'lambda', 'mode']);
  const alpha = validateSchedulable(`${OWNER}.alpha`, options.alpha ?? 1.0, NON_NEGATIVE);
  const lambda = validateSchedulable(`${OWNER}.lambda`, options.lambda ?? 0.2, NON_NEGATIVE);
  const mode = assertChoice(`${OWNER}.mode`, options.mode ?? 'frozen-stats', ['frozen-stats', 'eval'] as const);

  return {
    specificationVersion: 'v1',
    name: 'rcad',
    stage: 'loss-term',
    prepare(context: PrepareContext): RcadState {
      const weight = assertNumber(`${OWNER}.lambda`, context.value(lambda), NON_NEGATIVE);
      // A zero weight (e.g. a warm-up schedule) makes the term 0: skip both of its passes.
      if (weight === 0) return { lambda: 0 };
      const step = assertNumber(`${OWNER}.alpha`, context.value(alpha), NON_NEGATIVE);
      const { gradient } = context.inputGradient({ at: 'clean', reduction: 'sum', mode });
      return { lambda: weight, perturbed: rcadPerturbation(gradient, context.clean.inputs, step) };
    },
    loss(context: LossContext, state: RcadState): LossTerm {
      const perturbed = state.perturbed;
      if (perturbed === undefined) return { value: tf.scalar(0) };
      return {
        value: tf.tidy(() => {
          const entropy = meanEntropy(context.forward(perturbed, mode).logits);
          return tf.mul(state.lambda, tf.sub(Math.log(context.numClasses), entropy)) as tf.Scalar;
        }),
      };
    },
  };
}

