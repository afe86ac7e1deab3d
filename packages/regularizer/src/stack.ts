/**
 * Composition: `composeRegularizers` validates and orders a stack, decides once whether its plugins
 * allow the fused step, and hands each step to the plain step (`step.ts`) or the fused one
 * (`fused-step.ts`).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { PreparedStep, RegularizerPlugin, Stage, StepGradients, StepInput } from './contract.js';
import { ConfigError, assertKnownOptions, assertNumber } from './errors.js';
import { fusedGradients, fusesWith } from './fused-step.js';
import { applyGradients } from './gradients.js';
import { Random } from './random.js';
import { resolveSchedule, validateSchedulable, type Schedule } from './schedule.js';
import { checkSpecificationVersion } from './specification.js';
import { plainGradients, prepareStep, round } from './step.js';
import { tapeSupported } from './tape.js';
import { assertClassifier, assertOutsideTape, checkBackendOnce } from './step-checks.js';

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
   * trainer does). Equal to `prepare(input).gradients()`, but one pass cheaper where that is exact:
   * the fused step, which serves RCAD's or FGSM's clean input gradient from the base pass (`fused`
   * and `fusion` in the result say which path ran; when it applies: docs/architecture.md, "The fused step").
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
    if (plugin.readsBase !== undefined && typeof plugin.readsBase !== 'boolean') {
      throw new ConfigError(`${field}.readsBase`, `expected a boolean, got ${String(plugin.readsBase)}`);
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
  // Decided once, from the plugins' declarations; each step adds only what depends on its input.
  const fusable = fusionAllowed(ordered);
  // Transformed targets: the direction's loss is not the base loss, so it takes a second backward over
  // the base pass's tape, which needs the engine's tape as tfjs-core 4.x keeps it (checked once).
  const transformsTargets = ordered.some((plugin) => plugin.stage === 'target-transform');
  const gradients = (input: StepInput & { random: Random }): StepGradients =>
    fusable && fusesWith(input) && (!transformsTargets || tapeSupported()) ? fusedGradients(ordered, input) : plainGradients(ordered, input);
  return {
    plugins: ordered,
    prepare: (input): PreparedStep => prepareStep(ordered, resolve(input, 'stack.prepare')),
    gradients: (input) => gradients(resolve(input, 'stack.gradients')),
    minimize: (optimizer, input) => {
      const resolved = resolve(input, 'stack.minimize');
      return minimizeStep(optimizer, () => gradients(resolved));
    },
    describe: () => {
      const before = ordered.filter((p) => p.stage === 'batch-transform' || p.stage === 'target-transform').map((p) => p.name);
      const after = ordered.filter((p) => p.stage === 'loss-term' || p.stage === 'generated-loss').map((p) => p.name);
      return [...before, 'base', ...after].join(' → ');
    },
  };
}

/**
 * Whether a stack's plugins allow the fused step (docs/architecture.md, "The fused step"): no batch
 * transform (the base pass must run on the clean batch, where the reference's direction is taken;
 * a target transform only changes the base loss's targets, and the direction then takes its own
 * backward over the base pass's forward), at least one plugin prepares (the only place an input
 * gradient is asked for), and none declares `readsBase` (the fused step's plugin terms run without
 * the base pass).
 */
function fusionAllowed(plugins: readonly RegularizerPlugin[]): boolean {
  return (
    plugins.every((plugin) => plugin.stage !== 'batch-transform') &&
    plugins.some((plugin) => plugin.prepare !== undefined) &&
    !plugins.some((plugin) => plugin.readsBase === true)
  );
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

function minimizeStep(optimizer: tf.Optimizer, stepGradients: () => StepGradients): Record<string, number> {
  if (optimizer === null || typeof optimizer !== 'object' || typeof optimizer.applyGradients !== 'function') {
    throw new ConfigError('optimizer', 'expected a tf.Optimizer (e.g. tf.train.adam(1e-3))');
  }
  const { value, grads, terms } = stepGradients();
  try {
    applyGradients(optimizer, grads);
  } finally {
    tf.dispose([value, ...Object.values(grads)]);
  }
  return terms;
}
