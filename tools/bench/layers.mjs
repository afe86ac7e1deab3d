#!/usr/bin/env node
// `node tools/bench/layers.mjs [--rounds n]` (after a build): each layer-level kernel of
// @regstack/backend against what TF.js does without it, on wasm, interleaved, on the small CNN's
// first-stage activation [64, 32, 32, 32] (NHWC), forward + backward; then whole small-CNN ERM steps
// with every kernel against the same step with one of them (or all the recent ones) put back to TF.js's
// own. Each pair is checked for the same result first (largest relative difference printed).
//
// - batch norm: @regstack/models' batchNormalization as the fused kernel and its gradient
//   (`RegstackBatchNorm`, issue 18), as one op with its analytic gradient and the channel-reduction
//   kernels (what the package did before that), without them (tf ops: wasm's Mean/Sum transpose the
//   whole activation to reduce over the outer axes), and the same mathematics as plain ops
//   differentiated by TF.js (what the package did first); then batch norm + ReLU at each activation
//   shape of the reference recipe's ResNet-18 (batch 32, 28×28×1, width 16), fused against the op
//   with the channel kernels and TF.js's ReLU, and a residual block's relu(add(BN(x), shortcut)) with
//   the add and ReLU as TF.js ops against the residual fused into the kernel (`--only residual` runs
//   just these);
// - max-pool 2×2: wasm's shipped MaxPoolGrad (which also loses whole windows' gradients: the check
//   below counts them against the cpu backend) against @regstack/backend's;
// - a linear head's gradients: wasm's shipped BatchMatMul (scalar loops for transposed operands)
//   against @regstack/backend's (explicit transposes, XNNPACK's GEMM);
// - Identity: the shipped one copies every tensor TF.js saves for the backward pass; ours shares it.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { BATCH_NORM_KERNEL_NAMES, CHANNEL_REDUCTION_KERNEL_NAMES, registerKernels, unregisterKernels, useBackend } from '@regstack/backend';
import { Random, addWeightDecay, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { batchNormalization, smallCnn } from '@regstack/models';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '15' }, only: { type: 'string' } } });
if (values.only !== undefined && values.only !== 'residual') throw new Error(`--only takes 'residual', got '${values.only}'`);
const rounds = Number(values.rounds);
tf.env().set('PROD', true);
await useBackend('wasm');

/** Runs `run` with `unregister()` in force, then puts our kernel back with `register()`. */
function without(unregister, register, run) {
  unregister();
  try {
    return run();
  } finally {
    register();
  }
}

const median = (list) => {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
};

/** Batch norm as @regstack/models wrote it before: E[x²] − E[x]² as plain ops, differentiated by TF.js. */
function batchNormDifferentiatedByTfjs(x, gamma, beta, epsilon = 1e-5) {
  const mean = tf.mean(x, [0, 1, 2]);
  const variance = tf.relu(tf.sub(tf.mean(tf.square(x), [0, 1, 2]), tf.square(mean)));
  const scale = tf.mul(gamma, tf.rsqrt(tf.add(variance, epsilon)));
  return tf.add(tf.mul(x, scale), tf.sub(beta, tf.mul(mean, scale)));
}

const shape = [64, 32, 32, 32];
const data = new Random(5);
const input = tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 32 }, () => data.normal() * 2 + 0.5), shape);
const upstream = tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 32 }, () => data.normal()), shape);
const pooledUpstream = tf.tensor4d(Float32Array.from({ length: 64 * 16 * 16 * 32 }, () => data.normal()), [64, 16, 16, 32]);
const gamma = tf.tensor1d(Float32Array.from({ length: 32 }, () => 0.5 + data.uniform()));
const beta = tf.tensor1d(Float32Array.from({ length: 32 }, () => data.normal()));
const running = { runningMean: tf.variable(tf.zeros([32]), false), runningVariance: tf.variable(tf.ones([32]), false) };

const layer = { gamma, beta, ...running, momentum: 0.1, epsilon: 1e-5 };
const batchNormFused = () => tf.grads((x, g, b) => tf.sum(tf.mul(batchNormalization(x, { ...layer, gamma: g, beta: b }, 'frozen-stats'), upstream)))([input, gamma, beta]);
const withoutFused = (run) => without(() => unregisterKernels('wasm', BATCH_NORM_KERNEL_NAMES), () => registerKernels('wasm', BATCH_NORM_KERNEL_NAMES), run);
const batchNormOurs = () => withoutFused(batchNormFused);
const batchNormWithoutKernels = () => without(() => unregisterKernels('wasm', CHANNEL_REDUCTION_KERNEL_NAMES), () => registerKernels('wasm', CHANNEL_REDUCTION_KERNEL_NAMES), batchNormOurs);

/** Batch norm + ReLU forward and backward at one of the recipe's activation shapes: fused, and the op with the channel kernels. */
function batchNormReluAt(recipeShape) {
  const channels = recipeShape[3];
  const size = tf.util.sizeFromShape(recipeShape);
  const x = tf.tensor4d(Float32Array.from({ length: size }, () => data.normal() * 2 + 0.5), recipeShape);
  const dy = tf.tensor4d(Float32Array.from({ length: size }, () => data.normal()), recipeShape);
  const parameters = {
    gamma: tf.tensor1d(Float32Array.from({ length: channels }, () => 0.5 + data.uniform())),
    beta: tf.tensor1d(Float32Array.from({ length: channels }, () => data.normal())),
    runningMean: tf.variable(tf.zeros([channels]), false),
    runningVariance: tf.variable(tf.ones([channels]), false),
    momentum: 0.1,
    epsilon: 1e-5,
  };
  const fused = () =>
    tf.grads((input, g, b) => tf.sum(tf.mul(batchNormalization(input, { ...parameters, gamma: g, beta: b }, 'train', { relu: true }), dy)))([x, parameters.gamma, parameters.beta]);
  // A residual block's end: the shortcut added before the ReLU, its gradient the fourth.
  const shortcut = tf.tensor4d(Float32Array.from({ length: size }, () => data.normal()), recipeShape);
  const residualLoss = (options) => (input, g, b, added) =>
    tf.sum(tf.mul(batchNormalization(input, { ...parameters, gamma: g, beta: b }, 'train', options(added)), dy));
  const residualFused = () => tf.grads(residualLoss((added) => ({ relu: true, residual: added })))([x, parameters.gamma, parameters.beta, shortcut]);
  const residualAsOps = () =>
    tf.grads((input, g, b, added) => tf.sum(tf.mul(tf.relu(tf.add(batchNormalization(input, { ...parameters, gamma: g, beta: b }, 'train'), added)), dy)))([
      x,
      parameters.gamma,
      parameters.beta,
      shortcut,
    ]);
  return { fused, channelKernels: () => withoutFused(fused), residualFused, residualAsOps };
}
const batchNormBefore = () => tf.grads((x, g, b) => tf.sum(tf.mul(batchNormDifferentiatedByTfjs(x, g, b), upstream)))([input, gamma, beta]);
const maxPoolOurs = () => tf.grads((x) => tf.sum(tf.mul(tf.maxPool(x, 2, 2, 'valid'), pooledUpstream)))([input]);
const maxPoolShipped = () => without(() => unregisterKernels('wasm', [tf.MaxPoolGrad]), () => registerKernels('wasm', [tf.MaxPoolGrad]), maxPoolOurs);
const features = tf.tensor2d(Float32Array.from({ length: 64 * 4096 }, () => data.normal()), [64, 4096]);
const headWeights = tf.tensor2d(Float32Array.from({ length: 4096 * 10 }, () => data.normal() * 0.01), [4096, 10]);
const logitsUpstream = tf.tensor2d(Float32Array.from({ length: 64 * 10 }, () => data.normal()), [64, 10]);
const headOurs = () => tf.grads((x, w) => tf.sum(tf.mul(tf.matMul(x, w), logitsUpstream)))([features, headWeights]);
const headShipped = () => without(() => unregisterKernels('wasm', [tf.BatchMatMul]), () => registerKernels('wasm', [tf.BatchMatMul]), headOurs);

/** Largest |a − b| over each gradient, relative to that gradient's largest |a|. */
function largestRelativeDifference(a, b) {
  return Math.max(...a.map((tensor, index) => tf.tidy(() => tf.max(tf.abs(tf.sub(tensor, b[index]))).dataSync()[0] / tf.max(tf.abs(tensor)).dataSync()[0])));
}

function compare(label, current, candidate) {
  // `current` is TF.js's own (or the previous) way, `candidate` ours.
  const expected = current();
  const actual = candidate();
  const difference = largestRelativeDifference(expected, actual);
  console.log(`${label}: largest difference of the gradients, relative to each one's largest value: ${difference.toExponential(2)}`);
  tf.dispose([expected, actual]);
  const times = { current: [], candidate: [] };
  for (let round = 0; round < rounds; round++) {
    for (const [name, run] of round % 2 ? [['candidate', candidate], ['current', current]] : [['current', current], ['candidate', candidate]]) {
      const start = performance.now();
      const result = run();
      result.forEach((tensor) => tensor.dataSync());
      times[name].push(performance.now() - start);
      tf.dispose(result);
    }
  }
  const currentMs = median(times.current);
  const candidateMs = median(times.candidate);
  console.log(`  current ${currentMs.toFixed(1)} ms, candidate ${candidateMs.toFixed(1)} ms (median of ${rounds}, interleaved): ${(currentMs / candidateMs).toFixed(2)}× faster`);
  return { currentMs: currentMs, candidateMs: candidateMs, relativeDifference: difference };
}

/**
 * wasm's MaxPoolGrad (TF.js 4.22) against the cpu backend's, the reference: the share of input positions
 * whose gradient differs, and of pooling windows whose gradient vanished altogether.
 */
async function checkMaxPoolGradient(checkShape) {
  const [batch, height, width, channels] = checkShape;
  const size = batch * height * width * channels;
  const inputs = Float32Array.from({ length: size }, () => data.normal());
  const weights = Float32Array.from({ length: size / 4 }, () => data.normal());
  const gradientOn = async (backend) => {
    await tf.setBackend(backend);
    return tf.tidy(() =>
      tf.grad((x) => tf.sum(tf.mul(tf.maxPool(x, 2, 2, 'valid'), tf.tensor4d(weights, [batch, height / 2, width / 2, channels]))))(tf.tensor4d(inputs, checkShape)).dataSync(),
    );
  };
  const reference = await gradientOn('cpu');
  unregisterKernels('wasm', [tf.MaxPoolGrad]);
  const wasm = await gradientOn('wasm');
  registerKernels('wasm', [tf.MaxPoolGrad]);
  const loop = await gradientOn('wasm');
  let loopDifference = 0;
  for (let index = 0; index < size; index++) loopDifference = Math.max(loopDifference, Math.abs(loop[index] - reference[index]));
  let differing = 0;
  let largest = 0;
  for (let index = 0; index < size; index++) {
    const difference = Math.abs(wasm[index] - reference[index]);
    if (difference > 1e-6) differing += 1;
    largest = Math.max(largest, difference);
  }
  // Each window's gradient sums to its dy: a window whose wasm gradient sums to 0 lost it.
  let lostWindows = 0;
  for (let b = 0; b < batch; b++)
    for (let row = 0; row < height; row += 2)
      for (let column = 0; column < width; column += 2)
        for (let channel = 0; channel < channels; channel++) {
          let total = 0;
          for (const [dr, dc] of [[0, 0], [0, 1], [1, 0], [1, 1]]) total += wasm[((b * height + row + dr) * width + column + dc) * channels + channel];
          if (total === 0) lostWindows += 1;
        }
  const windows = size / 4;
  console.log(
    `wasm MaxPoolGrad vs cpu on [${checkShape}]: ${differing} of ${size} input gradients differ (largest ${largest.toFixed(3)}); ` +
      `${lostWindows} of ${windows} windows lost their gradient; @regstack/backend's differs from cpu by at most ${loopDifference}`,
  );
  return { shape: checkShape, differing, size, largest, lostWindows, windows, loopDifference };
}

const results = {};
const recipeShapes = [[32, 28, 28, 16], [32, 14, 14, 32], [32, 7, 7, 64], [32, 4, 4, 128]];
for (const recipeShape of recipeShapes) {
  const { residualFused, residualAsOps } = batchNormReluAt(recipeShape);
  results[`batchNormAddRelu ${recipeShape}`] = compare(
    `relu(add(BN(x), shortcut)) [${recipeShape}] (train), forward + backward: the fused kernel, then tf.add and tf.relu (current) vs the residual in the kernel (candidate)`,
    residualAsOps,
    residualFused,
  );
}
if (values.only === 'residual') {
  console.log(JSON.stringify(results));
  process.exit(0);
}
results.maxPoolGradientCheck = [await checkMaxPoolGradient([1, 4, 4, 1]), await checkMaxPoolGradient([64, 32, 32, 32])];
results.batchNormKernels = compare('batch norm [64,32,32,32], forward + backward: tf-op reductions (current) vs the channel-reduction kernels (candidate)', batchNormWithoutKernels, batchNormOurs);
results.batchNormFused = compare('batch norm [64,32,32,32], forward + backward: one op with the channel kernels (current) vs the fused kernel (candidate)', batchNormOurs, batchNormFused);
for (const recipeShape of recipeShapes) {
  const { fused, channelKernels } = batchNormReluAt(recipeShape);
  results[`batchNormRelu ${recipeShape}`] = compare(`batch norm + ReLU [${recipeShape}] (train), forward + backward: the op with the channel kernels and tf.relu (current) vs the fused kernel (candidate)`, channelKernels, fused);
}
results.batchNormBefore = compare('batch norm [64,32,32,32], forward + backward: plain ops differentiated by TF.js (current) vs one op with the kernels (candidate)', batchNormBefore, batchNormOurs);
results.maxPoolGradient = compare("max-pool 2×2 of [64,32,32,32], forward + backward: wasm's MaxPoolGrad (current) vs @regstack/backend's (candidate)", maxPoolShipped, maxPoolOurs);
results.batchMatMul = compare("linear head [64,4096]→10, gradients: wasm's BatchMatMul (current) vs @regstack/backend's (candidate)", headShipped, headOurs);

const model = smallCnn({ mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] });
const optimizer = tf.train.momentum(0.01, 0.9, true);
const batch = {
  inputs: tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 3 }, () => data.uniform()), [64, 32, 32, 3]),
  labels: tf.tensor1d(Int32Array.from({ length: 64 }, () => data.int(10)), 'int32'),
};
const stack = composeRegularizers([]);
const random = new Random(1);
const step = () => {
  const { value, grads } = stack.gradients({ model, batch, random });
  value.dataSync();
  const clipped = clipByGlobalNorm(grads, 1).grads;
  const decayed = addWeightDecay(clipped, model.trainableVariables, 5e-4);
  optimizer.applyGradients(decayed);
  tf.dispose([value, ...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)]);
};
// The stack looks at the backend on its first step (wasm without @regstack/backend's kernels refuses
// a max-pooling model): take that step with every kernel in force, before any is switched off.
step();
/** A whole small-CNN ERM step with `setupA` and with `setupB` in force, interleaved, medians. */
function compareSteps(label, setupA, setupB) {
  const times = { a: [], b: [] };
  const stepRounds = Math.max(3, Math.round(rounds / 2));
  for (const setup of [setupA, setupB]) {
    setup();
    step(); // warm-up
  }
  for (let round = 0; round < stepRounds; round++) {
    for (const [name, setup] of round % 2 ? [['b', setupB], ['a', setupA]] : [['a', setupA], ['b', setupB]]) {
      setup();
      const start = performance.now();
      step();
      times[name].push(performance.now() - start);
    }
  }
  const result = { aMs: median(times.a), bMs: median(times.b) };
  console.log(`small-CNN ERM step, ${label}: ${result.aMs.toFixed(0)} ms vs ${result.bMs.toFixed(0)} ms (median of ${stepRounds}, interleaved): ${(result.aMs / result.bMs).toFixed(2)}×`);
  return result;
}

const everything = () => registerKernels('wasm');
/** Each kernel off alone, then all of them: TF.js's own kernels but for the conv gradients. */
const offs = {
  'fused batch norm': () => unregisterKernels('wasm', BATCH_NORM_KERNEL_NAMES),
  // With the fused kernel off too: the channel reductions serve only the unfused op.
  'channel reductions': () => unregisterKernels('wasm', [...BATCH_NORM_KERNEL_NAMES, ...CHANNEL_REDUCTION_KERNEL_NAMES]),
  Identity: () => unregisterKernels('wasm', [tf.Identity]),
  BatchMatMul: () => unregisterKernels('wasm', [tf.BatchMatMul]),
};
for (const [name, off] of Object.entries(offs)) {
  results[`step without ${name}`] = compareSteps(`without our ${name} vs with every kernel`, () => (everything(), off()), everything);
}
// The shipped MaxPoolGrad loses gradients, so this one compares a wrong step's speed.
results['step without MaxPoolGrad'] = compareSteps("with wasm's (wrong) MaxPoolGrad vs with every kernel", () => (everything(), unregisterKernels('wasm', [tf.MaxPoolGrad])), everything);
results['step without all five'] = compareSteps(
  'without the fused batch norm, the channel reductions, Identity, BatchMatMul and MaxPoolGrad vs with every kernel',
  () => (everything(), Object.values(offs).forEach((off) => off()), unregisterKernels('wasm', [tf.MaxPoolGrad])),
  everything,
);
everything();
console.log(JSON.stringify(results));
