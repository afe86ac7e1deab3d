// The statistics behind tools/experiments/report-recipe.mjs, kept pure (numbers in, numbers out) so
// that they are unit-tested on their own: summaries over seeds, the Student t quantile, paired
// per-seed differences with a t and a bootstrap interval, and the dedupe of repeated result lines.

/**
 * Mean, sample standard deviation (n − 1), minimum and maximum of a list of numbers.
 * The standard deviation is NaN for fewer than two values: one seed says nothing about the spread.
 * @param {readonly number[]} values
 * @returns {{ count: number, mean: number, standardDeviation: number, minimum: number, maximum: number }}
 */
export function summarize(values) {
  if (values.length === 0) throw new RangeError('summarize: no values');
  for (const value of values) if (!Number.isFinite(value)) throw new RangeError(`summarize: ${value} is not a finite number`);
  const count = values.length;
  const mean = values.reduce((sum, value) => sum + value, 0) / count;
  const standardDeviation = count > 1 ? Math.sqrt(values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / (count - 1)) : Number.NaN;
  return { count, mean, standardDeviation, minimum: Math.min(...values), maximum: Math.max(...values) };
}

// Lanczos approximation of ln Γ(x) (g = 7, nine coefficients), accurate to ~1e-15 for x > 0;
// reflection for x < 0.5.
/** @type {readonly number[]} */
const lanczos = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059,
  12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];
/** @param {number} x @returns {number} */
function logGamma(x) {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - logGamma(1 - x);
  const shifted = x - 1;
  let sum = 0;
  lanczos.forEach((coefficient, index) => {
    sum += index === 0 ? coefficient : coefficient / (shifted + index);
  });
  const t = shifted + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (shifted + 0.5) * Math.log(t) - t + Math.log(sum);
}

/**
 * Continued fraction of the incomplete beta function (modified Lentz), converging for x < (a+1)/(a+b+2).
 * @param {number} a @param {number} b @param {number} x @returns {number}
 */
function betaContinuedFraction(a, b, x) {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let fraction = d;
  for (let m = 1; m <= 1000; m++) {
    const even = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    d = 1 + even * d;
    c = 1 + even / c;
    if (Math.abs(d) < tiny) d = tiny;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    fraction *= d * c;
    const odd = (-(a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + odd * d;
    c = 1 + odd / c;
    if (Math.abs(d) < tiny) d = tiny;
    if (Math.abs(c) < tiny) c = tiny;
    d = 1 / d;
    const step = d * c;
    fraction *= step;
    if (Math.abs(step - 1) < 1e-15) break;
  }
  return fraction;
}

/** The regularized incomplete beta function I_x(a, b). @param {number} x @param {number} a @param {number} b @returns {number} */
function regularizedIncompleteBeta(x, a, b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x));
  return x < (a + 1) / (a + b + 2) ? (front * betaContinuedFraction(a, b, x)) / a : 1 - (front * betaContinuedFraction(b, a, 1 - x)) / b;
}

/**
 * The cumulative distribution function of Student's t with `degreesOfFreedom` degrees of freedom.
 * @param {number} t
 * @param {number} degreesOfFreedom
 */
export function studentTCumulative(t, degreesOfFreedom) {
  const tail = 0.5 * regularizedIncompleteBeta(degreesOfFreedom / (degreesOfFreedom + t * t), degreesOfFreedom / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/**
 * The quantile (inverse cumulative distribution) of Student's t: the `probability` quantile with
 * `degreesOfFreedom` degrees of freedom, found by bisection on the distribution function (which is
 * monotone, so this cannot fail to converge), to ~1e-12.
 * @param {number} probability in (0, 1)
 * @param {number} degreesOfFreedom > 0
 * @returns {number}
 */
export function studentTQuantile(probability, degreesOfFreedom) {
  if (!(probability > 0 && probability < 1)) throw new RangeError(`studentTQuantile: probability must be in (0, 1), got ${probability}`);
  if (!(degreesOfFreedom > 0)) throw new RangeError(`studentTQuantile: degreesOfFreedom must be > 0, got ${degreesOfFreedom}`);
  if (probability === 0.5) return 0;
  if (probability < 0.5) return -studentTQuantile(1 - probability, degreesOfFreedom);
  let low = 0;
  let high = 1;
  while (studentTCumulative(high, degreesOfFreedom) < probability) {
    low = high;
    high *= 2;
  }
  for (let iteration = 0; iteration < 200 && high - low > 1e-12 * Math.max(1, high); iteration++) {
    const middle = (low + high) / 2;
    if (studentTCumulative(middle, degreesOfFreedom) < probability) low = middle;
    else high = middle;
  }
  return (low + high) / 2;
}

/**
 * The t confidence interval of a mean: mean ± t(1 − (1 − confidence)/2, n − 1) · sd / √n.
 * Needs at least two values (with one there is no spread to scale).
 * @param {readonly number[]} values
 * @param {number} [confidence] 0.95 unless given
 * @returns {{ mean: number, lower: number, upper: number, degreesOfFreedom: number, quantile: number }}
 */
export function tInterval(values, confidence = 0.95) {
  if (values.length < 2) throw new RangeError(`tInterval: needs at least 2 values, got ${values.length}`);
  const { count, mean, standardDeviation } = summarize(values);
  const degreesOfFreedom = count - 1;
  const quantile = studentTQuantile(1 - (1 - confidence) / 2, degreesOfFreedom);
  const halfWidth = (quantile * standardDeviation) / Math.sqrt(count);
  return { mean, lower: mean - halfWidth, upper: mean + halfWidth, degreesOfFreedom, quantile };
}

/**
 * A small seeded generator of uniform numbers in [0, 1) (the mulberry32 recipe: a 32-bit state
 * advanced by a Weyl step and mixed), so that a bootstrap interval is the same on every run.
 * @param {number} seed
 * @returns {() => number}
 */
export function seededUniform(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = state;
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Linear interpolation between order statistics (the usual "type 7" sample quantile).
 * @param {Float64Array} sorted @param {number} probability @returns {number}
 */
function sortedQuantile(sorted, probability) {
  const position = (sorted.length - 1) * probability;
  const below = Math.floor(position);
  const above = Math.min(below + 1, sorted.length - 1);
  const low = /** @type {number} */ (sorted[below]);
  return low + (/** @type {number} */ (sorted[above]) - low) * (position - below);
}

/**
 * The percentile bootstrap interval of a mean: `resamples` resamples of the values with replacement,
 * drawn from a generator seeded with `seed`, and the (1 − confidence)/2 and 1 − (1 − confidence)/2
 * quantiles of their means. With few values it is coarse: it never reaches beyond the values'
 * own range, so with two or three seeds it is narrower than the t interval, not more trustworthy.
 * @param {readonly number[]} values
 * @param {{ seed?: number, resamples?: number, confidence?: number }} [options]
 * @returns {{ mean: number, lower: number, upper: number, resamples: number, seed: number }}
 */
export function bootstrapInterval(values, { seed = 16, resamples = 10_000, confidence = 0.95 } = {}) {
  if (values.length < 2) throw new RangeError(`bootstrapInterval: needs at least 2 values, got ${values.length}`);
  const { mean } = summarize(values);
  const uniform = seededUniform(seed);
  const means = new Float64Array(resamples);
  for (let resample = 0; resample < resamples; resample++) {
    let sum = 0;
    for (let draw = 0; draw < values.length; draw++) sum += /** @type {number} */ (values[Math.floor(uniform() * values.length)]);
    means[resample] = sum / values.length;
  }
  means.sort();
  const tail = (1 - confidence) / 2;
  return { mean, lower: sortedQuantile(means, tail), upper: sortedQuantile(means, 1 - tail), resamples, seed };
}

/**
 * Per-seed differences treatment − baseline over the seeds both have, in seed order.
 * @param {ReadonlyMap<number, number>} treatment value per seed
 * @param {ReadonlyMap<number, number>} baseline value per seed
 * @returns {Array<{ seed: number, treatment: number, baseline: number, difference: number }>}
 */
export function pairedDifferences(treatment, baseline) {
  return [...treatment.keys()]
    .filter((seed) => baseline.has(seed))
    .sort((a, b) => a - b)
    .map((seed) => {
      const treated = /** @type {number} */ (treatment.get(seed));
      const base = /** @type {number} */ (baseline.get(seed));
      return { seed, treatment: treated, baseline: base, difference: treated - base };
    });
}

/**
 * One result per (training-set size, stack, seed): a resumed comparison may append a run twice. The
 * last line wins (it is the newest record of the same run).
 * @template {{ stack: string, seed: number, data: { trainSize: number } }} Run
 * @param {readonly Run[]} runs
 * @returns {{ runs: Run[], duplicates: number }}
 */
export function dedupeRuns(runs) {
  const byKey = new Map();
  for (const run of runs) {
    const key = JSON.stringify([run.data.trainSize, run.stack, run.seed]);
    byKey.delete(key); // re-inserted at the end: the newest line's position
    byKey.set(key, run);
  }
  return { runs: [...byKey.values()], duplicates: runs.length - byKey.size };
}
