/**
 * The RCAD paper's theory claim in a toy (Setlur et al. 2022, Section 5: in simplified linear settings RCAD
 * unlearns spurious features that ERM relies on), measured with the library's own pieces: a linear
 * classifier of `@regstack/models`, the `train()` loop of `@regstack/trainer` and the `rcad()` plugin.
 *
 * Data: y uniform in {0, 1}, s = 2y − 1; x = [x_gen, x_spu] with x_gen = s·γ + N(0, σ_gen²) (the
 * generalising coordinate, with a margin) and x_spu ~ N(0, σ²·I_D) (D spurious noise coordinates,
 * independent of y). With n < D samples the noise alone separates the training set, so ERM can fit it.
 *
 * Run: `npm run build && npx tsx tools/toy/linear-study.ts [--quick]`. Results go to runs/toy/, the plots
 * to docs/ (full run) or runs/toy/ (quick run). See docs/toy-linear.md for the reading.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, Random, assertKnownOptions, assertNumber } from '@regstack/regularizer';
import { linearClassifier, type ClassifierModel } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { evaluate, tensorData, train, type DataSource } from '@regstack/trainer';
import type { TopLevelSpec } from 'vega-lite';

/** The data distribution of the toy. */
export interface ToyDistribution {
  /** Number D of spurious (pure noise) coordinates. */
  spuriousDimensions: number;
  /** Margin γ > 0 of the generalising coordinate: its mean is ±γ. */
  margin: number;
  /** Standard deviation σ_gen ≥ 0 of the noise on the generalising coordinate. */
  generalisingNoise: number;
  /** Standard deviation σ > 0 of each spurious coordinate. */
  spuriousNoise: number;
}

/** Examples of the toy: `inputs` row-major [count, 1 + D] (column 0 is x_gen), labels in {0, 1}. */
export interface ToySample {
  inputs: Float32Array;
  labels: Int32Array;
  count: number;
  width: number;
}

/** Draws `count` examples of `distribution` from `random` (advanced). */
export function sampleToyData(distribution: ToyDistribution, count: number, random: Random): ToySample {
  checkDistribution(distribution);
  assertNumber('count', count, { min: 1, integer: true });
  const width = distribution.spuriousDimensions + 1;
  const inputs = new Float32Array(count * width);
  const labels = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const label = random.uniform() < 0.5 ? 0 : 1;
    labels[i] = label;
    const row = i * width;
    inputs[row] = (2 * label - 1) * distribution.margin + distribution.generalisingNoise * random.normal();
    for (let j = 1; j < width; j++) inputs[row + j] = distribution.spuriousNoise * random.normal();
  }
  return { inputs, labels, count, width };
}

/**
 * The binary classifier a two-logit linear model computes: logit₁ − logit₀ = w·x + b. `weights[0]` is
 * the weight on the generalising coordinate, the rest on the spurious ones.
 */
export interface EffectiveClassifier {
  weights: Float64Array;
  bias: number;
}

/** Reads w = W[:,1] − W[:,0] and b = b₁ − b₀ off a two-class `linearClassifier`. */
export function effectiveClassifier(model: ClassifierModel): EffectiveClassifier {
  if (model.numClasses !== 2) throw new ConfigError('model.numClasses', `the toy is binary, got ${model.numClasses} classes`);
  const variables = model.namedVariables();
  const kernel = variables.get('linear.weight');
  const biasVariable = variables.get('linear.bias');
  if (!kernel || !biasVariable) throw new ConfigError('model', 'expected a linearClassifier (variables linear.weight and linear.bias)');
  const values = kernel.dataSync();
  const biases = biasVariable.dataSync();
  const rows = kernel.shape[0]!;
  const weights = new Float64Array(rows);
  for (let i = 0; i < rows; i++) weights[i] = values[2 * i + 1]! - values[2 * i]!;
  return { weights, bias: biases[1]! - biases[0]! };
}

/** Weight norms of a classifier: |w_gen|, ‖w_spu‖₂ and the spurious ratio ‖w_spu‖₂ / |w_gen|. */
export interface WeightSplit {
  generalising: number;
  spurious: number;
  /** ‖w_spu‖₂ / |w_gen|: 0 is the Bayes direction; Infinity when w_gen is 0. */
  ratio: number;
}

/** Splits `weights` (index 0 generalising, the rest spurious) into the norms the study reports. */
export function weightSplit(weights: ArrayLike<number>): WeightSplit {
  if (weights.length < 2) throw new DataError('weights', `expected 1 + D ≥ 2 weights, got ${weights.length}`);
  const generalising = Math.abs(weights[0]!);
  let squares = 0;
  for (let i = 1; i < weights.length; i++) squares += weights[i]! * weights[i]!;
  const spurious = Math.sqrt(squares);
  return { generalising, spurious, ratio: generalising === 0 ? Infinity : spurious / generalising };
}

/**
 * The exact test accuracy of the linear rule sign(w·x + b) on the toy's distribution. w·x is Gaussian
 * given y: mean s·w_gen·γ, variance w_gen²σ_gen² + σ²‖w_spu‖², so with S its standard deviation
 * accuracy = ½[Φ((w_gen·γ + b)/S) + Φ((w_gen·γ − b)/S)]. With b = 0 it is Φ(γ / √(σ_gen² + σ²·ratio²))
 * for w_gen > 0: the spurious ratio alone sets the accuracy.
 */
export function exactAccuracy(classifier: EffectiveClassifier, distribution: ToyDistribution): number {
  checkDistribution(distribution);
  if (classifier.weights.length !== distribution.spuriousDimensions + 1) {
    throw new DataError('classifier.weights', `has ${classifier.weights.length} weights, the distribution ${distribution.spuriousDimensions + 1} coordinates`);
  }
  const { spurious } = weightSplit(classifier.weights);
  const gen = classifier.weights[0]!;
  const deviation = Math.sqrt((gen * distribution.generalisingNoise) ** 2 + (distribution.spuriousNoise * spurious) ** 2);
  const mean = gen * distribution.margin;
  if (deviation === 0) return 0.5 * ((mean + classifier.bias > 0 ? 1 : 0) + (mean - classifier.bias > 0 ? 1 : 0));
  return 0.5 * (normalCdf((mean + classifier.bias) / deviation) + normalCdf((mean - classifier.bias) / deviation));
}

/**
 * The lowest spurious ratio of any w = Σᵢ cᵢ·sᵢ·xᵢ, a combination of the training examples. Gradient
 * training of a linear model from zero (ERM, RCAD, any loss of w·x) never leaves that span, so this is
 * a floor for every method here. With u_i = sᵢ·x_gen,i and G the Gram matrix of the sᵢ·x_spu,i, it is
 * min_c √(cᵀGc) / |cᵀu| = 1 / √(uᵀG⁻¹u) (Cauchy–Schwarz in the G inner product). Needs n ≤ D (G
 * invertible almost surely).
 */
export function spanRatioFloor(sample: ToySample): number {
  const { count: n, width, inputs, labels } = sample;
  if (n > width - 1) throw new DataError('sample', `the floor needs n ≤ D, got n = ${n}, D = ${width - 1}`);
  const signs = Array.from(labels, (label) => 2 * label - 1);
  const u = new Float64Array(n);
  const gram = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    u[i] = signs[i]! * inputs[i * width]!;
    for (let k = 0; k <= i; k++) {
      let dot = 0;
      for (let j = 1; j < width; j++) dot += inputs[i * width + j]! * inputs[k * width + j]!;
      gram[i * n + k] = gram[k * n + i] = signs[i]! * signs[k]! * dot;
    }
  }
  // Cholesky G = LLᵀ, then uᵀG⁻¹u = ‖L⁻¹u‖².
  const lower = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k <= i; k++) {
      let sum = gram[i * n + k]!;
      for (let j = 0; j < k; j++) sum -= lower[i * n + j]! * lower[k * n + j]!;
      if (i === k) {
        if (!(sum > 0)) throw new DataError('sample', 'the spurious Gram matrix is singular');
        lower[i * n + i] = Math.sqrt(sum);
      } else {
        lower[i * n + k] = sum / lower[k * n + k]!;
      }
    }
  }
  let quadratic = 0;
  const solved = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let sum = u[i]!;
    for (let j = 0; j < i; j++) sum -= lower[i * n + j]! * solved[j]!;
    solved[i] = sum / lower[i * n + i]!;
    quadratic += solved[i]! ** 2;
  }
  return 1 / Math.sqrt(quadratic);
}

/** One method of the study: ERM (λ = 0) or RCAD with (λ, α). */
export interface StudyMethod {
  /** Entropy weight λ; 0 is ERM (the plugin is not added at all). */
  lambda: number;
  /** RCAD step α (L2 norm of the move of each example); ignored for ERM. */
  alpha: number;
}

/** Options of {@link runLinearStudy}. */
export interface LinearStudyOptions {
  distribution?: Partial<ToyDistribution>;
  /** Training examples n. Default 64. */
  trainSize?: number;
  /** Fresh examples for the trainer's per-epoch validation (which only picks the weights `train` restores; the study reads the last epoch's). Default 50. */
  validationSize?: number;
  /** Fresh test examples. Default 10000. */
  testSize?: number;
  /** Full-batch epochs (each one optimizer step). Default 300. */
  epochs?: number;
  /** Constant learning rate of SGD (Nesterov momentum 0.9, the trainer's default). Default 0.1. */
  learningRate?: number;
  /** RCAD's λ values besides 0 (ERM). Default [0.1, 0.5, 1]. */
  lambdas?: readonly number[];
  /** RCAD's α values. Default [0.5, 2, 8]. */
  alphas?: readonly number[];
  /** Seeds; each draws its own data set, shared by every method. Default [0, 1, 2, 3, 4]. */
  seeds?: readonly number[];
  /** Record the weights every this many epochs (and at the last). Default 5. */
  recordEvery?: number;
  /** Called after each finished run. */
  onRun?: (run: StudyRun) => void;
}

/** The study's defaults: D = 256 noise coordinates, n = 64, σ = 0.7, γ = 1, σ_gen = 0.25. */
export const DEFAULT_DISTRIBUTION: ToyDistribution = { spuriousDimensions: 256, margin: 1, generalisingNoise: 0.25, spuriousNoise: 0.7 };

/** A seconds-long configuration for tests and smoke runs. */
export const QUICK_STUDY: LinearStudyOptions = {
  distribution: { spuriousDimensions: 64 },
  trainSize: 16,
  validationSize: 20,
  testSize: 2000,
  epochs: 40,
  lambdas: [1],
  alphas: [0.5],
  seeds: [0, 1],
  recordEvery: 10,
};

/** One point of a run's trajectory. */
export interface TrajectoryPoint {
  epoch: number;
  ratio: number;
  generalising: number;
  spurious: number;
  /** Mean base (cross-entropy) loss of the epoch's step. */
  trainLoss: number;
  /** {@link exactAccuracy} of the weights at this epoch. */
  exactAccuracy: number;
}

/** One (method, seed) training run; metrics are of the final weights (the last epoch). */
export interface StudyRun {
  method: StudyMethod;
  label: string;
  seed: number;
  trajectory: TrajectoryPoint[];
  final: TrajectoryPoint & {
    bias: number;
    /** {@link exactAccuracy} of the final weights with the bias set to 0: what the direction of w alone gives. */
    exactAccuracyWithoutBias: number;
    testAccuracy: number;
    testNll: number;
    trainAccuracy: number;
  };
  /** {@link spanRatioFloor} of this seed's training set. */
  spanFloor: number;
  seconds: number;
}

/** What {@link runLinearStudy} returns: its resolved settings and every run. */
export interface LinearStudyResult {
  settings: Required<Omit<LinearStudyOptions, 'distribution' | 'onRun'>> & { distribution: ToyDistribution };
  runs: StudyRun[];
  seconds: number;
}

const STUDY_OPTIONS = [
  'distribution', 'trainSize', 'validationSize', 'testSize', 'epochs', 'learningRate', 'lambdas', 'alphas', 'seeds', 'recordEvery', 'onRun',
] as const;

/** Names a method as in the tables: `ERM` or `RCAD λ=0.5 α=2`. */
export function methodLabel(method: StudyMethod): string {
  return method.lambda === 0 ? 'ERM' : `RCAD λ=${method.lambda} α=${method.alpha}`;
}

/**
 * Trains ERM and RCAD (every λ × α) on the toy for each seed and records the spurious ratio over
 * training, the final test accuracy and the span floor. Needs a TF.js backend with gradients set up
 * (e.g. `useBackend('cpu')` of `@regstack/backend`). The models start at zero weights, the setting of
 * the implicit-bias analyses of logistic regression: a random start would add spurious weight that no
 * method here can remove. No weight decay, no clipping, constant learning rate, full-batch steps.
 */
export async function runLinearStudy(options: LinearStudyOptions = {}): Promise<LinearStudyResult> {
  assertKnownOptions('runLinearStudy', options, STUDY_OPTIONS);
  const distribution: ToyDistribution = { ...DEFAULT_DISTRIBUTION, ...options.distribution };
  checkDistribution(distribution);
  const settings: LinearStudyResult['settings'] = {
    distribution,
    trainSize: assertNumber('trainSize', options.trainSize ?? 64, { min: 2, integer: true }),
    validationSize: assertNumber('validationSize', options.validationSize ?? 50, { min: 1, integer: true }),
    testSize: assertNumber('testSize', options.testSize ?? 10_000, { min: 1, integer: true }),
    epochs: assertNumber('epochs', options.epochs ?? 300, { min: 1, integer: true }),
    learningRate: assertNumber('learningRate', options.learningRate ?? 0.1, { min: 0, minExclusive: true }),
    lambdas: checkList('lambdas', options.lambdas ?? [0.1, 0.5, 1], { min: 0, minExclusive: true }),
    alphas: checkList('alphas', options.alphas ?? [0.5, 2, 8], { min: 0 }),
    seeds: checkList('seeds', options.seeds ?? [0, 1, 2, 3, 4], { integer: true }),
    recordEvery: assertNumber('recordEvery', options.recordEvery ?? 5, { min: 1, integer: true }),
  };
  if (settings.trainSize > distribution.spuriousDimensions) {
    throw new ConfigError('trainSize', `the toy is about n < D: got n = ${settings.trainSize}, D = ${distribution.spuriousDimensions}`);
  }
  const methods: StudyMethod[] = [
    { lambda: 0, alpha: 0 },
    ...settings.lambdas.flatMap((lambda) => settings.alphas.map((alpha) => ({ lambda, alpha }))),
  ];
  const started = performance.now();
  const runs: StudyRun[] = [];
  for (const seed of settings.seeds) {
    // One generator per seed, drawn in a fixed order: every method sees the same three data sets.
    const random = new Random(seed);
    const trainSample = sampleToyData(distribution, settings.trainSize, random);
    const validationSample = sampleToyData(distribution, settings.validationSize, random);
    const testSample = sampleToyData(distribution, settings.testSize, random);
    const spanFloor = spanRatioFloor(trainSample);
    const tensors = [trainSample, validationSample, testSample].map(toTensors);
    const [trainData, validationData, testData] = tensors.map(({ inputs, labels }) => tensorData(inputs, labels)) as [DataSource, DataSource, DataSource];
    try {
      for (const method of methods) {
        const run = await trainOne(method, seed, settings, distribution, trainData, validationData, testData);
        run.spanFloor = spanFloor;
        runs.push(run);
        options.onRun?.(run);
      }
    } finally {
      tf.dispose(tensors.flatMap(({ inputs, labels }) => [inputs, labels]));
    }
  }
  return { settings, runs, seconds: (performance.now() - started) / 1000 };
}

async function trainOne(
  method: StudyMethod,
  seed: number,
  settings: LinearStudyResult['settings'],
  distribution: ToyDistribution,
  trainData: DataSource,
  validationData: DataSource,
  testData: DataSource,
): Promise<StudyRun> {
  const started = performance.now();
  const model = linearClassifier({ inputShape: [1, 1, distribution.spuriousDimensions + 1], numClasses: 2, seed });
  try {
    for (const variable of model.trainableVariables) tf.tidy(() => variable.assign(tf.zerosLike(variable)));
    const trajectory: TrajectoryPoint[] = [];
    const pointAt = (epoch: number, trainLoss: number): TrajectoryPoint => {
      const classifier = effectiveClassifier(model);
      return { epoch, ...weightSplit(classifier.weights), trainLoss, exactAccuracy: exactAccuracy(classifier, distribution) };
    };
    trajectory.push(pointAt(0, Math.log(2)));
    let final: StudyRun['final'] | undefined;
    await train({
      model,
      train: trainData,
      validation: validationData,
      regularizers: method.lambda === 0 ? [] : [rcad({ lambda: method.lambda, alpha: method.alpha })],
      epochs: settings.epochs,
      batchSize: trainData.size,
      learningRate: settings.learningRate,
      weightDecay: 0,
      clipNorm: null,
      seed,
      onEpochEnd: (record) => {
        const last = record.epoch === settings.epochs;
        if (record.epoch % settings.recordEvery !== 0 && !last) return;
        const point = pointAt(record.epoch, record.terms.base ?? Number.NaN);
        trajectory.push(point);
        // The trainer restores its best-validation weights after the last epoch; the study is about
        // the trained solution, so the final metrics are taken here, on the last epoch's weights.
        if (last) {
          const test = evaluate(model, testData);
          const trainMetrics = evaluate(model, trainData);
          const classifier = effectiveClassifier(model);
          final = {
            ...point,
            bias: classifier.bias,
            exactAccuracyWithoutBias: exactAccuracy({ weights: classifier.weights, bias: 0 }, distribution),
            testAccuracy: test.accuracy,
            testNll: test.nll,
            trainAccuracy: trainMetrics.accuracy,
          };
        }
      },
    });
    if (!final) throw new Error('the last epoch was not recorded');
    return { method, label: methodLabel(method), seed, trajectory, final, spanFloor: Number.NaN, seconds: (performance.now() - started) / 1000 };
  } finally {
    model.dispose();
  }
}

/** Mean and (population) standard deviation. */
export function meanStd(values: readonly number[]): { mean: number; std: number } {
  const mean = values.reduce((sum, value) => sum + value, 0) / values.length;
  const variance = values.reduce((sum, value) => sum + (value - mean) ** 2, 0) / values.length;
  return { mean, std: Math.sqrt(variance) };
}

/** One row of the summary table: a method's final metrics over seeds. */
export interface SummaryRow {
  label: string;
  lambda: number;
  alpha: number;
  ratio: { mean: number; std: number };
  generalising: { mean: number; std: number };
  spurious: { mean: number; std: number };
  testAccuracy: { mean: number; std: number };
  exactAccuracy: { mean: number; std: number };
  exactAccuracyWithoutBias: { mean: number; std: number };
  trainAccuracy: { mean: number; std: number };
  /** Cross-entropy on the training set at the last step. */
  trainLoss: { mean: number; std: number };
  /** Seeds on which this method's final ratio is below ERM's on the same data. */
  seedsBelowErm: number;
  seeds: number;
}

/** Aggregates the runs per method, in the order the methods were run. */
export function summarizeStudy(result: LinearStudyResult): SummaryRow[] {
  const labels = [...new Set(result.runs.map((run) => run.label))];
  const ermRatio = new Map(result.runs.filter((run) => run.method.lambda === 0).map((run) => [run.seed, run.final.ratio]));
  return labels.map((label) => {
    const runs = result.runs.filter((run) => run.label === label);
    const pick = (read: (run: StudyRun) => number) => meanStd(runs.map(read));
    return {
      label,
      lambda: runs[0]!.method.lambda,
      alpha: runs[0]!.method.alpha,
      ratio: pick((run) => run.final.ratio),
      generalising: pick((run) => run.final.generalising),
      spurious: pick((run) => run.final.spurious),
      testAccuracy: pick((run) => run.final.testAccuracy),
      exactAccuracy: pick((run) => run.final.exactAccuracy),
      exactAccuracyWithoutBias: pick((run) => run.final.exactAccuracyWithoutBias),
      trainAccuracy: pick((run) => run.final.trainAccuracy),
      trainLoss: pick((run) => run.final.trainLoss),
      seedsBelowErm: runs.filter((run) => run.final.ratio < (ermRatio.get(run.seed) ?? -Infinity)).length,
      seeds: runs.length,
    };
  });
}

/** The summary as a Markdown table (mean ± std over seeds). */
export function summaryMarkdown(result: LinearStudyResult): string {
  const format = ({ mean, std }: { mean: number; std: number }, digits: number) => `${mean.toFixed(digits)} ± ${std.toFixed(digits)}`;
  const floor = meanStd(result.runs.filter((run) => run.method.lambda === 0).map((run) => run.spanFloor));
  const lines = [
    '| method | ‖w_spu‖/\\|w_gen\\| | \\|w_gen\\| | ‖w_spu‖ | test accuracy | exact accuracy | exact accuracy at b = 0 | train CE | seeds with ratio < ERM |',
    '|---|---|---|---|---|---|---|---|---|',
    ...summarizeStudy(result).map((row) =>
      `| ${row.label} | ${format(row.ratio, 3)} | ${format(row.generalising, 2)} | ${format(row.spurious, 2)} | ${format(row.testAccuracy, 3)} | ${format(row.exactAccuracy, 3)} | ${format(row.exactAccuracyWithoutBias, 3)} | ${format(row.trainLoss, 3)} | ${row.lambda === 0 ? '—' : `${row.seedsBelowErm}/${row.seeds}`} |`,
    ),
    `| floor over the span of the training data | ${format(floor, 3)} | | | | | | | |`,
  ];
  return lines.join('\n');
}

/** Vega-Lite spec: the spurious ratio over training, one panel per α, one line per λ (λ = 0 is ERM). */
export function ratioChartSpec(result: LinearStudyResult): TopLevelSpec {
  const erm = result.runs.filter((run) => run.method.lambda === 0);
  const values = result.settings.alphas.flatMap((alpha) => [
    ...erm.flatMap((run) => run.trajectory.map((point) => ({ alpha: `α = ${alpha}`, lambda: '0 (ERM)', seed: run.seed, epoch: point.epoch, ratio: point.ratio }))),
    ...result.runs
      .filter((run) => run.method.lambda !== 0 && run.method.alpha === alpha)
      .flatMap((run) => run.trajectory.map((point) => ({ alpha: `α = ${alpha}`, lambda: String(run.method.lambda), seed: run.seed, epoch: point.epoch, ratio: point.ratio }))),
  ]).filter((value) => value.epoch > 0);
  const floor = meanStd(erm.map((run) => run.spanFloor)).mean;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Spurious ratio ‖w_spu‖ / |w_gen| over training', subtitle: `mean of ${result.settings.seeds.length} seeds; dashed: the floor over the span of the training data` },
    data: { values },
    facet: { column: { field: 'alpha', type: 'nominal', title: null, sort: result.settings.alphas.map((alpha) => `α = ${alpha}`) } },
    spec: {
      width: 220,
      height: 220,
      layer: [
        {
          mark: { type: 'line' },
          encoding: {
            x: { field: 'epoch', type: 'quantitative', title: 'epoch (full-batch step)' },
            y: { aggregate: 'mean', field: 'ratio', type: 'quantitative', title: '‖w_spu‖ / |w_gen|', scale: { zero: true } },
            color: { field: 'lambda', type: 'nominal', title: 'λ' },
          },
        },
        { mark: { type: 'rule', strokeDash: [4, 4], color: '#666' }, encoding: { y: { datum: floor } } },
      ],
    },
  };
}

/** Vega-Lite spec: final test accuracy against λ, one panel per α, mean ± std over seeds. */
export function accuracyChartSpec(result: LinearStudyResult): TopLevelSpec {
  const erm = result.runs.filter((run) => run.method.lambda === 0);
  const values = result.settings.alphas.flatMap((alpha) => [
    ...erm.map((run) => ({ alpha: `α = ${alpha}`, lambda: 0, seed: run.seed, accuracy: run.final.testAccuracy })),
    ...result.runs
      .filter((run) => run.method.lambda !== 0 && run.method.alpha === alpha)
      .map((run) => ({ alpha: `α = ${alpha}`, lambda: run.method.lambda, seed: run.seed, accuracy: run.final.testAccuracy })),
  ]);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Test accuracy of the final weights against λ', subtitle: `λ = 0 is ERM; mean ± std of ${result.settings.seeds.length} seeds` },
    data: { values },
    facet: { column: { field: 'alpha', type: 'nominal', title: null, sort: result.settings.alphas.map((alpha) => `α = ${alpha}`) } },
    spec: {
      width: 200,
      height: 200,
      layer: [
        {
          mark: { type: 'errorbar', extent: 'stdev' },
          encoding: { x: { field: 'lambda', type: 'ordinal', title: 'λ', axis: { labelAngle: 0 } }, y: { field: 'accuracy', type: 'quantitative', title: 'test accuracy', scale: { zero: false } } },
        },
        {
          mark: { type: 'point', filled: true, size: 60 },
          encoding: { x: { field: 'lambda', type: 'ordinal' }, y: { aggregate: 'mean', field: 'accuracy', type: 'quantitative' } },
        },
      ],
    },
  };
}

function toTensors(sample: ToySample): { inputs: tf.Tensor2D; labels: tf.Tensor1D } {
  return { inputs: tf.tensor2d(sample.inputs, [sample.count, sample.width]), labels: tf.tensor1d(sample.labels, 'int32') };
}

function checkDistribution(distribution: ToyDistribution): void {
  assertKnownOptions('distribution', distribution, ['spuriousDimensions', 'margin', 'generalisingNoise', 'spuriousNoise']);
  assertNumber('distribution.spuriousDimensions', distribution.spuriousDimensions, { min: 1, integer: true });
  assertNumber('distribution.margin', distribution.margin, { min: 0, minExclusive: true });
  assertNumber('distribution.generalisingNoise', distribution.generalisingNoise, { min: 0 });
  assertNumber('distribution.spuriousNoise', distribution.spuriousNoise, { min: 0, minExclusive: true });
}

function checkList(field: string, values: readonly number[], range: Parameters<typeof assertNumber>[2]): number[] {
  if (!Array.isArray(values) || values.length === 0) throw new ConfigError(field, `expected a non-empty array of numbers, got ${JSON.stringify(values)}`);
  return values.map((value, index) => assertNumber(`${field}[${index}]`, value, range));
}

/** Φ, the standard normal CDF, through erfc (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7). */
export function normalCdf(z: number): number {
  const x = Math.abs(z) / Math.SQRT2;
  const t = 1 / (1 + 0.5 * x);
  const erfc =
    t *
    Math.exp(
      -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return z >= 0 ? 1 - erfc / 2 : erfc / 2;
}

async function main(argv: readonly string[]): Promise<void> {
  const quick = argv.includes('--quick');
  const { useBackend } = await import('@regstack/backend');
  await useBackend('cpu');
  tf.env().set('PROD', true);
  const outputDirectory = 'runs/toy';
  const chartDirectory = quick ? outputDirectory : 'docs';
  await mkdir(outputDirectory, { recursive: true });
  const result = await runLinearStudy({
    ...(quick ? QUICK_STUDY : {}),
    onRun: (run) => console.log(`${run.label.padEnd(22)} seed ${run.seed}: ratio ${run.final.ratio.toFixed(3)}, test accuracy ${run.final.testAccuracy.toFixed(3)} (${run.seconds.toFixed(1)} s)`),
  });
  const name = quick ? 'linear-study-quick' : 'linear-study';
  await writeFile(`${outputDirectory}/${name}.json`, JSON.stringify({ ...result, summary: summarizeStudy(result) }, null, 1));
  const { renderChart } = await import('@regstack/cli');
  const prefix = quick ? `${chartDirectory}/toy-linear-quick` : `${chartDirectory}/toy-linear`;
  await renderChart(ratioChartSpec(result), `${prefix}-ratio`);
  await renderChart(accuracyChartSpec(result), `${prefix}-accuracy`);
  console.log(`\n${summaryMarkdown(result)}\n\n${result.seconds.toFixed(0)} s; results in ${outputDirectory}/${name}.json, plots ${prefix}-ratio/-accuracy.svg/.png`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
