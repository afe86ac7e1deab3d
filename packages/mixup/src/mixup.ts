import * as tf from '@tensorflow/tfjs-core';
import {
  DataError,
  assertKnownOptions,
  assertNumber,
  validateSchedulable,
  type RegularizerPlugin,
  type Schedulable,
  type SoftBatch,
  type StepContext,
} from '@regstack/regularizer';

/**
 * Options of {@link mixup}. The defaults are timm's `Mixup` defaults (`mixup_alpha=1.0`,
 * `cutmix_alpha=0.0`, `prob=1.0`, `switch_prob=0.5`): plain mixup on every batch.
 */
export interface MixupOptions {
  /**
   * α of the Beta(α, α) distribution mixup draws λ from; 0 disables mixup. A number ≥ 0 or a
   * schedule. Default 1.0 (timm's `mixup_alpha`; λ uniform on [0, 1]).
   */
  mixupAlpha?: Schedulable;
  /**
   * α of the Beta(α, α) distribution CutMix draws λ from; 0 disables CutMix. A number ≥ 0 or a
   * schedule. Default 0 (timm's `cutmix_alpha`); Yun et al. (2019) use 1.0. CutMix needs NHWC
   * image inputs (rank 4).
   */
  cutmixAlpha?: Schedulable;
  /**
   * Chance in [0, 1] that a batch is mixed at all; an unmixed batch passes through unchanged.
   * A number or a schedule. Default 1 (timm's `prob`).
   */
  probability?: Schedulable;
  /**
   * When both mixup and CutMix are enabled: the chance in [0, 1] that a mixed batch uses CutMix
   * instead of mixup. A number or a schedule. Default 0.5 (timm's `switch_prob`).
   */
  switchProbability?: Schedulable;
}

/** What {@link mixup} did to one batch. */
interface MixDecision {
  /** `none` when the batch was left unmixed. */
  kind: 'none' | 'mixup' | 'cutmix';
  /** Weight of each example's own input and target; for CutMix, the fraction of the image it keeps. */
  lambda: number;
  /** The partner of example i is example `permutation[i]`. Empty when unmixed. */
  permutation: Int32Array;
  /** CutMix only: the pasted box, rows [top, bottom) and columns [left, right), clipped to the image. */
  box?: { top: number; bottom: number; left: number; right: number };
}

/** A batch transform keeps no state between `prepare` and `loss`: it has neither. */
export type MixupState = void;

const OWNER = 'mixup';
const OPTIONS = ['mixupAlpha', 'cutmixAlpha', 'probability', 'switchProbability'] as const;
const ALPHA_RANGE = { min: 0 } as const;
const PROBABILITY_RANGE = { min: 0, max: 1 } as const;

/**
 * Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) in one batch mixer, as timm's `Mixup`
 * offers them: one λ per batch (timm's default `mode='batch'`), each example mixed with a partner
 * from a random permutation of the batch.
 *
 * - mixup: λ ~ Beta(α, α); inputs x ← λ·x + (1 − λ)·x[π], targets t ← λ·t + (1 − λ)·t[π].
 * - CutMix: λ ~ Beta(α, α) gives a box of side fractions √(1 − λ) (area fraction 1 − λ), its
 *   centre uniform over the pixels; the box is clipped to the image and filled with the partner's
 *   pixels, and λ is corrected to 1 − (clipped area)/(H·W) before the targets are mixed (timm's
 *   `correct_lam`). Unlike timm, whose box spans 2·⌊h/2⌋ rows, the unclipped box spans exactly
 *   ⌊H·√(1 − λ)⌋ rows and ⌊W·√(1 − λ)⌋ columns.
 *
 * Draws, all from the step's seeded generator, in this order: a uniform for `probability`; when
 * both methods are enabled a uniform for `switchProbability`; λ from Beta; the permutation; for
 * CutMix the box centre row then column (uniform integers). An unmixed batch draws nothing more.
 *
 * A `batch-transform` plugin of the exclusive group `batch-mixing`: a stack holding two mixers is
 * rejected. Label smoothing, a `target-transform`, then applies to the mixed targets.
 *
 * @throws ConfigError naming the field (e.g. `mixup.mixupAlpha`) for an unknown option or a bad
 *   value (schedule functions are checked each step).
 * @throws DataError when CutMix is enabled and the inputs are not rank-4 NHWC images.
 */
export function mixup(options: MixupOptions = {}): RegularizerPlugin<MixupState> {
  assertKnownOptions(OWNER, options, OPTIONS);
  const mixupAlpha = validateSchedulable(`${OWNER}.mixupAlpha`, options.mixupAlpha ?? 1.0, ALPHA_RANGE);
  const cutmixAlpha = validateSchedulable(`${OWNER}.cutmixAlpha`, options.cutmixAlpha ?? 0.0, ALPHA_RANGE);
  const probability = validateSchedulable(`${OWNER}.probability`, options.probability ?? 1.0, PROBABILITY_RANGE);
  const switchProbability = validateSchedulable(`${OWNER}.switchProbability`, options.switchProbability ?? 0.5, PROBABILITY_RANGE);

  return {
    specificationVersion: 'v1',
    name: 'mixup',
    stage: 'batch-transform',
    exclusiveGroup: 'batch-mixing',
    transformBatch(batch: SoftBatch, context: StepContext): SoftBatch {
      const value = (name: (typeof OPTIONS)[number], hyperParameter: Schedulable, range: Parameters<typeof assertNumber>[2]) =>
        assertNumber(`${OWNER}.${name}`, context.value(hyperParameter), range);
      const mixupAlphaNow = value('mixupAlpha', mixupAlpha, ALPHA_RANGE);
      const cutmixAlphaNow = value('cutmixAlpha', cutmixAlpha, ALPHA_RANGE);
      const probabilityNow = value('probability', probability, PROBABILITY_RANGE);
      const switchNow = value('switchProbability', switchProbability, PROBABILITY_RANGE);
      // Checked whether or not this batch happens to draw CutMix, so a wrong layout fails at once.
      if (cutmixAlphaNow > 0 && batch.inputs.rank !== 4) {
        throw new DataError('batch.inputs', `CutMix needs NHWC images (rank 4), got shape [${batch.inputs.shape}]; set mixup.cutmixAlpha to 0 for other inputs`);
      }
      return applyDecision(batch, decide(context, batch.inputs.shape, mixupAlphaNow, cutmixAlphaNow, probabilityNow, switchNow));
    },
  };
}


function decide(
  context: StepContext,
  shape: readonly number[],
  mixupAlpha: number,
  cutmixAlpha: number,
  probability: number,
  switchProbability: number,
): MixDecision {
  const random = context.random;
  const unmixed: MixDecision = { kind: 'none', lambda: 1, permutation: new Int32Array(0) };
  if (mixupAlpha === 0 && cutmixAlpha === 0) return unmixed;
  if (!(random.uniform() < probability)) return unmixed;
  const useCutmix = cutmixAlpha > 0 && (mixupAlpha === 0 || random.uniform() < switchProbability);
  const alpha = useCutmix ? cutmixAlpha : mixupAlpha;
  const lambda = random.beta(alpha, alpha);
  const permutation = random.permutation(shape[0]!);
  if (!useCutmix) return { kind: 'mixup', lambda, permutation };

  const height = shape[1]!;
  const width = shape[2]!;
  const ratio = Math.sqrt(1 - lambda);
  const boxHeight = Math.floor(height * ratio);
  const boxWidth = Math.floor(width * ratio);
  const centreRow = random.int(height);
  const centreColumn = random.int(width);
  const top = Math.min(Math.max(centreRow - Math.floor(boxHeight / 2), 0), height);
  const bottom = Math.min(Math.max(centreRow - Math.floor(boxHeight / 2) + boxHeight, 0), height);
  const left = Math.min(Math.max(centreColumn - Math.floor(boxWidth / 2), 0), width);
  const right = Math.min(Math.max(centreColumn - Math.floor(boxWidth / 2) + boxWidth, 0), width);
  const corrected = 1 - ((bottom - top) * (right - left)) / (height * width);
  return { kind: 'cutmix', lambda: corrected, permutation, box: { top, bottom, left, right } };
}

function applyDecision(batch: SoftBatch, decision: MixDecision): SoftBatch {
  if (decision.kind === 'none') return batch;
  return tf.tidy(() => {
    const order = tf.tensor1d(decision.permutation, 'int32');
    const partnerInputs = tf.gather(batch.inputs, order);
    const partnerTargets = tf.gather(batch.targets, order);
    const lambda = decision.lambda;
    const targets = tf.add(tf.mul(batch.targets, lambda), tf.mul(partnerTargets, 1 - lambda)) as tf.Tensor2D;
    if (decision.kind === 'mixup') {
      return { inputs: tf.add(tf.mul(batch.inputs, lambda), tf.mul(partnerInputs, 1 - lambda)), targets };
    }
    const { top, bottom, left, right } = decision.box!;
    const [, height, width] = batch.inputs.shape as number[];
    // The box as a [1, H, W, 1] mask: the outer product of a row and a column indicator.
    const inside = (size: number, from: number, to: number) => {
      const index = tf.range(0, size, 1, 'int32');
      return tf.cast(tf.logicalAnd(tf.greaterEqual(index, from), tf.less(index, to)), 'float32') as tf.Tensor1D;
    };
    const mask = tf.reshape(tf.outerProduct(inside(height!, top, bottom), inside(width!, left, right)), [1, height!, width!, 1]);
    const inputs = tf.add(tf.mul(batch.inputs, tf.sub(1, mask)), tf.mul(partnerInputs, mask));
    return { inputs, targets };
  });
}

