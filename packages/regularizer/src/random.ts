import { xoroshiro128plus } from 'pure-rand/generator/XoroShiro';
import type { RandomGenerator } from 'pure-rand/types/RandomGenerator';
import { ConfigError } from './errors.js';

/** The serialisable state of a {@link Random}, for checkpoints. */
export interface RandomState {
  generator: readonly number[];
  /** A cached second normal deviate (Box–Muller makes two). */
  spareNormal: number | null;
}

const TWO_POW_32 = 4294967296;

/**
 * The one seeded generator of a run (xoroshiro128+ from `pure-rand`). Every random choice in a
 * training step (shuffles, crops, flips, permutations, Beta draws, random starts, dropout seeds)
 * is drawn from it, so a run is reproducible from its seed and resumable from {@link getState}.
 */
export class Random {
  private generator: RandomGenerator;
  private spareNormal: number | null = null;

  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new ConfigError('seed', `expected an integer, got ${seed}`);
    // pure-rand seeds xoroshiro128+ with the seed almost as it is, so nearby small seeds start with
    // nearly equal outputs (the first uniform() of seeds 0–5 was 1.0000). SplitMix32 scrambles the
    // seed into the 128-bit state first, as the xoroshiro authors recommend.
    let mix = seed | 0;
    const next = () => {
      mix = (mix + 0x9e3779b9) | 0;
      let z = mix;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.generator = xoroshiro128plus.fromState([next(), next(), next(), next()]);
  }

  /** Restores a generator from {@link getState}. */
  static fromState(state: RandomState): Random {
    const random = new Random(0);
    random.generator = xoroshiro128plus.fromState(state.generator);
    random.spareNormal = state.spareNormal;
    return random;
  }

  /** The state to store in a checkpoint. */
  getState(): RandomState {
    return { generator: [...this.generator.getState()], spareNormal: this.spareNormal };
  }

  /** A uniform 32-bit unsigned integer. */
  uint32(): number {
    return this.generator.unsafeNext() >>> 0;
  }

  /** A uniform draw in [0, 1), with 53 random bits. */
  uniform(): number {
    const high = this.uint32() >>> 5; // 27 bits
    const low = this.uint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }

  /** A uniform integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n <= 0) throw new ConfigError('n', `expected a positive integer, got ${n}`);
    // Rejection sampling keeps the draw exactly uniform.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const value = this.uint32();
      if (value < limit) return value % n;
    }
  }

  /** A standard normal deviate (Box–Muller). */
  normal(): number {
    if (this.spareNormal !== null) {
      const value = this.spareNormal;
      this.spareNormal = null;
      return value;
    }
    let u = 0;
    while (u === 0) u = this.uniform();
    const v = this.uniform();
    const radius = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = radius * Math.sin(2 * Math.PI * v);
    return radius * Math.cos(2 * Math.PI * v);
  }

  /** A Gamma(shape, 1) deviate (Marsaglia & Tsang 2000; boosted for shape < 1). */
  gamma(shape: number): number {
    if (!(shape > 0)) throw new ConfigError('shape', `must be > 0, got ${shape}`);
    if (shape < 1) return this.gamma(shape + 1) * Math.pow(this.uniformOpen(), 1 / shape);
    const d = shape - 1 / 3;
    const c = 1 / Math.sqrt(9 * d);
    for (;;) {
      let x: number;
      let v: number;
      do {
        x = this.normal();
        v = 1 + c * x;
      } while (v <= 0);
      v = v * v * v;
      const u = this.uniformOpen();
      if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
    }
  }

  /** A Beta(a, b) deviate. */
  beta(a: number, b: number): number {
    const x = this.gamma(a);
    const y = this.gamma(b);
    return x / (x + y);
  }

  /** A uniformly random permutation of 0..n-1 (Fisher–Yates). */
  permutation(n: number): Int32Array {
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const swap = order[i]!;
      order[i] = order[j]!;
      order[j] = swap;
    }
    return order;
  }

  /** A seed for a TF.js random op (`tf.randomUniform(…, seed)`, `tf.dropout(…, seed)`). */
  seed(): number {
    return this.int(2147483647);
  }

  /** An independent generator derived from this one (for a worker or a sub-task). */
  fork(): Random {
    return new Random(this.uint32() | 0);
  }

  private uniformOpen(): number {
    let u = 0;
    while (u === 0) u = this.uniform();
    return u;
  }
}

/**
 * A seeded hold-out of `size` examples: a random share `fraction` of the positions (rounded, and at
 * least one when `fraction` > 0) for validation, the rest for training, each in ascending order, so
 * the split depends only on the generator, not on how the examples were ordered. The one rule
 * behind `Dataset.split` (@regstack/datasets) and the trainer's `validationFraction`.
 */
export function holdOutIndices(size: number, fraction: number, random: Random): { train: Int32Array; validation: Int32Array } {
  const held = fraction > 0 ? Math.max(1, Math.round(fraction * size)) : 0;
  const order = random.permutation(size);
  return { train: order.slice(held).sort(), validation: order.slice(0, held).sort() };
}
