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
  Stage,
  StepContext,
  StepGradients,
  StepInput,
} from './contract.js';
import { ConfigError, DataError, assertKnownOptions, assertNumber } from './errors.js';
import { applyGradients } from './gradients.js';
import { oneHotTargets, softCrossEntropy } from './losses.js';
import { Random } from './random.js';
import { resolveSchedule, validateSchedulable, type Schedule } from './schedule.js';
import { assertClassifier, assertOutsideTape, checkBackendOnce } from './step-checks.js';
import { checkSpecificationVersion } from './specification.js';

/** The order in which a stack runs its stages. */
export const STAGE_ORDER: readonly Stage[] = ['batch-transform', 'target-transform', 'loss-term', 'generated-loss'];

const REQUIRED_HOOK: Record<Stage, keyof RegularizerPlugin> = {
  'batch-transform': 'transformBatch',
  'target-transform': 'transformTargets',
  'loss-term': 'loss',
  'generated-loss': 'loss',
};

/** A validated, ordered stack of plugins. */
export interface RegularizerStack {
  /** The plugins in the order they run. */
  readonly plugins: readonly RegularizerPlugin[];
  /**
   * Prepares one step OUTSIDE the weight tape and returns its loss closure. Calling it inside
   * `optimizer.minimize` or `tf.variableGrads` (where the constants it computes would be taped)
   * throws a ConfigError: call `prepare` first, then `optimizer.minimize(step.loss, ...)`.
   * When it throws, it has freed every tensor it made.
   */
  prepare(input: StepInput): PreparedStep;
  /**
   * One optimizer update: the step's gradients as {@link RegularizerStack.gradients} computes them
   * (fused where that is exact), applied with `optimizer.applyGradients`, everything disposed.
   * Returns the step's named terms: `base`, one per plugin, and `total`. No clipping or weight decay:
   * use `gradients` for those.
   */
  minimize(optimizer: tf.Optimizer, input: StepInput): Record<string, number>;
  /**
   * One step's total loss and weight gradients, for a loop that clips and decays them itself (the
   * trainer does). Equal to `prepare(input).gradients()`, but one pass cheaper where that is exact
   * (plain cross-entropy on the clean batch, `stochastic: false`, every plugin with a loss having a
   * `prepare`): the base pass then also serves the clean input gradient, and `fused` is true. The
   * conditions and why the result is the same: docs/architecture.md, "Cost of RCAD: the fused step".
   * When it throws, it has freed every tensor it made.
   */
  gradients(input: StepInput): StepGradients;
  /** The run order as text, e.g. `mixup → label-smoothing → base → rcad`. */
  describe(): string;
}

/** Options of {@link composeRegularizers}. */
export interface StackOptions {
  /**
   * Seed of the stack's own generator, which serves every step called without `random`
   * (one generator for the whole run, advanced by each step). Default 0.
   */
  seed?: number;
}

/**
 * Validates and orders a stack. Plugins run by stage ({@link STAGE_ORDER}); within a stage, in the
 * order given. Rejected with a ConfigError: duplicate names, two plugins of one exclusive group
 * (two label smoothers, two batch mixers), a plugin lacking the hook its stage needs, and
 * generated-loss plugins whose declared mix weights (`RegularizerPlugin.mixWeight`) can add up to
 * more than 1.
 *
 * On its first step the stack looks at the TF.js backend: on wasm without `@regstack/backend`'s
 * kernels a model whose training cannot work there (convolutions: no filter-gradient kernel; max
 * pooling: the shipped gradient drops values) gets a ConfigError naming `useBackend`; where it is
 * only slow (TF.js's own cpu or wasm kernels), one console warning per backend says what to call.
 */
export function composeRegularizers(plugins: readonly RegularizerPlugin[] = [], options: StackOptions = {}): RegularizerStack {
  if (!Array.isArray(plugins)) throw new ConfigError('stack', 'expected an array of regularizer plugins');
  assertKnownOptions('composeRegularizers', options, ['seed']);
  const seed = options.seed === undefined ? 0 : assertNumber('composeRegularizers.seed', options.seed, { integer: true });
  const random = new Random(seed);
  let backendChecked = false;
  /** The input with the stack's generator where none was given; checks the model, the tape and (once) the backend. */
  const resolve = (input: StepInput, where: string): StepInput & { random: Random } => {
    assertOutsideTape(where);
    assertClassifier(input?.model);
    if (!backendChecked) {
      checkBackendOnce(input.model, input.batch);
      backendChecked = true;
    }
    return input.random === undefined ? { ...input, random } : (input as StepInput & { random: Random });
  };
  const names = new Set<string>();
  const groups = new Map<string, string>();
  plugins.forEach((plugin, index) => {
    const field = `stack[${index}]`;
    if (plugin === null || typeof plugin !== 'object') throw new ConfigError(field, 'expected a regularizer plugin object');
    if (typeof plugin.name !== 'string' || plugin.name === '') throw new ConfigError(`${field}.name`, 'expected a non-empty string');
    if (plugin.name === 'base' || plugin.name === 'total') throw new ConfigError(`${field}.name`, `'${plugin.name}' is reserved for the step's own terms`);
    checkSpecificationVersion(plugin, field);
    if (!STAGE_ORDER.includes(plugin.stage)) {
      throw new ConfigError(`${field}.stage`, `unknown stage ${String(plugin.stage)}; known: ${STAGE_ORDER.join(', ')}`);
    }
    const hook = REQUIRED_HOOK[plugin.stage as Stage];
    if (typeof (plugin as unknown as Record<string, unknown>)[hook] !== 'function') throw new ConfigError(`${field}.${hook}`, `a '${plugin.stage}' plugin must implement ${hook}()`);
    if (plugin.exclusiveGroup !== undefined) {
      const other = groups.get(plugin.exclusiveGroup);
      if (other !== undefined) {
        throw new ConfigError(
          'stack',
          `'${other}' and '${plugin.name}' cannot be stacked: both are '${plugin.exclusiveGroup}' plugins` +
            (plugin.exclusiveGroup === 'batch-mixing' ? ' (use one mixing plugin with a switch probability, e.g. mixup with cutmix)' : ''),
        );
      }
      groups.set(plugin.exclusiveGroup, plugin.name);
    }
    // After the group check, so two label smoothers are told why they cannot be stacked.
    if (names.has(plugin.name)) throw new ConfigError('stack', `two plugins are named '${plugin.name}'; names must be unique`);
    names.add(plugin.name);
  });
  const ordered = STAGE_ORDER.flatMap((stage) => plugins.filter((plugin) => plugin.stage === stage));
  checkMixWeights(ordered);
  return {
    plugins: ordered,
    prepare: (input) => prepareStep(ordered, resolve(input, 'stack.prepare')),
    gradients: (input) => stepGradients(ordered, resolve(input, 'stack.gradients')),
    minimize: (optimizer, input) => minimizeStep(ordered, optimizer, resolve(input, 'stack.minimize')),
    describe: () => {
      const before = ordered.filter((p) => p.stage === 'batch-transform' || p.stage === 'target-transform').map((p) => p.name);
      const after = ordered.filter((p) => p.stage === 'loss-term' || p.stage === 'generated-loss').map((p) => p.name);
      return [...before, 'base', ...after].join(' → ');
    },
  };
}

/**
 * Rejects generated-loss plugins whose declared mix weights add up to more than 1 at some point of
 * training, naming them, so that a stack that cannot run fails before its first step (a comparison
 * would otherwise train other stacks for hours first). Schedules are evaluated where their values
 * change, which finds the largest total exactly for numbers, step and linear schedules on one clock;
 * what it cannot see (functions, cosine ramps crossing, two clocks) the step still checks.
 */
function checkMixWeights(plugins: readonly RegularizerPlugin[]): void {
  const declared = plugins
    .filter((plugin) => plugin.stage === 'generated-loss' && plugin.mixWeight !== undefined)
    .map((plugin) => ({ name: plugin.name, weight: validateSchedulable(`${plugin.name}.mixWeight`, plugin.mixWeight, { min: 0, max: 1 }) }));
  const known = declared.filter((entry): entry is { name: string; weight: number | Schedule } => typeof entry.weight !== 'function');
  if (known.length < 2) return; // one weight alone is at most 1 (checked above)
  const units = new Set(known.flatMap(({ weight }) => (typeof weight === 'object' && weight.type !== 'constant' ? [weight.unit ?? 'epoch'] : [])));
  // On one clock, each weight is constant or monotone between the points where some schedule changes.
  const points = units.size <= 1 ? changePoints(known.map(({ weight }) => weight)) : [];
  const clock = units.has('step') ? 'step' : 'epoch';
  let worst = { total: -Infinity, at: 0, values: [] as number[] };
  for (const at of points) {
    const values = known.map(({ weight }) => resolveSchedule(weight, { step: at, epoch: at }));
    const total = values.reduce((sum, value) => sum + value, 0);
    if (total > worst.total) worst = { total, at, values };
  }
  if (units.size > 1) {
    // Two clocks: only the smallest value of each schedule is sure to coincide with the others'.
    const values = known.map(({ weight }) => smallestValue(weight));
    worst = { total: values.reduce((sum, value) => sum + value, 0), at: NaN, values };
  }
  if (worst.total > 1 + 1e-9) {
    const parts = known.map(({ name }, index) => `${name} ${round(worst.values[index]!)}`).join(' + ');
    const when = units.size === 1 ? ` at ${clock} ${round(worst.at)}` : '';
    throw new ConfigError('stack', `the generated-loss plugins' mix weights add up to ${round(worst.total)} > 1${when} (${parts}); lower them so that they sum to at most 1`);
  }
}

const round = (value: number) => Number(value.toPrecision(6));

/** Every clock value where one of `weights` changes course, with a point inside and after each stretch. */
function changePoints(weights: ReadonlyArray<number | Schedule>): number[] {
  const edges = new Set<number>([0]);
  for (const weight of weights) {
    if (typeof weight !== 'object') continue;
    if (weight.type === 'step') weight.boundaries.forEach((boundary) => edges.add(boundary));
    else if (weight.type !== 'constant') [weight.start, weight.end].forEach((edge) => edges.add(edge));
  }
  const sorted = [...edges].sort((a, b) => a - b);
  return sorted.flatMap((edge, index) => [edge, index + 1 < sorted.length ? (edge + sorted[index + 1]!) / 2 : edge + 1]);
}

function smallestValue(weight: number | Schedule): number {
  if (typeof weight === 'number') return weight;
  if (weight.type === 'constant') return weight.value;
  if (weight.type === 'step') return Math.min(...weight.values);
  return Math.min(weight.from, weight.to);
}

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

/** What the fused path hands to {@link prepareStep}: input gradients its base pass already made. */
interface PrepareOptions {
  seededGradients?: Map<string, InputGradient>;
}

/** A prepared step, plus what the fused path needs: the plugins' part of the loss without the base pass. */
interface InternalStep extends PreparedStep {
  /** Σ plugin terms and w·L_generated, inside a tape; `context.base` throws {@link BaseNotAvailable}. */
  pluginLoss(): { value: tf.Scalar; mixTotal: number };
}

/** Thrown when a plugin reads `context.base` on the fused path, which then falls back. */
class BaseNotAvailable extends Error {}

function prepareStep(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, options: PrepareOptions = {}): InternalStep {
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
function disposeOwned(owned: unknown[], clean: Batch | undefined): void {
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
  const epoch = input.epoch ?? 0;
  const numClasses = model.numClasses;
  const baseLoss = input.baseLoss ?? 'single';
  if (baseLoss !== 'single' && baseLoss !== 'two-view') throw new ConfigError('baseLoss', `expected single or two-view, got ${String(baseLoss)}`);
  if (baseLoss === 'two-view' && !input.augment) throw new ConfigError('baseLoss', "'two-view' needs an augment function");
  if (input.validate !== false) validateBatch(clean, numClasses);

  const context: StepContext = {
    model,
    random,
    step,
    epoch,
    numClasses,
    value: (hyperParameter) => resolveSchedule(hyperParameter, { step, epoch }),
  };

  // Batch and target transforms: outside the tape, in plugin order.
  const batch: SoftBatch = own(tf.tidy(() => {
    let inputs = input.augment && baseLoss === 'single' ? input.augment(clean.inputs, random) : clean.inputs;
    let soft: SoftBatch = { inputs, targets: oneHotTargets(clean.labels, numClasses) };
    for (const plugin of plugins) {
      if (plugin.stage === 'batch-transform') soft = plugin.transformBatch!(soft, context);
      else if (plugin.stage === 'target-transform') soft = { inputs: soft.inputs, targets: plugin.transformTargets!(soft.targets, context) };
    }
    inputs = soft.inputs === clean.inputs ? tf.clone(soft.inputs) : soft.inputs; // the step owns what it disposes
    return { inputs, targets: soft.targets };
  }));
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

  /** Runs every plugin's loss; returns the weighted parts and records the named terms. */
  const pluginParts = (lossContext: LossContext) => {
    const terms: Record<string, tf.Scalar> = {};
    const weights: Record<string, number> = {};
    const parts: tf.Scalar[] = [];
    let mixTotal = 0;
    plugins.forEach((plugin, index) => {
      if (!plugin.loss) return;
      const term = plugin.loss(lossContext, states[index] as never);
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
    const lossContext: LossContext = {
      ...context,
      clean,
      batch,
      base: { logits: output.logits, ...(output.features ? { features: output.features } : {}), loss: base },
      forward,
    };
    const { terms, weights, parts, mixTotal } = pluginParts(lossContext);
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
    const lossContext = {
      ...context,
      clean,
      batch,
      get base(): never {
        throw new BaseNotAvailable();
      },
      forward,
    } as LossContext;
    const { terms, weights, parts, mixTotal } = pluginParts(lossContext);
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

function plainGradients(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }): StepGradients {
  const step = prepareStep(plugins, input);
  try {
    const { value, grads } = step.gradients();
    return { value, grads, terms: step.terms(), fused: false };
  } finally {
    step.dispose();
  }
}

/** Whether the base pass can also serve the clean input gradient (see `RegularizerStack.gradients`). */
function canFuse(plugins: readonly RegularizerPlugin[], input: StepInput): boolean {
  return (
    input?.model?.stochastic === false &&
    (input.baseLoss ?? 'single') === 'single' &&
    input.augment === undefined &&
    plugins.some((plugin) => plugin.loss !== undefined) &&
    plugins.every((plugin) => (plugin.stage === 'loss-term' || plugin.stage === 'generated-loss') && (plugin.loss === undefined || plugin.prepare !== undefined))
  );
}

function stepGradients(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }): StepGradients {
  if (!canFuse(plugins, input)) return plainGradients(plugins, input);
  // What the fused step makes besides its result, freed whether it returns or throws (disposing a
  // tensor twice is a no-op in TF.js).
  const scratch: FusedScratch = { tensors: [] };
  try {
    return releasingTape(() => fusedGradients(plugins, input, scratch));
  } finally {
    scratch.step?.dispose();
    tf.dispose(scratch.tensors);
  }
}

/** The fused step's intermediate tensors and prepared step, for {@link stepGradients} to free. */
interface FusedScratch {
  tensors: tf.Tensor[];
  step?: InternalStep;
}

function fusedGradients(plugins: readonly RegularizerPlugin[], input: StepInput & { random: Random }, scratch: FusedScratch): StepGradients {
  const { model, batch: clean, random } = input;
  if (input.validate !== false) validateBatch(clean, model.numClasses);
  const variables = model.trainableVariables as tf.Variable[];
  const runningStatistics = model.nonTrainableVariables.map((variable) => tf.keep(tf.clone(variable)));
  scratch.tensors.push(...runningStatistics);
  const size = clean.inputs.shape[0]!;

  // Tape 1: the base loss w.r.t. the inputs and the weights together, in train mode.
  let logits: tf.Tensor2D | undefined;
  const first = tf.tidy(() => {
    const targets = oneHotTargets(clean.labels, model.numClasses);
    const { value, grads } = tf.valueAndGrads((inputs: tf.Tensor) => {
      const output = model.apply(inputs, { mode: 'train', random });
      logits = tf.keep(output.logits);
      scratch.tensors.push(logits);
      return softCrossEntropy(output.logits, targets);
    })([clean.inputs, ...variables]);
    return { value, grads };
  });
  scratch.tensors.push(first.value, ...first.grads);
  const [inputGradient, ...baseGrads] = first.grads as [tf.Tensor, ...tf.Tensor[]];
  // The same gradient serves both reductions (the sum's is the mean's × B) and both batch-statistics modes.
  const seeded = new Map<string, InputGradient>();
  const mean: InputGradient = { gradient: inputGradient, loss: first.value, logits: logits! };
  const sum: InputGradient = { gradient: tf.mul(inputGradient, size), loss: tf.mul(first.value, size) as tf.Scalar, logits: logits! };
  scratch.tensors.push(sum.gradient, sum.loss);
  // Entries share tensors; the step's dispose() frees each once (disposing twice is a no-op in TF.js).
  for (const mode of ['train', 'frozen-stats'] as const) {
    seeded.set(`clean|mean|${mode}`, mean);
    seeded.set(`clean|sum|${mode}`, sum);
  }
  // The plain path prepares before the base pass updates the running statistics: prepare against the
  // statistics as they were (an eval-mode attack reads them), then put the updated ones back.
  const statistics = model.nonTrainableVariables;
  const updated = statistics.map((variable) => tf.clone(variable));
  statistics.forEach((variable, i) => variable.assign(runningStatistics[i]!));
  let step: InternalStep;
  try {
    step = scratch.step = prepareStep(plugins, { ...input, validate: false }, { seededGradients: seeded });
  } finally {
    statistics.forEach((variable, i) => variable.assign(updated[i]!));
    tf.dispose(updated);
  }
  let second: { value: tf.Scalar; grads: tf.NamedTensorMap } | undefined;
  let mixTotal = 0;
  try {
    // Tape 2: the plugins' terms on the constants their prepare made.
    second = tf.variableGrads(() => {
      const part = step.pluginLoss();
      mixTotal = part.mixTotal;
      return part.value;
    }, variables);
  } catch (error) {
    if (!(error instanceof BaseNotAvailable)) throw error;
  }
  if (!second) {
    // A plugin needs the base pass inside its own tape: undo the base pass's statistics update, start over.
    step.dispose();
    statistics.forEach((variable, i) => variable.assign(runningStatistics[i]!));
    return plainGradients(plugins, { ...input, validate: false });
  }
  scratch.tensors.push(second.value, ...Object.values(second.grads));
  const baseWeight = 1 - mixTotal;
  const grads: tf.NamedTensorMap = {};
  variables.forEach((variable, i) => {
    const fromPlugins = second!.grads[variable.name];
    grads[variable.name] = tf.tidy(() => {
      const fromBase = tf.mul(baseGrads[i]!, baseWeight);
      return fromPlugins ? tf.add(fromBase, fromPlugins) : fromBase;
    });
  });
  const value = tf.tidy(() => tf.add(tf.mul(first.value, baseWeight), second!.value) as tf.Scalar);
  const { total: _withoutBase, ...pluginTerms } = step.terms();
  const terms = { base: first.value.dataSync()[0]!, ...pluginTerms, total: value.dataSync()[0]! };
  return { value, grads, terms, fused: true };
}

/**
 * Runs `body`; when it throws, frees what gradient tapes saved for a backward pass since it began.
 * TF.js keeps every taped op's inputs (`tf.keep`) until the backward pass frees them, and a forward
 * pass that throws never gets one: without this, each failed step inside `tf.grad`,
 * `tf.variableGrads` or `optimizer.minimize` would leak its saved tensors.
 */
function releasingTape<T>(body: () => T): T {
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

function minimizeStep(plugins: readonly RegularizerPlugin[], optimizer: tf.Optimizer, input: StepInput & { random: Random }): Record<string, number> {
  if (optimizer === null || typeof optimizer !== 'object' || typeof optimizer.applyGradients !== 'function') {
    throw new ConfigError('optimizer', 'expected a tf.Optimizer (e.g. tf.train.adam(1e-3))');
  }
  const { value, grads, terms } = stepGradients(plugins, input);
  try {
    applyGradients(optimizer, grads);
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
  return terms;
}

function tensorsIn(container: unknown, found: tf.Tensor[] = []): tf.Tensor[] {
  if (container instanceof tf.Tensor) found.push(container);
  else if (Array.isArray(container)) for (const item of container) tensorsIn(item, found);
  else if (container !== null && typeof container === 'object') for (const item of Object.values(container)) tensorsIn(item, found);
  return found;
}
