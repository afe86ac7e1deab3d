import { ConfigError, Random, assertKnownOptions, assertNumber } from '@regstack/regularizer';
import type { BatchNormSettings } from './layers.js';

/** Options every model takes. */
export interface CommonModelOptions {
  /** Input shape [height, width, channels]. Default [32, 32, 3] (CIFAR); Fashion-MNIST is [28, 28, 1]. */
  inputShape?: readonly [number, number, number];
  /** Number of classes K ≥ 2. Default 10. */
  numClasses?: number;
  /**
   * Per-channel mean subtracted from the raw [0,1] inputs inside `apply` (one value, or one per
   * channel). Default 0. Normalising inside the model keeps perturbations in pixel space.
   */
  mean?: number | readonly number[];
  /** Per-channel standard deviation the inputs are divided by (one value, or one per channel). Default 1. */
  std?: number | readonly number[];
  /** Seed of the initial weights; two models with the same seed are identical. Default 0. */
  seed?: number;
  /** A generator to draw the initial weights from instead of `seed` (it is advanced). */
  random?: Random;
}

/** Options of the models with batch normalisation. */
export interface BatchNormModelOptions extends CommonModelOptions {
  /** Weight of a new batch in the running statistics, in PyTorch's convention. Default 0.1. */
  batchNormMomentum?: number;
  /** Added to the variance before the square root. Default 1e-5 (PyTorch's). */
  batchNormEpsilon?: number;
}

/** Keys of {@link CommonModelOptions}. */
export const commonOptionKeys = ['inputShape', 'numClasses', 'mean', 'std', 'seed', 'random'] as const;
/** Keys of {@link BatchNormModelOptions}. */
export const batchNormOptionKeys = [...commonOptionKeys, 'batchNormMomentum', 'batchNormEpsilon'] as const;

/** Validated common options. */
export interface ResolvedCommonOptions {
  inputShape: [number, number, number];
  numClasses: number;
  mean: number[];
  std: number[];
  random: Random;
}

/** Validates the common options of model `owner` (e.g. `resnet18`), naming the field at fault. */
export function resolveCommonOptions(owner: string, options: CommonModelOptions, allowed: readonly string[]): ResolvedCommonOptions {
  assertKnownOptions(owner, options, allowed);
  const inputShape = options.inputShape ?? [32, 32, 3];
  if (!Array.isArray(inputShape) || inputShape.length !== 3) {
    throw new ConfigError(`${owner}.inputShape`, `expected [height, width, channels], got ${JSON.stringify(inputShape)}`);
  }
  inputShape.forEach((size, index) => assertNumber(`${owner}.inputShape[${index}]`, size, { min: 1, integer: true }));
  const channels = inputShape[2];
  const numClasses = assertNumber(`${owner}.numClasses`, options.numClasses ?? 10, { min: 2, integer: true });
  const mean = perChannel(`${owner}.mean`, options.mean ?? 0, channels, false);
  const std = perChannel(`${owner}.std`, options.std ?? 1, channels, true);
  if (options.seed !== undefined && options.random !== undefined) {
    throw new ConfigError(`${owner}.seed`, 'give either seed or random, not both');
  }
  let random: Random;
  if (options.random !== undefined) {
    if (!(options.random instanceof Random)) throw new ConfigError(`${owner}.random`, 'expected a Random from @regstack/regularizer');
    random = options.random;
  } else {
    random = new Random(assertNumber(`${owner}.seed`, options.seed ?? 0, { integer: true }));
  }
  return { inputShape: [inputShape[0], inputShape[1], channels], numClasses, mean, std, random };
}

/** Validates the batch-norm options of model `owner`. */
export function resolveBatchNormSettings(owner: string, options: BatchNormModelOptions): BatchNormSettings {
  return {
    momentum: assertNumber(`${owner}.batchNormMomentum`, options.batchNormMomentum ?? 0.1, { min: 0, max: 1 }),
    epsilon: assertNumber(`${owner}.batchNormEpsilon`, options.batchNormEpsilon ?? 1e-5, { min: 0, minExclusive: true }),
  };
}

function perChannel(field: string, value: number | readonly number[], channels: number, positive: boolean): number[] {
  const values = typeof value === 'number' ? new Array<number>(channels).fill(value) : value;
  if (!Array.isArray(values) || (values.length !== channels && values.length !== 1)) {
    throw new ConfigError(field, `expected a number or ${channels} per-channel numbers, got ${JSON.stringify(value)}`);
  }
  const expanded = values.length === 1 ? new Array<number>(channels).fill(values[0] as number) : [...(values as number[])];
  expanded.forEach((entry, index) => assertNumber(`${field}[${index}]`, entry, positive ? { min: 0, minExclusive: true } : {}));
  return expanded;
}
