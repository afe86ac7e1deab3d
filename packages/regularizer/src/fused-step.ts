/**
 * The fused step: the base pass's forward serves both the base loss's weight gradients and the clean
 * input gradient that RCAD or FGSM ask for, then the plugins' terms run on a second tape. Where the
 * base loss is the plain cross-entropy, one backward w.r.t. the inputs and the weights serves both;
 * where a target transform (label smoothing) changed its targets, a second, input-only backward of
 * the plain cross-entropy over the same tape serves the direction (`tape.ts`). Why this is exact, and
 * when the stack takes it: docs/architecture.md, "The fused step".
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Classifier, InputGradient, RegularizerPlugin, StepGradients, StepInput } from './contract.js';
import { oneHotTargets, softCrossEntropy } from './losses.js';
import type { Random } from './random.js';
import { prepareStep, releasingTape, stepContext, transformBatch, validateBatch, type InternalStep } from './step.js';
import { recordForward, type Recording } from './tape.js';

/**
 * Whether a step of a stack whose plugins allow fusion (see `fusionAllowed` in `stack.ts`) can take
 * the fused path: two passes of the model on the same inputs compute the same values, and the base
 * pass runs the model on the clean batch alone: a single view with no augmentation, or the two-view
 * loss, whose first view is the clean batch (the stack has no batch transform).
 */
export function fusesWith(input: StepInput): boolean {
  if (input.model.stochastic !== false) return false;
  const baseLoss = input.baseLoss ?? 'single';
  return baseLoss === 'single' ? input.augment === undefined : baseLoss === 'two-view' && typeof input.augment === 'function';
}

/** The fused step's gradients; frees everything it made besides its result, whether it returns or throws. */
export function fusedGradients(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }): StepGradients {
  // Disposing a tensor twice is a no-op in TF.js, so what is freed here may also have been freed before.
  const scratch: FusedScratch = { tensors: [] };
  const statistics = new StatisticsBeforeBasePass(input.model.nonTrainableVariables);
  try {
    return releasingTape(() => fusedStep(plugins, input, scratch, statistics));
  } finally {
    scratch.recording?.release();
    scratch.step?.dispose();
    tf.dispose(scratch.tensors);
    statistics.dispose();
  }
}

/** The fused step's intermediate tensors, tape and prepared step, for {@link fusedGradients} to free. */
interface FusedScratch {
  tensors: tf.Tensor[];
  recording?: Recording<unknown>;
  step?: InternalStep;
}

function fusedStep(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, scratch: FusedScratch, statistics: StatisticsBeforeBasePass): StepGradients {
  const { model, batch: clean, random } = input;
  if (input.validate !== false) validateBatch(clean, model.numClasses);
  const variables = model.trainableVariables as tf.Variable[];

  // The transforms first, then the second view, as the plain path orders its draws from `random`.
  // Only target transforms reach here (`fusionAllowed`): the inputs stay the clean batch.
  const transformed = transformBatch(plugins, input, stepContext(input));
  scratch.tensors.push(transformed.inputs, transformed.targets);
  // The second view, outside the tape and before any prepare, as the plain path draws it. Constant in
  // the base pass, so the input gradient there is the clean view's alone.
  let secondView: tf.Tensor | undefined;
  if (input.baseLoss === 'two-view') {
    secondView = tf.tidy(() => input.augment!(clean.inputs, random));
    if (secondView !== clean.inputs) scratch.tensors.push(secondView);
  }

  const transformsTargets = plugins.some((plugin) => plugin.stage === 'target-transform');
  const base = transformsTargets
    ? directionFromBaseForward(input, transformed.targets, secondView, scratch)
    : directionFromBaseBackward(input, transformed.targets, secondView, scratch);
  // The plain path prepares before its base pass updates the running statistics: a prepare that
  // reads them sees them as they were (see StatisticsBeforeBasePass).
  try {
    // The plugins' part has no base pass, so the prepared step needs neither view: the second one is
    // drawn above, and the batch the plugins see is the clean one either way.
    const pluginsInput = { ...input, model: statistics.watch(model), validate: false, baseLoss: 'single' as const };
    delete pluginsInput.augment;
    scratch.step = prepareStep(plugins, pluginsInput, { seededGradients: base.seeded, transformed });
  } finally {
    statistics.putUpdatedBack();
  }
  const step = scratch.step;
  let mixTotal = 0;
  // Tape 2: the plugins' terms on the constants their prepare made.
  const second = tf.variableGrads(() => {
    const part = step.pluginLoss();
    mixTotal = part.mixTotal;
    return part.value;
  }, variables);
  scratch.tensors.push(second.value, ...Object.values(second.grads));
  const baseWeight = 1 - mixTotal;
  const grads: tf.NamedTensorMap = {};
  variables.forEach((variable, i) => {
    const fromBase = base.weightGradients[i];
    const fromPlugins = second.grads[variable.name];
    // As tf.variableGrads: a variable that neither loss depends on gets no entry.
    if (fromBase === undefined && fromPlugins === undefined) return;
    grads[variable.name] = tf.tidy(() => {
      if (fromBase === undefined) return tf.clone(fromPlugins!);
      const scaled = tf.mul(fromBase, baseWeight);
      return fromPlugins ? tf.add(scaled, fromPlugins) : scaled;
    });
  });
  const value = tf.tidy(() => tf.add(tf.mul(base.value, baseWeight), second.value) as tf.Scalar);
  const { total: _withoutBase, ...pluginTerms } = step.terms();
  const terms = { base: base.value.dataSync()[0]!, ...pluginTerms, total: value.dataSync()[0]! };
  return { value, grads, terms, fused: true, fusion: base.fusion };
}

/** What the base pass hands on: its loss and weight gradients, and the clean input gradients it served. */
interface BasePass {
  value: tf.Scalar;
  /** By the model's trainable variables, in order; undefined where the base loss does not depend on one. */
  weightGradients: Array<tf.Tensor | undefined>;
  /** The step's input-gradient cache entries for `{ at: 'clean' }`. */
  seeded: Map<string, InputGradient>;
  fusion: 'base-backward' | 'base-forward';
}

/**
 * The base pass in `train` mode (running statistics updated, as the plain path's base pass updates
 * them: the clean view first, then the second view, each in its own pass with its own batch
 * statistics), and one backward w.r.t. the inputs and the weights together: the base loss is the
 * plain cross-entropy, so its input gradient is the direction's.
 */
function directionFromBaseBackward(input: StepInput & { random: Random }, targets: tf.Tensor2D, secondView: tf.Tensor | undefined, scratch: FusedScratch): BasePass {
  const { model, batch: clean, random } = input;
  const variables = model.trainableVariables as tf.Variable[];
  let logits: tf.Tensor2D | undefined;
  let cleanLoss: tf.Scalar | undefined;
  const first = tf.tidy(() => {
    const { value, grads } = tf.valueAndGrads((inputs: tf.Tensor) => {
      const output = model.apply(inputs, { mode: 'train', random });
      logits = tf.keep(output.logits);
      scratch.tensors.push(logits);
      const loss = softCrossEntropy(output.logits, targets);
      if (!secondView) return loss;
      cleanLoss = tf.keep(loss);
      scratch.tensors.push(cleanLoss);
      return tf.mul(0.5, tf.add(loss, softCrossEntropy(model.apply(secondView, { mode: 'train', random }).logits, targets))) as tf.Scalar;
    })([clean.inputs, ...variables]);
    return { value, grads };
  });
  scratch.tensors.push(first.value, ...first.grads);
  const [baseInputGradient, ...weightGradients] = first.grads as [tf.Tensor, ...tf.Tensor[]];
  // Two views: the base loss is 0.5·[CE(x) + CE(view)], the view a constant, so ∇x CE(x) is twice the
  // base pass's input gradient (an exact scaling in floating point).
  const inputGradient = secondView ? tf.mul(baseInputGradient, 2) : baseInputGradient;
  if (secondView) scratch.tensors.push(inputGradient);
  const loss = cleanLoss ?? first.value;
  const size = clean.inputs.shape[0]!;
  const mean: InputGradient = { gradient: inputGradient, loss, logits: logits! };
  const sum: InputGradient = { gradient: tf.mul(inputGradient, size), loss: tf.mul(loss, size) as tf.Scalar, logits: logits! };
  scratch.tensors.push(sum.gradient, sum.loss);
  return { value: first.value, weightGradients, seeded: seededCache(mean, sum), fusion: 'base-backward' };
}

/**
 * The base pass in `train` mode as in {@link directionFromBaseBackward}, its forward recorded once,
 * then two backward passes over that one tape: the base loss (transformed targets) w.r.t. the
 * weights, and the plain cross-entropy summed over the clean view's logits (the reference's
 * direction: hard labels, batch statistics) w.r.t. the clean inputs alone, which skips the weights'
 * gradients. Batch norm couples the examples, so the direction needs that backward of its own; its
 * forward is the base pass's, whose values a `frozen-stats` pass repeats.
 */
function directionFromBaseForward(input: StepInput & { random: Random }, targets: tf.Tensor2D, secondView: tf.Tensor | undefined, scratch: FusedScratch): BasePass {
  const { model, batch: clean, random } = input;
  const variables = model.trainableVariables as tf.Variable[];
  const hardTargets = oneHotTargets(clean.labels, model.numClasses);
  scratch.tensors.push(hardTargets);
  const recording = recordForward(() => {
    const logits = model.apply(clean.inputs, { mode: 'train', random }).logits;
    const direction = softCrossEntropy(logits, hardTargets, 'sum');
    let base = softCrossEntropy(logits, targets);
    if (secondView) base = tf.mul(0.5, tf.add(base, softCrossEntropy(model.apply(secondView, { mode: 'train', random }).logits, targets))) as tf.Scalar;
    return { logits, direction, base };
  });
  scratch.recording = recording;
  const { logits, direction, base } = recording.result;
  scratch.tensors.push(logits, direction, base);
  const weightGradients = recording.backward(base, variables);
  scratch.tensors.push(...weightGradients.filter((gradient): gradient is tf.Tensor => gradient !== undefined));
  const [inputGradient] = recording.backward(direction, [clean.inputs]);
  if (inputGradient === undefined) throw new Error("internal: the base pass's tape has no path from the clean inputs to the logits");
  scratch.tensors.push(inputGradient);
  recording.release();
  const size = clean.inputs.shape[0]!;
  // The reference's direction is the sum's gradient (RCAD and FGSM ask for it); the mean's is it / B.
  const sum: InputGradient = { gradient: inputGradient, loss: direction, logits };
  const mean: InputGradient = { gradient: tf.div(inputGradient, size), loss: tf.div(direction, size) as tf.Scalar, logits };
  scratch.tensors.push(mean.gradient, mean.loss);
  return { value: base, weightGradients, seeded: seededCache(mean, sum), fusion: 'base-forward' };
}

/**
 * The step's cache entries for the clean input gradient: the same gradient serves both batch-statistics
 * modes (`train` and `frozen-stats` normalise with the same batch statistics). Entries share tensors;
 * the step's dispose() frees each once (disposing twice is a no-op in TF.js).
 */
function seededCache(mean: InputGradient, sum: InputGradient): Map<string, InputGradient> {
  const seeded = new Map<string, InputGradient>();
  for (const mode of ['train', 'frozen-stats'] as const) {
    seeded.set(`clean|mean|${mode}`, mean);
    seeded.set(`clean|sum|${mode}`, sum);
  }
  return seeded;
}

/**
 * The running statistics as they were before the fused step's base pass updated them. One snapshot
 * (a clone per statistic, which shares the data: no copy) is all a step costs while no prepare reads
 * them; only when one does (a forward pass in `eval` or `train` mode, or `nonTrainableVariables`
 * read through the model the prepare context holds) are the earlier values put in for the rest of
 * the prepare phase, and the updated ones back after it.
 */
class StatisticsBeforeBasePass {
  private readonly before: tf.Tensor[];
  private updated: tf.Tensor[] | undefined;
  private preparing = true;

  constructor(private readonly variables: readonly tf.Variable[]) {
    this.before = variables.map((variable) => tf.keep(tf.clone(variable)));
  }

  /**
   * The model as the prepare phase sees it: the same model, whose `apply` in a mode that reads
   * running statistics (and whose `nonTrainableVariables`) first puts the earlier values in.
   */
  watch(model: Classifier): Classifier {
    if (this.variables.length === 0) return model;
    const restoreFor = () => {
      if (this.preparing) this.restore();
    };
    // A fresh target with the model as prototype (not the model itself), so that the proxy may answer
    // what it likes even for a frozen model; every other property is the model's, methods bound to it.
    return new Proxy(Object.create(model) as Classifier, {
      get: (_target, key) => {
        if (key === 'apply') {
          return (inputs: tf.Tensor, options: Parameters<Classifier['apply']>[1]) => {
            if (options?.mode !== 'frozen-stats') restoreFor();
            return model.apply(inputs, options);
          };
        }
        if (key === 'nonTrainableVariables') restoreFor();
        const value = Reflect.get(model, key, model) as unknown;
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(model) : value;
      },
    });
  }

  /** Puts the earlier values in, keeping the updated ones for {@link putUpdatedBack}. */
  private restore(): void {
    if (this.updated) return;
    this.updated = this.variables.map((variable) => tf.keep(tf.clone(variable)));
    this.variables.forEach((variable, i) => variable.assign(this.before[i]!));
  }

  /** Ends the prepare phase: the updated values go back in where {@link restore} took them out. */
  putUpdatedBack(): void {
    this.preparing = false;
    this.updated?.forEach((tensor, i) => this.variables[i]!.assign(tensor));
  }

  dispose(): void {
    tf.dispose([...this.before, ...(this.updated ?? [])]);
  }
}
