// The training-step benchmark behind `npm run bench`: TF.js steps of every regularizer plugin and a few
// stacks, timed in interleaved rounds, beside PyTorch-CPU steps of the same models in the same run.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { useBackend } from '@regstack/backend';
import { Random, addWeightDecay, classifierFromLayersModel, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { resnet18, smallCnn } from '@regstack/models';
import { standardAugmentation } from '@regstack/datasets';
import { rcad } from '@regstack/rcad';
import { labelSmoothing } from '@regstack/label-smoothing';
import { mixup } from '@regstack/mixup';
import { adversarialTraining } from '@regstack/adversarial-training';
import { entropyMin } from '@regstack/entropy-min';
import { meAda } from '@regstack/me-ada';
import { profileKernels } from './kernel-profile.mjs';

/** CIFAR-10 channel statistics: the models normalise inside, as a real run would (torch_step.py matches). */
const CIFAR_MEAN = [0.4914, 0.4822, 0.4465];
const CIFAR_STD = [0.247, 0.2435, 0.2616];
/** Fashion-MNIST's pixel statistics, for the recipe's model (torch_step.py gets them from init). */
const FASHION_MNIST_MEAN = [0.286];
const FASHION_MNIST_STD = [0.353];

/** The trainer's defaults (packages/trainer): SGD with Nesterov momentum, clip at 1, coupled decay. */
const LEARNING_RATE = 0.01;
const MOMENTUM = 0.9;
const CLIP_NORM = 1;
const WEIGHT_DECAY = 5e-4;

/**
 * The regularizer stacks the bench times, by name; each plugin with its defaults (the reference
 * settings). Every variant runs the trainer's step (`stack.gradients`, which fuses RCAD's or FGSM's
 * clean input gradient into the base pass where that is exact) except `rcad-unfused`, which times RCAD
 * through `stack.prepare(...).gradients()`: the input gradient in its own pass (see PREPARE_PATH).
 * @type {Record<string, () => import('@regstack/regularizer').RegularizerPlugin[]>}
 */
export const VARIANTS = {
  erm: () => [],
  rcad: () => [rcad()],
  'label-smoothing': () => [labelSmoothing()],
  mixup: () => [mixup()],
  'adversarial-fgsm': () => [adversarialTraining({ attack: 'fgsm' })],
  'entropy-min': () => [entropyMin()],
  'me-ada': () => [meAda()],
  'rcad+label-smoothing': () => [rcad(), labelSmoothing()],
  'rcad+mixup': () => [rcad(), mixup()],
  'rcad-unfused': () => [rcad()],
};

/** Variants timed through `stack.prepare(...).gradients()` instead of the trainer's `stack.gradients`. */
const PREPARE_PATH = new Set(['rcad-unfused']);

/** Variants timed again at each larger thread count, and those torch_step.py has twins of. */
const THREADED_VARIANTS = new Set(['erm', 'rcad', 'rcad+label-smoothing']);
const TORCH_VARIANTS = new Set(['erm', 'rcad']);
const TORCH_TWO_VIEW_VARIANTS = new Set(['erm', 'rcad', 'rcad+label-smoothing']);

/**
 * @typedef {object} ModelSpec
 * @property {string} id Name in tables and JSON, e.g. `resnet18-w16`.
 * @property {'small-cnn' | 'resnet18' | 'layers-cnn'} architecture `layers-cnn`: the small CNN's layout built
 *   as a `tf.LayersModel` (tfjs-layers) and wrapped with `classifierFromLayersModel`, as a user with
 *   their own Layers model would (no PyTorch twin).
 * @property {number} width First stage's channels.
 * @property {[number, number, number]} inputShape [height, width, channels].
 * @property {number} numClasses
 * @property {number} rounds Timed rounds (each times every variant once).
 * @property {number} [batchSize] This model's batch size, over the run's (the recipe's is 32).
 * @property {'single' | 'two-view'} [baseLoss] `two-view`: the reference script's base loss
 *   0.5·[CE(x) + CE(augment(x))], with `standardAugmentation` (crop with 4-pixel zero padding + flip)
 *   drawn in every step, as `regstack train --augment two-view` runs it. Default single, no augmentation.
 * @property {number[]} [mean] Input normalisation inside the model (default CIFAR-10's).
 * @property {number[]} [std]
 * @property {string[]} [variants] The only variants this model runs (with the run's); default all.
 */

/**
 * The models of a full run: the small CNN at its default width, ResNet-18 at width 16, CIFAR-sized,
 * and the small CNN's layout as a tf.LayersModel.
 */
export const MODELS = /** @type {Record<string, ModelSpec>} */ ({
  'small-cnn': { id: 'small-cnn', architecture: 'small-cnn', width: 32, inputShape: [32, 32, 3], numClasses: 10, rounds: 9 },
  'layers-cnn': { id: 'layers-cnn', architecture: 'layers-cnn', width: 32, inputShape: [32, 32, 3], numClasses: 10, rounds: 9 },
  'resnet18-w16': { id: 'resnet18-w16', architecture: 'resnet18', width: 16, inputShape: [32, 32, 3], numClasses: 10, rounds: 5 },
  // The reference recipe as users run it (issue 18): Fashion-MNIST-sized inputs, batch 32, two views.
  'recipe-resnet18-w16': {
    id: 'recipe-resnet18-w16',
    architecture: 'resnet18',
    width: 16,
    inputShape: [28, 28, 1],
    numClasses: 10,
    rounds: 7,
    batchSize: 32,
    baseLoss: 'two-view',
    mean: FASHION_MNIST_MEAN,
    std: FASHION_MNIST_STD,
    variants: ['erm', 'rcad', 'rcad+label-smoothing'],
  },
});

/**
 * @typedef {object} BenchmarkOptions
 * @property {ModelSpec[]} models
 * @property {string[]} [variants] Names from {@link VARIANTS}; default all. `erm` is always timed (the ratios need it).
 * @property {number} [batchSize] Default 64.
 * @property {number} [warmup] Untimed steps per variant before timing. Default 2.
 * @property {number} [roundsScale] Multiplies each model's rounds (e.g. 1/3 for --quick). Default 1.
 * @property {string} [backend] Default 'wasm' (useBackend's default).
 * @property {boolean} [relaxedSimd] useBackend's `relaxedSimd`: relaxed SIMD's multiply-add in our convolutions (on Node 20 its V8 flag). Default true.
 * @property {boolean | { python?: string, stepsPerRound?: number, threads?: number[] }} [torch]
 *   PyTorch comparison, timed in the same rounds; default true (python /usr/bin/python3, threads 1
 *   and 2, two steps of each per round).
 * @property {number[]} [threads] Our thread counts: 1, and for wasm in Node each larger count k times
 *   ERM and RCAD again with `useBackend('wasm', { threads: k })` (k − 1 convolution worker threads)
 *   in the same rounds. Default [1, 2].
 * @property {number} [seed] Default 0.
 * @property {(line: string) => void} [log] Progress lines.
 */

/** Median, smallest and largest of per-round ratios. */
function spread(values) {
  return { median: median(values), min: Math.min(...values), max: Math.max(...values) };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * The small CNN's layout (two stages of [conv3×3-BN-ReLU ×2, max-pool 2×2], width and 2·width
 * channels, flatten, dense logits) as a tf.sequential, wrapped as a user would: no dropout, so the
 * adapter reads `stochastic: false` and the stack fuses RCAD's input gradient into the base pass.
 */
function createLayersModel(spec, seed) {
  const layers = [];
  let initializerSeed = seed;
  const convolution = (filters, first) =>
    tfl.layers.conv2d({
      ...(first ? { inputShape: spec.inputShape } : {}),
      filters,
      kernelSize: 3,
      padding: 'same',
      useBias: false,
      kernelInitializer: tfl.initializers.heNormal({ seed: initializerSeed++ }),
    });
  for (const [stage, filters] of [spec.width, 2 * spec.width].entries()) {
    for (let index = 0; index < 2; index++) {
      layers.push(convolution(filters, stage === 0 && index === 0), tfl.layers.batchNormalization({ momentum: 0.9, epsilon: 1e-5 }), tfl.layers.reLU());
    }
    layers.push(tfl.layers.maxPooling2d({ poolSize: 2 }));
  }
  layers.push(tfl.layers.flatten(), tfl.layers.dense({ units: spec.numClasses, kernelInitializer: tfl.initializers.glorotUniform({ seed: initializerSeed }) }));
  const layersModel = tfl.sequential({ layers });
  const classifier = classifierFromLayersModel(layersModel);
  return Object.assign(classifier, {
    parameterCount: () => layersModel.countParams(),
    dispose: () => layersModel.dispose(),
  });
}

function createModel(spec, seed) {
  if (spec.architecture === 'layers-cnn') return createLayersModel(spec, seed);
  const options = { width: spec.width, inputShape: spec.inputShape, numClasses: spec.numClasses, mean: spec.mean ?? CIFAR_MEAN, std: spec.std ?? CIFAR_STD, seed };
  return spec.architecture === 'resnet18' ? resnet18(options) : smallCnn(options);
}

/**
 * One trainer step as packages/trainer does it per batch: `stack.gradients` (prepare outside the tape,
 * the total's gradients, the logged terms), then clip by global norm, weight decay and the optimizer's
 * update. Variants in {@link PREPARE_PATH} run `stack.prepare` and `step.gradients()` instead, timed
 * apart. Returns the time of each part and whether the stack fused the input gradient into the base pass.
 */
function createStepRunner(variant, model, optimizer, seed, spec) {
  const variables = model.trainableVariables;
  // The second view's augmentation runs inside the stack's step; timed apart to say what it costs.
  let augmentMs = 0;
  const views =
    spec.baseLoss === 'two-view'
      ? {
          baseLoss: /** @type {const} */ ('two-view'),
          augment: (inputs, random) => {
            const start = performance.now();
            const augmented = standardAugmentation(inputs, random);
            augmentMs += performance.now() - start;
            return augmented;
          },
        }
      : {};
  const stack = composeRegularizers(VARIANTS[variant]());
  const random = new Random(seed);
  const preparePath = PREPARE_PATH.has(variant) || typeof stack.gradients !== 'function';
  let step = 0;
  const update = (grads) => {
    const clipped = clipByGlobalNorm(grads, CLIP_NORM).grads;
    const decayed = addWeightDecay(clipped, variables, WEIGHT_DECAY);
    optimizer.applyGradients(decayed);
    tf.dispose([...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)]);
  };
  /** @param {{ inputs: tf.Tensor, labels: tf.Tensor1D }} batch */
  return (batch, label = () => {}) => {
    const start = performance.now();
    const input = { model, batch, random, step, epoch: 0, ...views };
    step += 1;
    augmentMs = 0;
    if (!preparePath) {
      label('gradients');
      const { value, grads, fused, fusion } = stack.gradients(input);
      value.dataSync();
      value.dispose();
      const gradientsEnd = performance.now();
      label('update');
      update(grads);
      const end = performance.now();
      return { totalMs: end - start, prepareMs: 0, gradientsMs: gradientsEnd - start, updateMs: end - gradientsEnd, augmentMs, fused, fusion };
    }
    label('prepare');
    const prepared = stack.prepare(input);
    const prepareEnd = performance.now();
    let gradientsEnd = prepareEnd;
    try {
      label('gradients');
      const { value, grads } = prepared.gradients();
      value.dataSync();
      value.dispose();
      gradientsEnd = performance.now();
      label('update');
      update(grads);
      prepared.terms();
    } finally {
      prepared.dispose();
    }
    const end = performance.now();
    return { totalMs: end - start, prepareMs: prepareEnd - start, gradientsMs: gradientsEnd - prepareEnd, updateMs: end - gradientsEnd, augmentMs, fused: false, fusion: 'plain' };
  };
}

/** TF.js 4.22's MomentumOptimizer.dispose leaves its scalars behind (see packages/trainer). */
function disposeOptimizer(optimizer) {
  optimizer.dispose();
  tf.SGDOptimizer.prototype.dispose.call(optimizer);
  tf.Optimizer.prototype.dispose.call(optimizer);
}

/**
 * Times every variant on one model: warm-up, then rounds in which each variant takes one step, the
 * order rotated each round so that a burst of load from other jobs on the machine does not always hit
 * the same variant, followed by PyTorch's ERM and RCAD steps at each thread count. Then one profiled
 * step per variant (kernels, memory), untimed.
 */
async function benchmarkModel(spec, runVariants, options) {
  const batchSize = spec.batchSize ?? options.batchSize;
  const variants = spec.variants ? runVariants.filter((variant) => spec.variants.includes(variant)) : runVariants;
  const model = createModel(spec, options.seed);
  const optimizer = tf.train.momentum(LEARNING_RATE, MOMENTUM, true);
  const dataRandom = new Random(options.seed + 1);
  const [height, width, channels] = spec.inputShape;
  const batch = {
    inputs: tf.tensor4d(Float32Array.from({ length: batchSize * height * width * channels }, () => dataRandom.uniform()), [batchSize, height, width, channels]),
    labels: tf.tensor1d(Int32Array.from({ length: batchSize }, () => dataRandom.int(spec.numClasses)), 'int32'),
  };
  const runners = Object.fromEntries(variants.map((variant, index) => [variant, createStepRunner(variant, model, optimizer, options.seed + 100 + index, spec)]));
  const rounds = Math.max(1, Math.round(spec.rounds * options.roundsScale));
  options.log(`${spec.id}: warm-up (${options.warmup} step(s) per variant), then ${rounds} interleaved round(s) of ${variants.length} variants`);
  for (let index = 0; index < options.warmup; index++) for (const variant of variants) runners[variant](batch);
  // Our multi-threaded steps (wasm in Node: convolution worker threads), for ERM and RCAD.
  const threadCounts = options.backend === 'wasm' ? (options.threads ?? [1, 2]).filter((threads) => threads > 1) : [];
  // The batch-64 models keep their rows (ERM and RCAD); the recipe times each of its variants.
  const threadedVariants = variants.filter((variant) => variant === 'erm' || variant === 'rcad' || (spec.variants !== undefined && THREADED_VARIANTS.has(variant)));
  /** @type {Record<string, Record<string, number[]>>} */
  const threadedSamples = Object.fromEntries(threadCounts.map((threads) => [threads, Object.fromEntries(threadedVariants.map((variant) => [variant, []]))]));
  const withThreads = async (threads, run) => {
    await useBackend(/** @type {any} */ (options.backend), { threads, relaxedSimd: options.relaxedSimd ?? true });
    try {
      return run();
    } finally {
      await useBackend(/** @type {any} */ (options.backend), { relaxedSimd: options.relaxedSimd ?? true });
    }
  };
  for (const threads of threadCounts) {
    await withThreads(threads, () => {
      for (let index = 0; index < options.warmup; index++) for (const variant of threadedVariants) runners[variant](batch);
    });
  }

  // The Layers model has no PyTorch twin in torch_step.py; its comparison is with our own models.
  const torchSettings = options.torch === false || spec.architecture === 'layers-cnn' ? undefined : options.torch === true ? {} : options.torch;
  const torchThreads = torchSettings?.threads ?? [1, 2];
  const torchVariants = variants.filter((variant) => (spec.baseLoss === 'two-view' ? TORCH_TWO_VIEW_VARIANTS : TORCH_VARIANTS).has(variant));
  /** @type {Record<string, Record<string, number[]>>} */
  const torchSamples = Object.fromEntries(torchThreads.map((threads) => [threads, Object.fromEntries(torchVariants.map((variant) => [variant, []]))]));
  let torch = { available: false, reason: spec.architecture === 'layers-cnn' && options.torch !== false ? 'no PyTorch twin of the tf.LayersModel' : 'disabled (--no-torch)' };
  let worker;
  if (torchSettings) {
    const started = await TorchWorker.start(spec, torchSettings, batchSize, options.seed);
    worker = started.worker;
    if (worker) {
      torch = { available: true, version: worker.version };
      for (let index = 0; index < options.warmup + 1; index++) {
        for (const threads of torchThreads) for (const variant of torchVariants) await worker.step(variant, threads);
      }
    } else {
      torch = { available: false, reason: started.reason };
    }
  }

  /** @type {Record<string, Array<{ totalMs: number, prepareMs: number, gradientsMs: number, updateMs: number }>>} */
  const samples = Object.fromEntries(variants.map((variant) => [variant, []]));
  const leaks = Object.fromEntries(variants.map((variant) => [variant, 0]));
  for (let round = 0; round < rounds; round++) {
    const order = [...variants.slice(round % variants.length), ...variants.slice(0, round % variants.length)];
    for (const variant of order) {
      const before = tf.memory().numTensors;
      samples[variant].push(runners[variant](batch));
      leaks[variant] = Math.max(leaks[variant], tf.memory().numTensors - before);
    }
    for (const threads of threadCounts) {
      await withThreads(threads, () => {
        for (const variant of threadedVariants) threadedSamples[threads][variant].push(runners[variant](batch).totalMs);
      });
    }
    // PyTorch's steps of the same round: a few per setting, as they are short.
    if (worker) {
      for (let repeat = 0; repeat < (torchSettings.stepsPerRound ?? 2); repeat++) {
        for (const threads of torchThreads) for (const variant of torchVariants) torchSamples[threads][variant].push(await worker.step(variant, threads));
      }
    }
    options.log(
      `${spec.id}: round ${round + 1}/${rounds}: ` +
        variants.map((variant) => `${variant} ${samples[variant].at(-1).totalMs.toFixed(0)}`).join(', ') +
        threadCounts.flatMap((threads) => threadedVariants.map((variant) => `, ${variant}@${threads} threads ${threadedSamples[threads][variant].at(-1).toFixed(0)}`)).join('') +
        ' ms',
    );
  }
  worker?.close();

  const results = {};
  for (const variant of variants) {
    const { profile } = profileKernels((label) => runners[variant](batch, label));
    const memory = tf.memory();
    const totals = samples[variant].map((sample) => sample.totalMs);
    results[variant] = {
      medianMs: median(totals),
      minMs: Math.min(...totals),
      samplesMs: totals,
      path: PREPARE_PATH.has(variant) ? 'prepare + gradients()' : 'stack.gradients',
      fused: samples[variant].at(-1).fused === true,
      // How the base pass served ∇x (StepGradients.fusion): 'base-backward', 'base-forward' or 'plain'.
      fusion: samples[variant].at(-1).fusion ?? 'plain',
      phasesMs: {
        prepare: median(samples[variant].map((sample) => sample.prepareMs)),
        gradients: median(samples[variant].map((sample) => sample.gradientsMs)),
        update: median(samples[variant].map((sample) => sample.updateMs)),
        augment: median(samples[variant].map((sample) => sample.augmentMs)),
      },
      memory: {
        tensorsAfterStep: memory.numTensors,
        bytesAfterStep: memory.numBytes,
        leakedTensorsPerStep: leaks[variant],
        peakBytes: profile.peakBytes,
        kernelCalls: profile.kernelCalls,
      },
      profile: {
        totalMs: profile.totalMs,
        outsideKernelsMs: profile.outsideKernelsMs,
        byPhaseMs: profile.byPhaseMs,
        byStageMs: profile.byStageMs,
        topKernels: profile.byKernel.slice(0, 15),
        topKernelsByPhase: profile.byKernelAndPhase.slice(0, 15),
      },
    };
  }
  // Ratios to ERM per round (the two were timed seconds apart), then the median: robust to load that
  // slows a whole round. The ratio of medians is reported beside it.
  const ermSamples = samples.erm.map((sample) => sample.totalMs);
  for (const variant of variants) {
    const ratios = samples[variant].map((sample, round) => sample.totalMs / ermSamples[round]);
    results[variant].ratioToErm = median(ratios);
    results[variant].ratioOfMediansToErm = results[variant].medianMs / results.erm.medianMs;
  }
  const parameters = model.parameterCount();
  tf.dispose([batch.inputs, batch.labels]);
  disposeOptimizer(optimizer);
  model.dispose();
  /** Our medians per thread count (1: the main table's), for the variants timed there. */
  const ours = { 1: Object.fromEntries(threadedVariants.map((variant) => [variant, { medianMs: results[variant].medianMs, minMs: results[variant].minMs }])) };
  for (const threads of threadCounts) {
    ours[threads] = Object.fromEntries(
      threadedVariants.map((variant) => {
        const values = threadedSamples[threads][variant];
        // Per round: the one-thread step over this one, timed seconds apart.
        const speedUps = spread(values.map((value, round) => samples[variant][round].totalMs / value));
        return [variant, { medianMs: median(values), minMs: Math.min(...values), samplesMs: values, speedUp: results[variant].medianMs / median(values), speedUpPerRound: speedUps }];
      }),
    );
  }
  const result = {
    id: spec.id,
    architecture: spec.architecture,
    width: spec.width,
    inputShape: spec.inputShape,
    numClasses: spec.numClasses,
    batchSize,
    baseLoss: spec.baseLoss ?? 'single',
    parameters,
    rounds,
    variants: results,
    ours,
    torch,
  };
  if (torch.available) {
    torch.threads = {};
    result.oursOverTorch = {};
    for (const threads of torchThreads) {
      torch.threads[threads] = Object.fromEntries(
        torchVariants.map((variant) => {
          const values = torchSamples[threads][variant];
          return [variant, { medianMs: median(values), minMs: Math.min(...values), samplesMs: values }];
        }),
      );
      // Ours at the same thread count where it was timed; otherwise ours at 1 thread (said in the table).
      const oursAt = ours[threads] ?? ours[1];
      result.oursOverTorch[threads] = Object.fromEntries(
        torchVariants.map((variant) => [variant, (oursAt[variant]?.medianMs ?? results[variant].medianMs) / torch.threads[threads][variant].medianMs]),
      );
      result.oursOverTorch[threads].oursThreads = ours[threads] ? Number(threads) : 1;
      // Per round: our step over the median of PyTorch's steps of the same round.
      const perRound = torchSettings.stepsPerRound ?? 2;
      result.oursOverTorchPerRound ??= {};
      result.oursOverTorchPerRound[threads] = Object.fromEntries(
        torchVariants.map((variant) => {
          const ourSamples = ours[threads]?.[variant]?.samplesMs ?? samples[variant].map((sample) => sample.totalMs);
          const theirs = torchSamples[threads][variant];
          return [variant, spread(ourSamples.map((value, round) => value / median(theirs.slice(round * perRound, (round + 1) * perRound))))];
        }),
      );
    }
  }
  return result;
}

const TORCH_SCRIPT = fileURLToPath(new URL('./torch_step.py', import.meta.url));

/**
 * A PyTorch process serving one training step per request (torch_step.py), so that its steps are timed
 * in the same rounds as ours. `start` never throws: a missing Python or torch comes back as a reason.
 */
export class TorchWorker {
  static async start(spec, settings, batchSize, seed) {
    const python = settings.python ?? '/usr/bin/python3';
    if (!existsSync(python)) return { reason: `${python} not found (Debian's python3-torch runs with /usr/bin/python3)` };
    const worker = new TorchWorker(python);
    try {
      const reply = await worker.request({
        command: 'init',
        model: { name: spec.architecture, width: spec.width, inputShape: spec.inputShape, numClasses: spec.numClasses, mean: spec.mean ?? CIFAR_MEAN, std: spec.std ?? CIFAR_STD },
        baseLoss: spec.baseLoss ?? 'single',
        batchSize,
        seed,
      });
      if (!reply.available) {
        worker.close();
        return { reason: reply.reason };
      }
      worker.version = reply.version;
      return { worker };
    } catch (error) {
      worker.close();
      return { reason: error instanceof Error ? error.message : String(error) };
    }
  }

  constructor(python) {
    this.pending = [];
    this.stderr = '';
    this.failure = undefined;
    // torch.set_num_threads picks the threads of each step; the environment must not cap them lower.
    const env = { ...process.env, OMP_NUM_THREADS: '2', MKL_NUM_THREADS: '2' };
    this.process = spawn(python, [TORCH_SCRIPT], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.process.stderr.on('data', (chunk) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    const fail = (message) => {
      this.failure ??= new Error(message);
      for (const { reject } of this.pending.splice(0)) reject(this.failure);
    };
    this.process.on('error', (error) => fail(`${python} failed to start: ${error.message}`));
    // 'close', not 'exit': it comes after the child's stdout has ended, so an answer it wrote before
    // exiting (without torch it answers once and exits) reaches its request first.
    this.process.on('close', (code) => fail(`torch_step.py exited with ${code}: ${this.stderr.trim().split('\n').slice(-3).join(' | ')}`));
    // The child may exit at any moment: a write to its closed stdin then fails with EPIPE, which,
    // unhandled, would kill the whole process (a test runner's too). Handled, and left to 'close' to
    // report, so that the child's own reason wins over the broken pipe it caused.
    for (const stream of [this.process.stdin, this.process.stdout, this.process.stderr]) {
      stream.on('error', (error) => {
        this.pipeError ??= error;
      });
    }
    createInterface({ input: this.process.stdout }).on('line', (line) => {
      const next = this.pending.shift();
      if (!next) return;
      try {
        next.resolve(JSON.parse(line));
      } catch {
        next.reject(new Error(`torch_step.py answered with no JSON: ${line.slice(0, 200)}`));
      }
    });
  }

  request(message) {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.pending.push({ resolve, reject });
      this.process.stdin.write(`${JSON.stringify(message)}\n`);
    });
  }

  async step(variant, threads) {
    const reply = await this.request({ command: 'step', variant, threads });
    if (typeof reply.ms !== 'number') throw new Error(`torch_step.py: ${reply.error ?? JSON.stringify(reply)}`);
    return reply.ms;
  }

  /** Asks the child to exit; harmless when it already has (a failed write is reported to `fail`, not thrown). */
  close() {
    const stdin = this.process.stdin;
    if (this.process.exitCode === null && !this.process.killed && stdin.writable) {
      stdin.end(`${JSON.stringify({ command: 'exit' })}\n`);
    }
  }
}

/**
 * What two threads get on this machine now: two worker threads summing square roots at once, against
 * one alone, as a throughput ratio (2 where two cores are free, 1 where the process gets one CPU's worth,
 * e.g. a kernel with autogroup scheduling while another session keeps a core busy). Median of `trials`.
 * The 2-thread rows of a run mean little below ≈1.3.
 */
export async function measureParallelism(trials = 3, iterations = 1e8) {
  const code =
    "const { parentPort } = require('node:worker_threads');" +
    'parentPort.on("message", (n) => { let s = 0; for (let i = 0; i < n; i++) s += Math.sqrt(i); parentPort.postMessage(s); });';
  const workers = [new Worker(code, { eval: true }), new Worker(code, { eval: true })];
  const job = (worker, count) =>
    new Promise((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
      worker.postMessage(count);
    });
  try {
    // Warm-up at full size, one after the other, so that both workers' loops are optimised first.
    for (const worker of workers) await job(worker, iterations);
    const gains = [];
    for (let trial = 0; trial < trials; trial++) {
      let start = performance.now();
      await job(workers[trial % 2], iterations);
      const one = performance.now() - start;
      start = performance.now();
      await Promise.all(workers.map((worker) => job(worker, iterations)));
      gains.push((2 * one) / (performance.now() - start));
    }
    return median(gains);
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
}

/**
 * Runs the whole benchmark and returns the report that run.mjs prints and writes as JSON.
 * @param {BenchmarkOptions} input
 */
export async function runBenchmark(input) {
  const options = {
    variants: Object.keys(VARIANTS),
    batchSize: 64,
    warmup: 2,
    roundsScale: 1,
    backend: 'wasm',
    torch: true,
    seed: 0,
    log: () => {},
    ...input,
  };
  for (const variant of options.variants) {
    if (!(variant in VARIANTS)) throw new Error(`unknown variant '${variant}'; known: ${Object.keys(VARIANTS).join(', ')}`);
  }
  const variants = ['erm', ...options.variants.filter((variant) => variant !== 'erm')];
  const backend = await useBackend(/** @type {any} */ (options.backend), { relaxedSimd: options.relaxedSimd ?? true });
  const parallelism = await measureParallelism();
  options.log(`two threads of plain arithmetic get ${parallelism.toFixed(2)}× one thread's throughput on this machine now`);
  const models = [];
  for (const spec of options.models) models.push(await benchmarkModel(spec, variants, options));
  return {
    createdAt: new Date().toISOString(),
    node: process.version,
    tfjs: tf.version_core,
    backend: backend.name,
    backendThreads: backend.threads ?? 1,
    fusedMultiplyAdd: backend.fusedMultiplyAdd ?? false,
    kernels: backend.kernels,
    batchSize: options.batchSize,
    warmup: options.warmup,
    parallelism,
    note: 'Shared 2-core machine: variants interleaved per round, medians reported; ratios are medians of per-round ratios.',
    models,
  };
}

const formatMs = (value) => (value >= 100 ? value.toFixed(0) : value.toFixed(1));
const formatRatio = (value) => `${value.toFixed(2)}×`;

/** The report as markdown tables: one per model, then the top kernels of ERM and RCAD. */
export function formatReport(report) {
  const multiplyAdd = report.fusedMultiplyAdd === undefined ? '' : report.fusedMultiplyAdd ? ', relaxed SIMD multiply-add' : ', separate SIMD multiply and add';
  const lines = [`TF.js ${report.tfjs} on ${report.backend} (${report.backendThreads} thread${multiplyAdd}), Node ${report.node}. ${report.note}`, ''];
  if (report.parallelism !== undefined) {
    lines.push(
      `Two threads of plain arithmetic got ${report.parallelism.toFixed(2)}× one thread's throughput on this machine at the start of the run` +
        (report.parallelism < 1.3 ? ': the rows at 2 threads (ours and PyTorch\'s) say more about the machine than about the code.' : '.'),
      '',
    );
  }
  const formatSpread = (value) => `${formatRatio(value.median)} [${value.min.toFixed(2)}–${value.max.toFixed(2)}]`;
  for (const model of report.models) {
    const views = model.baseLoss === 'two-view' ? ', two-view base loss with crop + flip' : '';
    lines.push(
      `### ${model.id} (${model.architecture}, width ${model.width}, input ${model.inputShape.join('×')}, batch ${model.batchSize ?? report.batchSize}${views}, ${model.parameters} parameters, ${model.rounds} rounds)`,
      '',
    );
    const twoView = model.baseLoss === 'two-view';
    lines.push(`| variant | median ms | min ms | × ERM (per-round median) | × ERM (medians) | fused ∇x | prepare / gradients / update ms |${twoView ? ' of which augmentation ms |' : ''} kernel calls | peak MB | leaked tensors |`);
    lines.push(`|---|---|---|---|---|---|---|${twoView ? '---|' : ''}---|---|---|`);
    for (const [name, variant] of Object.entries(model.variants)) {
      const phases = variant.phasesMs;
      const prepare = variant.path === 'stack.gradients' ? '—' : formatMs(phases.prepare);
      const label = name === 'rcad-unfused' ? 'rcad-unfused (prepare + gradients())' : name;
      lines.push(
        `| ${label} | ${formatMs(variant.medianMs)} | ${formatMs(variant.minMs)} | ${formatRatio(variant.ratioToErm)} | ${formatRatio(variant.ratioOfMediansToErm)} | ${variant.fusion === 'base-forward' ? 'yes (own backward)' : variant.fused ? 'yes' : 'no'} | ` +
          `${prepare} / ${formatMs(phases.gradients)} / ${formatMs(phases.update)} |${twoView ? ` ${formatMs(phases.augment ?? 0)} |` : ''} ${variant.memory.kernelCalls} | ` +
          `${(variant.memory.peakBytes / 2 ** 20).toFixed(0)} | ${variant.memory.leakedTensorsPerStep} |`,
      );
    }
    lines.push('');
    if (model.torch.available) {
      lines.push(`PyTorch ${model.torch.version} (CPU, NCHW), same model, batch${twoView ? ', two views and augmentation (per batch, in torch)' : ''}; ours / PyTorch per round: median [range]:`, '');
      lines.push('| threads | variant | PyTorch ms | PyTorch × its ERM | ours ms (threads) | ours / PyTorch (medians) | ours / PyTorch per round |');
      lines.push('|---|---|---|---|---|---|---|');
      for (const [threads, timings] of Object.entries(model.torch.threads)) {
        const ratios = model.oursOverTorch[threads];
        const ours = model.ours?.[ratios.oursThreads] ?? {};
        for (const [variant, timing] of Object.entries(timings)) {
          const perRound = model.oursOverTorchPerRound?.[threads]?.[variant];
          lines.push(
            `| ${threads} | ${variant} | ${formatMs(timing.medianMs)} | ${formatRatio(timing.medianMs / timings.erm.medianMs)} | ` +
              `${ours[variant] ? `${formatMs(ours[variant].medianMs)} (${ratios.oursThreads})` : '—'} | ${formatRatio(ratios[variant])} | ${perRound ? formatSpread(perRound) : '—'} |`,
          );
        }
      }
    } else {
      lines.push(`PyTorch: not measured (${model.torch.reason}).`);
    }
    for (const [threads, timings] of Object.entries(model.ours ?? {})) {
      if (threads === '1') continue;
      lines.push('', `Ours at ${threads} threads (${Number(threads) - 1} convolution worker thread(s)): ` +
        Object.entries(timings).map(([variant, timing]) => `${variant} ${formatMs(timing.medianMs)} ms (${timing.speedUp.toFixed(2)}× one thread; per round ${formatSpread(timing.speedUpPerRound)})`).join(', ') + '.');
    }
    lines.push('');
    for (const name of ['erm', 'rcad']) {
      const variant = model.variants[name];
      if (!variant) continue;
      const { profile } = variant;
      const phase = profile.byPhaseMs;
      lines.push(
        `Top kernels, ${model.id} ${name} (one profiled step, ${formatMs(profile.totalMs)} ms: forward ${formatMs(phase.forward)}, backward ${formatMs(phase.backward)}, ` +
          `other ${formatMs(phase.other)}, outside kernels ${formatMs(profile.outsideKernelsMs)} ms):`,
        '',
      );
      lines.push('| kernel | self ms | share | calls |', '|---|---|---|---|');
      for (const kernel of profile.topKernels.slice(0, 10)) {
        lines.push(`| ${kernel.kernel} | ${formatMs(kernel.selfMs)} | ${((100 * kernel.selfMs) / profile.totalMs).toFixed(0)}% | ${kernel.calls} |`);
      }
      lines.push('');
    }
  }
  return lines.join('\n');
}
