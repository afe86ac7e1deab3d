import type { Random } from '@regstack/regularizer';

/**
 * Weight initialisers. Values are drawn in JavaScript from the run's seeded {@link Random} rather
 * than with `tf.randomUniform`, so two models built from the same seed are identical on every
 * backend (TF.js's seeded kernels differ between backends).
 */

/** `count` draws from U(-bound, bound). */
export function uniformValues(random: Random, count: number, bound: number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = (2 * random.uniform() - 1) * bound;
  return values;
}

/** `count` draws from N(0, standardDeviation²). */
export function normalValues(random: Random, count: number, standardDeviation: number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = random.normal() * standardDeviation;
  return values;
}

/** `count` copies of `value`. */
export function constantValues(count: number, value: number): Float32Array {
  return new Float32Array(count).fill(value);
}
