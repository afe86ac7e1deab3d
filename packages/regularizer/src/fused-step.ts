/**
 * The fused step: one forward+backward of the base pass w.r.t. the inputs and the weights together
 * serves both the base loss's weight gradients and the clean input gradient that RCAD or FGSM ask
 * for, then the plugins' terms run on a second tape. Why this is exact, and when the stack takes
 * it: docs/architecture.md, "The fused step".
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Classifier, InputGradient, RegularizerPlugin, StepGradients, StepInput } from './contract.js';
import { oneHotTargets, softCrossEntropy } from './losses.js';
import type { Random } from './random.js';
import { prepareStep, releasingTape, validateBatch, type InternalStep } from './step.js';

/**
 * Whether a step of a stack whose plugins allow fusion (see `fusionAllowed` in `stack.ts`) can take
 * the fused path: two passes of the model on the same inputs compute the same values, and the base
 * pass runs the model on the clean batch alone: the plain cross-entropy with no augmentation, or the
 * two-view loss, whose first view is the clean batch (the stack has no batch or target transform).
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
    scratch.step?.dispose();
    tf.dispose(scratch.tensors);
    statistics.dispose();
  }
}

/** The fused step's intermediate tensors and prepared step, for {@link fusedGradients} to free. */
interface FusedScratch {
  tensors: tf.Tensor[];
  step?: InternalStep;
}

function fusedStep(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, scratch: FusedScratch, statistics: StatisticsBeforeBasePass): StepGradients {
  const { model, batch: clean, random } = input;
  if (input.validate !== false) validateBatch(clean, model.numClasses);
  const variables = model.trainableVariables as tf.Variable[];
  const size = clean.inputs.shape[0]!;

  // The second view, outside the tape and before any prepare, as the plain path draws it. Constant in
  // tape 1, so the input gradient there is the clean view's alone.
  let secondView: tf.Tensor | undefined;
  if (input.baseLoss === 'two-view') {
    secondView = tf.tidy(() => input.augment!(clean.inputs, random));
    if (secondView !== clean.inputs) scratch.tensors.push(secondView);
  }

  // Tape 1: the base loss w.r.t. the inputs and the weights together, in train mode (running
  // statistics updated, as the plain path's base pass updates them: the clean view first, then the
  // second view, each in its own pass with its own batch statistics).
  let logits: tf.Tensor2D | undefined;
  let cleanLoss: tf.Scalar | undefined;
  const first = tf.tidy(() => {
    const targets = oneHotTargets(clean.labels, model.numClasses);
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
  const [baseInputGradient, ...baseGrads] = first.grads as [tf.Tensor, ...tf.Tensor[]];
  // Two views: the base loss is 0.5·[CE(x) + CE(view)], the view a constant, so ∇x CE(x) is twice the
  // base pass's input gradient (an exact scaling in floating point).
  const inputGradient = secondView ? tf.mul(baseInputGradient, 2) : baseInputGradient;
  if (secondView) scratch.tensors.push(inputGradient);
  const loss = cleanLoss ?? first.value;
  // The same gradient serves both reductions (the sum's is the mean's × B) and both batch-statistics modes.
  const seeded = new Map<string, InputGradient>();
  const mean: InputGradient = { gradient: inputGradient, loss, logits: logits! };
  const sum: InputGradient = { gradient: tf.mul(inputGradient, size), loss: tf.mul(loss, size) as tf.Scalar, logits: logits! };
  scratch.tensors.push(sum.gradient, sum.loss);
  // Entries share tensors; the step's dispose() frees each once (disposing twice is a no-op in TF.js).
  for (const mode of ['train', 'frozen-stats'] as const) {
    seeded.set(`clean|mean|${mode}`, mean);
    seeded.set(`clean|sum|${mode}`, sum);
  }
  // The plain path prepares before its base pass updates the running statistics: a prepare that
  // reads them sees them as they were (see StatisticsBeforeBasePass).
  try {
    // The plugins' part has no base pass, so the prepared step needs neither view: the second one is
    // drawn above, and the batch the plugins see is the clean one either way.
    const pluginsInput = { ...input, model: statistics.watch(model), validate: false, baseLoss: 'single' as const };
    delete pluginsInput.augment;
    scratch.step = prepareStep(plugins, pluginsInput, { seededGradients: seeded });
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
    const fromPlugins = second.grads[variable.name];
    grads[variable.name] = tf.tidy(() => {
      const fromBase = tf.mul(baseGrads[i]!, baseWeight);
      return fromPlugins ? tf.add(fromBase, fromPlugins) : fromBase;
    });
  });
  const value = tf.tidy(() => tf.add(tf.mul(first.value, baseWeight), second.value) as tf.Scalar);
  const { total: _withoutBase, ...pluginTerms } = step.terms();
  const terms = { base: first.value.dataSync()[0]!, ...pluginTerms, total: value.dataSync()[0]! };
  return { value, grads, terms, fused: true };
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
