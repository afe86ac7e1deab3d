/**
 * The regstack contract: everything a regularizer plugin author needs, in one file.
 *
 * A training step flows through a stack of plugins in a fixed order of stages:
 *
 * ```
 * clean batch (x in [0,1], integer labels)
 *   ─► prepare phase, OUTSIDE the weight tape (no gradient reaches the weights from here):
 *        trainer augmentation (optional) ─► 'batch-transform' plugins (mixup, cutmix: x', soft targets)
 *        ─► 'target-transform' plugins (label smoothing, applied once, after mixing)
 *        ─► every plugin's `prepare`: constants such as RCAD's direction or an attack's perturbation,
 *           with input gradients served from a per-step cache
 *   ─► loss phase, INSIDE the weight tape:
 *        base loss CE(f(x'), targets) in 'train' mode
 *        ─► 'loss-term' plugins (RCAD, entropy minimisation) add a weighted term
 *        ─► 'generated-loss' plugins (adversarial training, ME-ADA) mix a loss on generated inputs
 *           with the classification loss: (1 − Σw)·base + Σ w·L_generated
 *        ─► total (each term reported under the plugin's name)
 * ```
 *
 * Why two phases: TF.js has no stopGradient. A `tf.grad` called inside an `optimizer.minimize` or
 * `tf.variableGrads` closure is recorded by the outer tape, so second-order terms would reach the
 * weights. Everything that must be a constant (RCAD's direction d, an attack's perturbation) is
 * therefore computed in `prepare`, which the stack runs before the weight tape opens.
 *
 * @packageDocumentation
 */
import type { NamedTensorMap, Scalar, Tensor, Tensor1D, Tensor2D, TensorContainer, Variable } from '@tensorflow/tfjs-core';
import type { Random } from './random.js';
import type { Schedulable } from './schedule.js';

// ─── The model ─────────────────────────────────────────────────────────────────────────────────

/**
 * How a classifier runs a forward pass.
 * - `train`: batch statistics, running statistics updated, dropout active (the base loss).
 * - `eval`: running statistics, no dropout (evaluation).
 * - `frozen-stats`: batch statistics and dropout as in `train`, but running statistics are NOT
 *   updated (RCAD's passes, attacks: as the reference script does).
 */
export type ModelMode = 'train' | 'eval' | 'frozen-stats';

/** What a classifier returns for a batch. */
export interface ClassifierOutput {
  /** Unnormalised class scores, shape [batch, numClasses]. */
  logits: Tensor2D;
  /** Penultimate features, shape [batch, features], where the model offers them (ME-ADA needs them). */
  features?: Tensor2D;
}

/** Options of one forward pass. */
export interface ForwardOptions {
  /** Which statistics and stochastic layers the pass uses. */
  mode: ModelMode;
  /** Source of dropout masks; a model with stochastic layers must draw from it to stay reproducible. */
  random?: Random;
}

/**
 * A classifier as the stack sees it. Inputs are raw, in [0,1]: the classifier owns its input
 * normalisation, so perturbations are made in pixel space (as the reference script does).
 * Adapters: `classifierFromLayersModel` and `classifierFromFunction`.
 */
export interface Classifier {
  /** Number of classes K. */
  readonly numClasses: number;
  /** Runs a forward pass; must be differentiable w.r.t. the inputs and the trainable variables. */
  apply(inputs: Tensor, options: ForwardOptions): ClassifierOutput;
  /**
   * The variables an optimizer updates. A plain (mutable) array type because TF.js's
   * `optimizer.minimize(f, returnCost, varList)` and `tf.variableGrads(f, varList)` declare
   * `varList: Variable[]`: `optimizer.minimize(step.loss, false, model.trainableVariables)` must
   * compile as written. Return a fresh array (or one the caller may not change your model through).
   */
  readonly trainableVariables: Variable[];
  /** Variables that are state but not trained (batch-norm running statistics), for checkpoints. */
  readonly nonTrainableVariables: readonly Variable[];
  /**
   * `false` when `apply` draws no random masks (no dropout): two passes on the same inputs and mode
   * then compute the same values, which lets a stack reuse one pass for two purposes. Leave it
   * undefined when unsure.
   */
  readonly stochastic?: boolean;
}

// ─── Batches ───────────────────────────────────────────────────────────────────────────────────

/** A batch as a data set yields it: raw inputs in [0,1] (NHWC or [batch, features]) and labels. */
export interface Batch {
  /** Raw, un-augmented inputs. */
  inputs: Tensor;
  /** Integer class labels in [0, K), int32, shape [batch]. */
  labels: Tensor1D;
}

/** A batch after transforms: inputs and soft targets (rows sum to 1). */
export interface SoftBatch {
  /** Inputs the base loss sees (augmented and/or mixed). */
  inputs: Tensor;
  /** Soft targets, shape [batch, numClasses]. */
  targets: Tensor2D;
}

// ─── Contexts handed to plugins ────────────────────────────────────────────────────────────────

/** What every hook receives. */
export interface StepContext {
  /** The model being trained. */
  readonly model: Classifier;
  /** The step's seeded generator: ALL randomness (permutations, Beta draws, random starts) comes from it. */
  readonly random: Random;
  /** Optimizer steps taken before this one (0-based). */
  readonly step: number;
  /** Epoch, fractional within an epoch (epoch 2, halfway through = 2.5). */
  readonly epoch: number;
  /** Number of classes K. */
  readonly numClasses: number;
  /** Resolves a hyper-parameter that may be a schedule to its value at this step. */
  value(hyperParameter: Schedulable): number;
}

/**
 * Which input gradient a plugin asks for. Two plugins share one computation exactly when their
 * requests are equal (same input point, same loss and targets, same model mode).
 */
export interface InputGradientRequest {
  /**
   * `clean`: the raw batch with its hard labels (before augmentation and mixing), as RCAD and
   * attacks use. `batch`: the transformed inputs with the soft targets the base loss uses.
   */
  at: 'clean' | 'batch';
  /** Reduction of the cross-entropy over the batch (the reference RCAD uses `sum`). */
  reduction: 'sum' | 'mean';
  /** Model mode of the forward pass. */
  mode: ModelMode;
}

/** A cached input gradient. Owned by the step: plugins must not dispose it. */
export interface InputGradient {
  /** ∂loss/∂inputs, shape of the inputs. */
  gradient: Tensor;
  /** The loss whose gradient it is. */
  loss: Scalar;
  /** The logits of that forward pass. */
  logits: Tensor2D;
}

/** What `prepare` receives: runs outside the weight tape. */
export interface PrepareContext extends StepContext {
  /** The clean batch, before augmentation and mixing. */
  readonly clean: Batch;
  /** The batch the base loss will see (after augmentation, batch and target transforms). */
  readonly batch: SoftBatch;
  /** An input gradient of the cross-entropy, computed once per distinct request in this step. */
  inputGradient(request: InputGradientRequest): InputGradient;
}

/** What `loss` receives: runs inside the weight tape; everything here is differentiated. */
export interface LossContext extends StepContext {
  /** The clean batch, before augmentation and mixing. */
  readonly clean: Batch;
  /** The batch the base loss saw. */
  readonly batch: SoftBatch;
  /**
   * The base loss's forward pass (mode `train`) on `batch.inputs`: reuse it instead of a new pass.
   * Only for a plugin that declares `readsBase: true`; for any other, reading it throws a
   * ConfigError naming the plugin's `readsBase`.
   */
  readonly base: { logits: Tensor2D; features?: Tensor2D; loss: Scalar };
  /** A forward pass of the model inside the tape. */
  forward(inputs: Tensor, mode: ModelMode): ClassifierOutput;
}

// ─── The plugin ────────────────────────────────────────────────────────────────────────────────

/**
 * Versions of the plugin contract ({@link RegularizerPlugin}). A new version is added (never an old
 * one changed) when the contract changes in a way an existing plugin could not satisfy.
 */
export type RegularizerSpecificationVersion = 'v1';

/**
 * Stages, in the order a stack runs them. Within a stage, plugins run in the order given.
 * - `batch-transform`: new inputs and soft targets (mixup, cutmix).
 * - `target-transform`: new soft targets (label smoothing), applied after every batch transform.
 * - `loss-term`: a weighted term added to the loss (RCAD, entropy minimisation).
 * - `generated-loss`: a loss on generated inputs mixed with the classification loss
 *   (adversarial training, ME-ADA).
 */
export type Stage = 'batch-transform' | 'target-transform' | 'loss-term' | 'generated-loss';

/** What a plugin's `loss` returns. */
export interface LossTerm {
  /**
   * `loss-term`: the weighted term, added to the total.
   * `generated-loss`: the unweighted loss on generated inputs.
   */
  value: Scalar;
  /**
   * `generated-loss` only: the weight w of `value`; the total is (1 − Σw)·base + Σ w·value.
   * The stack rejects Σw > 1 (at composition where the plugins declare `mixWeight`, else at the step).
   */
  mixWeight?: number;
}

/**
 * A regularizer plugin. Named `RegularizerPlugin` (not `Regularizer`) so it is never confused with
 * TF.js's weight penalties (`tf.regularizers`). Implement only the hooks of your stage; every hook
 * is optional, and `prepare`'s tensors are disposed by the stack when the step ends.
 */
export interface RegularizerPlugin<State extends TensorContainer = TensorContainer> {
  /**
   * The version of this contract the plugin implements: `'v1'`, the only one so far. A stack rejects
   * a version it does not know with a ConfigError naming the plugin, so a plugin written against a
   * later contract fails when composed, not inside a step. Optional in v1 (a plugin without it is
   * taken as v1); declare it: a later version will require it.
   */
  readonly specificationVersion?: RegularizerSpecificationVersion;
  /**
   * Unique within a stack: the key of the plugin's term in logs, e.g. `rcad`. By convention the
   * plugin's package name without its scope, which is also its command-line name.
   */
  readonly name: string;
  /** Where in the step the plugin acts. */
  readonly stage: Stage;
  /**
   * Plugins sharing a group cannot be stacked: two label smoothers (`target-smoothing`), two batch
   * mixers (`batch-mixing`; a plugin offering both mixup and cutmix switches internally).
   */
  readonly exclusiveGroup?: string;
  /**
   * `generated-loss` only: the weight w that `loss` returns as `mixWeight`, declared up front (a
   * number in [0, 1] or a schedule) so that `composeRegularizers` rejects a stack whose weights can
   * add up to more than 1 before any step runs. A declared schedule is checked at every point where
   * its value changes; a function can only be checked at each step.
   */
  readonly mixWeight?: Schedulable;
  /**
   * `true` when `loss` reads `context.base` (the base pass's logits, features or loss), as entropy
   * minimisation does. Default `false`: then `context.base` throws a ConfigError naming this field,
   * and the stack may run the plugin's term on a tape of its own, after a base pass that also served
   * the clean input gradient (the fused step: one forward+backward less for RCAD or FGSM). A stack
   * with a plugin that declares it never fuses. Why and when: docs/architecture.md, "The fused step".
   */
  readonly readsBase?: boolean;
  /** `batch-transform`: returns new inputs and soft targets. Outside the tape. */
  transformBatch?(batch: SoftBatch, context: StepContext): SoftBatch;
  /** `target-transform`: returns new soft targets. Outside the tape. */
  transformTargets?(targets: Tensor2D, context: StepContext): Tensor2D;
  /** Computes the step's constants outside the weight tape (no gradient flows through them). */
  prepare?(context: PrepareContext): State;
  /** Builds the plugin's loss inside the weight tape from the constants `prepare` returned. */
  loss?(context: LossContext, state: State): LossTerm;
}

// ─── One step, for the trainer or a user's own loop ─────────────────────────────────────────────

/** What one step needs. */
export interface StepInput {
  /** The model being trained. */
  model: Classifier;
  /** The clean batch. */
  batch: Batch;
  /**
   * The run's seeded generator (advanced by the step). Default: the stack's own generator, seeded by
   * `composeRegularizers(plugins, { seed })`, which every step without one advances. Never pass a
   * new generator per step (`random: new Random(0)` inside a loop): every step would draw the same.
   */
  random?: Random;
  /** Optimizer steps taken so far (for schedules). Default 0. */
  step?: number;
  /** Fractional epoch (for schedules). Default 0. */
  epoch?: number;
  /** Data augmentation of the clean inputs (the trainer's crop + flip), applied before batch transforms. */
  augment?: (inputs: Tensor, random: Random) => Tensor;
  /**
   * Base loss: `single` is CE on the transformed batch; `two-view` is the reference script's
   * 0.5·[CE(x') + CE(augment(x'))] (clean and augmented views, same targets; needs `augment`).
   */
  baseLoss?: 'single' | 'two-view';
  /** Check labels and inputs (shape, range, NaN) at some cost per step. Default true. */
  validate?: boolean;
}

/** What `stack.gradients(input)` returns: the caller disposes `value` and `grads`. */
export interface StepGradients {
  /** The total loss. */
  value: Scalar;
  /** Its gradients w.r.t. the model's trainable variables, by variable name. */
  grads: NamedTensorMap;
  /** The named terms: `base`, one per plugin, and `total`. */
  terms: Record<string, number>;
  /** Whether the base pass also served the clean input gradient (see `RegularizerStack.gradients`). */
  fused: boolean;
  /**
   * How the clean input gradient was served (docs/architecture.md, "The fused step"): `plain` (the
   * plain path: a plugin that asks for it pays its own forward and backward pass), `base-backward`
   * (the base pass's backward: its loss is the plain cross-entropy on the clean batch),
   * `base-forward` (the base pass's forward, through a second, input-only backward of the plain
   * cross-entropy on the clean view's logits: the stack transforms the targets, e.g. label smoothing).
   * `fused` is true for both fused kinds.
   */
  fusion: 'plain' | 'base-backward' | 'base-forward';
}

/** A step prepared outside the tape, ready for one optimizer update. */
export interface PreparedStep {
  /** The batch the base loss sees. */
  readonly batch: SoftBatch;
  /** The loss closure for `optimizer.minimize(step.loss)`: returns the total. */
  loss(): Scalar;
  /** The total and its gradients w.r.t. the model's trainable variables (clip and decay them yourself). */
  gradients(): { value: Scalar; grads: NamedTensorMap };
  /** The named terms of the last `loss()`/`gradients()` call: `base`, one per plugin, and `total`. */
  terms(): Record<string, number>;
  /**
   * Frees everything the step holds. Call once, after the update; `loss`, `gradients` and `terms`
   * then throw a ConfigError (field `step`).
   */
  dispose(): void;
}
