import type { Random } from '@regstack/regularizer';

/**
 * Weight initialisers. Values are drawn in JavaScript from the run's seeded {@link Random} rather
 * than with `tf.randomUniform`, so two models built from the same seed are identical on every
 * backend. One 32-bit draw per uniform is ample for float32 weights and halves the cost of
 * initialising a 36M-parameter Wide ResNet.
 */

const TWO_POW_32 = 4294967296;

/** A uniform draw in the open interval (0, 1). */
function openUniform(random: Random): number {
  return (random.uint32() + 0.5) / TWO_POW_32;
}

/** `count` draws from U(-bound, bound). */
export function uniformValues(random: Random, count: number, bound: number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = (2 * openUniform(random) - 1) * bound;
  return values;
}

/** `count` draws from N(0, standardDeviation²), two per Box–Muller transform. */
export function normalValues(random: Random, count: number, standardDeviation: number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const radius = standardDeviation * Math.sqrt(-2 * Math.log(openUniform(random)));
    const angle = 2 * Math.PI * openUniform(random);
    values[i] = radius * Math.cos(angle);
    if (i + 1 < count) values[i + 1] = radius * Math.sin(angle);
  }
  return values;
}

/** `count` copies of `value`. */
export function constantValues(count: number, value: number): Float32Array {
  return new Float32Array(count).fill(value);
}
