/**
 * One step of a stack, as `stack.prepare` returns it: the transforms and every plugin's `prepare`
 * outside the weight tape, then the loss closure (base pass and plugin terms) inside it. The fused
 * step (`fused-step.ts`) reuses it for the plugins' part.
 */
import * as tf from '@tensorflow/tfjs-core';
import type {
  Batch,
  Classifier,
  InputGradient,
  InputGradientRequest,
  LossContext,
  ModelMode,
  PrepareContext,
  PreparedStep,
  RegularizerPlugin,
  SoftBatch,
  StepContext,
  StepGradients,
  StepInput,
} from './contract.js';
import { ConfigError, DataError } from './errors.js';
import { oneHotTargets, softCrossEntropy } from './losses.js';
import type { Random } from './random.js';
import { resolveSchedule } from './schedule.js';

/** A number as error messages print it: six significant digits, no trailing noise. */
export const round = (value: number) => Number(value.toPrecision(6));

/**
 * The cross-entropy's gradient w.r.t. the inputs, with its loss and logits. Call it outside any
 * weight tape (in `prepare`): inside one, TF.js would tape it.
 */
export function lossInputGradient(
  model: Classifier,
  inputs: tf.Tensor,
  targets: tf.Tensor2D,
  options: { reduction: 'sum' | 'mean'; mode: ModelMode; random?: Random },
): InputGradient {
  return tf.tidy(() => {
    let logits: tf.Tensor2D | undefined;
    const lossOf = (x: tf.Tensor) => {
      const output = model.apply(x, options.random ? { mode: options.mode, random: options.random } : { mode: options.mode });
      logits = tf.keep(output.logits);
      return softCrossEntropy(output.logits, targets, options.reduction);
    };
    let result: { value: tf.Scalar; grad: tf.Tensor };
    try {
      result = releasingTape(() => tf.valueAndGrad(lossOf)(inputs));
    } catch (error) {
      logits?.dispose(); // kept, so the tidy would not free it
      throw error;
    }
    const { value, grad } = result;
    // The logits had to be kept to leave valueAndGrad's scope; hand back an ordinary tensor so that a
    // caller's tidy disposes it like the others.
    const kept = logits!;
    const released = tf.clone(kept);
    kept.dispose();
    return { gradient: grad, loss: value, logits: released };
  });
}

/** Checks a batch: shapes, counts, integer labels in [0, K), finite inputs. */
export function validateBatch(batch: Batch, numClasses: number): void {
  if (!(batch?.inputs instanceof tf.Tensor)) throw new DataError('batch.inputs', 'expected a tf.Tensor');
  if (!(batch.labels instanceof tf.Tensor)) throw new DataError('batch.labels', 'expected a tf.Tensor');
  if (batch.inputs.rank < 2) throw new DataError('batch.inputs', `expected rank ≥ 2 ([batch, ...]), got shape [${batch.inputs.shape}]`);
  if (batch.labels.rank !== 1) throw new DataError('batch.labels', `expected rank 1 ([batch]), got shape [${batch.labels.shape}]`);
  const size = batch.inputs.shape[0]!;
  if (size === 0) throw new DataError('batch.inputs', 'the batch is empty');
  if (batch.labels.shape[0] !== size) {
    throw new DataError('batch.labels', `has ${batch.labels.shape[0]} labels for ${size} inputs`);
  }
  if (batch.inputs.dtype !== 'float32') throw new DataError('batch.inputs', `expected float32, got ${batch.inputs.dtype}`);
  const labels = batch.labels.dataSync();
  for (let i = 0; i < labels.length; i++) {
    const label = labels[i]!;
    if (!Number.isInteger(label) || label < 0 || label >= numClasses) {
      throw new DataError('batch.labels', `label ${label} at index ${i} is not an integer in [0, ${numClasses})`);
    }
  }
  const finite = tf.tidy(() => tf.all(tf.isFinite(batch.inputs)).dataSync()[0]);
  if (!finite) throw new DataError('batch.inputs', 'contains NaN or Inf values');
}

/** What the fused step hands to {@link prepareStep}: what its base pass already made. */
export interface PrepareOptions {
  /** Input gradients the base pass served, by cache key (`at|reduction|mode`). */
  seededGradients?: Map<string, InputGradient>;
  /** The batch after the transforms, made by {@link transformBatch} before the base pass (the step owns it). */
  transformed?: SoftBatch;
}

/** A prepared step, plus what the fused step needs: the plugins' part of the loss without the base pass. */
export interface InternalStep extends PreparedStep {
  /**
   * Σ plugin terms and w·L_generated, inside a tape, without the base pass: only for stacks where no
   * plugin declares `readsBase` (the composition decides).
   */
  pluginLoss(): { value: tf.Scalar; mixTotal: number };
}

/**
 * Prepares one step outside the weight tape (transforms, then every plugin's `prepare`) and returns
 * its loss closures. When it throws, it has freed every tensor it made.
 */
export function prepareStep(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, options: PrepareOptions = {}): InternalStep {
  // What the step makes is listed as it is made, so that a throw half-way through frees it all.
  const owned: unknown[] = [];
  try {
    return releasingTape(() => buildStep(plugins, input, options, owned));
  } catch (error) {
    disposeOwned(owned, input?.batch);
    throw error;
  }
}

/** Frees the tensors in `owned`, except the caller's clean batch (a plugin may hand it back in its state). */
export function disposeOwned(owned: unknown[], clean: Batch | undefined): void {
  const userTensors = new Set<unknown>([clean?.inputs, clean?.labels]);
  tf.dispose(tensorsIn(owned).filter((tensor) => !userTensors.has(tensor)));
  owned.length = 0;
}

function buildStep(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, options: PrepareOptions, owned: unknown[]): InternalStep {
  const own = <T>(value: T): T => {
    owned.push(value);
    return value;
  };
  if (input === null || typeof input !== 'object') throw new ConfigError('input', 'expected a StepInput object { model, batch, random }');
  const { model, batch: clean, random } = input;
  const step = input.step ?? 0;
  const numClasses = model.numClasses;
  const baseLoss = input.baseLoss ?? 'single';
  if (baseLoss !== 'single' && baseLoss !== 'two-view') throw new ConfigError('baseLoss', `expected single or two-view, got ${String(baseLoss)}`);
  if (baseLoss === 'two-view' && !input.augment) throw new ConfigError('baseLoss', "'two-view' needs an augment function");
  if (input.validate !== false) validateBatch(clean, numClasses);

  const context = stepContext(input);
  const batch: SoftBatch = own(options.transformed ?? transformBatch(plugins, input, context));
  const secondView = baseLoss === 'two-view' ? own(tf.tidy(() => input.augment!(batch.inputs, random))) : undefined;

  const cleanTargets = own(tf.tidy(() => oneHotTargets(clean.labels, numClasses)));
  const gradientCache = new Map<string, InputGradient>(own([...(options.seededGradients ?? [])]));
  const inputGradient = (request: InputGradientRequest): InputGradient => {
    if (request.at !== 'clean' && request.at !== 'batch') throw new ConfigError('inputGradient.at', `expected clean or batch, got ${String(request.at)}`);
    if (request.reduction !== 'sum' && request.reduction !== 'mean') throw new ConfigError('inputGradient.reduction', `expected sum or mean, got ${String(request.reduction)}`);
    const key = `${request.at}|${request.reduction}|${request.mode}`;
    let cached = gradientCache.get(key);
    if (!cached) {
      const point = request.at === 'clean' ? { inputs: clean.inputs, targets: cleanTargets } : batch;
      // Kept: the request may come from inside a plugin's tidy, but the cache lives until dispose().
      cached = lossInputGradient(model, point.inputs, point.targets, { reduction: request.reduction, mode: request.mode, random });
      [cached.gradient, cached.loss, cached.logits].forEach((tensor) => tf.keep(tensor));
      gradientCache.set(key, own(cached));
    }
    return cached;
  };
  const prepareContext: PrepareContext = { ...context, clean, batch, inputGradient };
  const states = plugins.map((plugin) => (plugin.prepare ? own(tf.tidy(() => plugin.prepare!(prepareContext))) : undefined));

  let lastTerms: Record<string, tf.Scalar> = {};
  let lastWeights: Record<string, number> = {};
  let lastBaseWeight = 1;
  const disposeTerms = () => {
    tf.dispose(Object.values(lastTerms));
    lastTerms = {};
  };

  const forward = (inputs: tf.Tensor, mode: ModelMode) => model.apply(inputs, { mode, random });

  /**
   * Runs every plugin's loss; returns the weighted parts and records the named terms. `base` is
   * handed only to the plugins that declare `readsBase`; the others get a context whose `base`
   * throws, on both paths, so that a missing declaration fails the same way whatever the model.
   */
  const pluginParts = (shared: Omit<LossContext, 'base'>, base: LossContext['base'] | undefined) => {
    const terms: Record<string, tf.Scalar> = {};
    const weights: Record<string, number> = {};
    const parts: tf.Scalar[] = [];
    let mixTotal = 0;
    plugins.forEach((plugin, index) => {
      if (!plugin.loss) return;
      const term = plugin.loss(lossContextFor(plugin, shared, base), states[index] as never);
      if (!(term?.value instanceof tf.Tensor) || term.value.rank !== 0) {
        throw new ConfigError(`${plugin.name}.loss`, 'must return { value: tf.Scalar }');
      }
      terms[plugin.name] = term.value;
      if (plugin.stage === 'generated-loss') {
        const weight = term.mixWeight;
        if (typeof weight !== 'number' || !(weight >= 0 && weight <= 1)) {
          throw new ConfigError(`${plugin.name}.mixWeight`, `a generated-loss term needs a mixWeight in [0, 1], got ${String(weight)}`);
        }
        mixTotal += weight;
        weights[plugin.name] = weight;
        parts.push(tf.mul(term.value, weight));
      } else {
        weights[plugin.name] = 1;
        parts.push(term.value);
      }
    });
    if (mixTotal > 1 + 1e-9) {
      const parts = plugins.filter((plugin) => plugin.stage === 'generated-loss' && plugin.loss).map((plugin) => `${plugin.name} ${round(weights[plugin.name]!)}`);
      throw new ConfigError('stack', `the generated-loss plugins' mix weights add up to ${round(mixTotal)} > 1 at step ${step} (${parts.join(' + ')})`);
    }
    return { terms, weights, parts, mixTotal };
  };

  const record = (terms: Record<string, tf.Scalar>, weights: Record<string, number>, mixTotal: number) => {
    lastTerms = Object.fromEntries(Object.entries(terms).map(([name, value]) => [name, tf.keep(value)]));
    lastWeights = weights;
    lastBaseWeight = 1 - mixTotal;
  };

  // A disposed step's tensors are gone: say so rather than fail somewhere inside TF.js.
  let disposed = false;
  const assertLive = () => {
    if (disposed) throw new ConfigError('step', 'was disposed; prepare a new step for each update');
  };

  // loss() and pluginLoss() run in a tidy: a plugin that throws leaves nothing behind, while
  // record() keeps the terms that terms() reads.
  const loss = (): tf.Scalar => {
    assertLive();
    disposeTerms();
    return releasingTape(() => tf.tidy(() => lossInTidy()));
  };
  const lossInTidy = (): tf.Scalar => {
    const output = forward(batch.inputs, 'train');
    let base = softCrossEntropy(output.logits, batch.targets);
    if (secondView) base = tf.mul(0.5, tf.add(base, softCrossEntropy(forward(secondView, 'train').logits, batch.targets)));
    const basePass = { logits: output.logits, ...(output.features ? { features: output.features } : {}), loss: base };
    const { terms, weights, parts, mixTotal } = pluginParts({ ...context, clean, batch, forward }, basePass);
    const all = [mixTotal > 0 ? tf.mul(base, 1 - mixTotal) : base, ...parts];
    // A clone when alone: the caller may dispose the total while `base` stays kept for terms().
    const total = all.length === 1 ? tf.clone(base) : (tf.addN(all) as tf.Scalar);
    record({ base, ...terms }, weights, mixTotal);
    return total;
  };

  const pluginLoss = () => {
    assertLive();
    disposeTerms();
    return releasingTape(() => tf.tidy(() => pluginLossInTidy()));
  };
  const pluginLossInTidy = () => {
    const { terms, weights, parts, mixTotal } = pluginParts({ ...context, clean, batch, forward }, undefined);
    record(terms, weights, mixTotal);
    return { value: tf.addN(parts) as tf.Scalar, mixTotal };
  };

  return {
    batch,
    loss,
    pluginLoss,
    gradients: () => {
      assertLive();
      return tf.variableGrads(loss, model.trainableVariables as tf.Variable[]);
    },
    terms: () => {
      assertLive();
      const values: Record<string, number> = Object.fromEntries(Object.entries(lastTerms).map(([name, value]) => [name, value.dataSync()[0]!]));
      let total = lastBaseWeight * (values.base ?? NaN);
      for (const [name, weight] of Object.entries(lastWeights)) total += weight * values[name]!;
      return { ...values, total };
    },
    dispose: () => {
      if (disposed) return;
      disposed = true;
      disposeTerms();
      disposeOwned(owned, clean);
    },
  };
}

/** The context every hook of one step receives. */
export function stepContext(input: StepInput & { random: Random }): StepContext {
  const step = input.step ?? 0;
  const epoch = input.epoch ?? 0;
  return {
    model: input.model,
    random: input.random,
    step,
    epoch,
    numClasses: input.model.numClasses,
    value: (hyperParameter) => resolveSchedule(hyperParameter, { step, epoch }),
  };
}

/**
 * The batch the base loss sees: the single view's augmentation (if any), then the batch and target
 * transforms in plugin order, outside any tape. The inputs are never the caller's tensor (a clone
 * where nothing changed them), so that whoever owns the result may dispose it.
 */
export function transformBatch(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, context: StepContext): SoftBatch {
  const { batch: clean, random } = input;
  return tf.tidy(() => {
    let inputs = input.augment && (input.baseLoss ?? 'single') === 'single' ? input.augment(clean.inputs, random) : clean.inputs;
    let soft: SoftBatch = { inputs, targets: oneHotTargets(clean.labels, context.numClasses) };
    for (const plugin of plugins) {
      if (plugin.stage === 'batch-transform') soft = plugin.transformBatch!(soft, context);
      else if (plugin.stage === 'target-transform') soft = { inputs: soft.inputs, targets: plugin.transformTargets!(soft.targets, context) };
    }
    inputs = soft.inputs === clean.inputs ? tf.clone(soft.inputs) : soft.inputs; // the step owns what it disposes
    return { inputs, targets: soft.targets };
  });
}

/** The step as `stack.prepare` makes it, its gradients taken by one tape, everything disposed. */
export function plainGradients(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }): StepGradients {
  const step = prepareStep(plugins, input);
  try {
    const { value, grads } = step.gradients();
    return { value, grads, terms: step.terms(), fused: false, fusion: 'plain' };
  } finally {
    step.dispose();
  }
}

/**
 * Runs `body`; when it throws, frees what gradient tapes saved for a backward pass since it began.
 * TF.js keeps every taped op's inputs (`tf.keep`) until the backward pass frees them, and a forward
 * pass that throws never gets one: without this, each failed step inside `tf.grad`,
 * `tf.variableGrads` or `optimizer.minimize` would leak its saved tensors.
 */
export function releasingTape<T>(body: () => T): T {
  const state = tf.engine().state;
  // At depth 0 no tape records; whatever tape is left there is a failed one nobody will free.
  const mark = state.gradientDepth > 0 && state.activeTape ? state.activeTape.length : 0;
  try {
    return body();
  } catch (error) {
    for (const node of state.activeTape?.splice(mark) ?? []) tf.dispose(node.saved ?? []);
    throw error;
  }
}


/**
 * The context a plugin's `loss` receives: with the base pass for a plugin that declares `readsBase`,
 * else with a `base` that throws a ConfigError naming the plugin (the fused step has no base pass to
 * give, and the plain step refuses too, so that the missing declaration shows on any model).
 */
function lossContextFor(plugin: RegularizerPlugin, shared: Omit<LossContext, 'base'>, base: LossContext['base'] | undefined): LossContext {
  if (plugin.readsBase === true) {
    // The composition sends a stack with a plugin that reads the base pass down the plain path only.
    if (base === undefined) throw new Error(`internal: '${plugin.name}' declares readsBase but the step has no base pass`);
    return { ...shared, base };
  }
  return Object.defineProperty({ ...shared }, 'base', {
    enumerable: true,
    get(): never {
      throw new ConfigError(
        `${plugin.name}.readsBase`,
        `loss() read context.base, which a plugin must declare: add \`readsBase: true\` to '${plugin.name}' (a plugin that declares it is never fused with the base pass)`,
      );
    },
  }) as LossContext;
}

function tensorsIn(container: unknown, found: tf.Tensor[] = []): tf.Tensor[] {
  if (container instanceof tf.Tensor) found.push(container);
  else if (Array.isArray(container)) for (const item of container) tensorsIn(item, found);
  else if (container !== null && typeof container === 'object') for (const item of Object.values(container)) tensorsIn(item, found);
  return found;
}
