#!/usr/bin/env node
// `node tools/bench/layers.mjs [--rounds n]` (after a build): candidate speed-ups for the hot spots the
// step profile shows on wasm, each timed against what the packages do now, interleaved, on the small
// CNN's first-stage activation [64, 32, 32, 32] (NHWC), forward + backward. Each candidate is checked
// against the current computation first (largest absolute difference printed), then timed.
//
// - batch norm: @regstack/models' batchNormalization (tfjs ops; wasm's Mean/Sum transpose the whole
//   activation to reduce over the non-innermost axes, and the broadcast Mul/Add gradients sum the same
//   way) against one tf.customGrad whose four reductions are [1, N·H·W] × [N·H·W, C] matMuls;
// - max-pool 2×2: tf.maxPool's MaxPoolGrad kernel against customGrads whose backward routes dy to the
//   window maxima through an equality mask (tf ops; ties share dy) or a JavaScript loop (first maximum,
//   as the cpu backend);
// - MaxPoolGrad correctness: wasm's kernel against the cpu backend's (it drops some windows' gradients),
//   and @regstack/backend's MaxPoolGrad (registered by useBackend since this was found) against both;
// - Identity: the wasm Identity kernel copies the tensor (TF.js clones every tensor it saves for the
//   backward pass); a zero-copy Identity that shares the data as wasm's Reshape already does.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import { registerMaxPoolGradientKernel, unregisterMaxPoolGradientKernel, useBackend } from '@regstack/backend';
import { Random, addWeightDecay, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { batchNormalization, smallCnn } from '@regstack/models';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '15' } } });
const rounds = Number(values.rounds);
tf.env().set('PROD', true);
await useBackend('wasm');
// useBackend registers @regstack/backend's MaxPoolGrad on wasm: the "current" measurements below use the
// shipped one, and @regstack/backend's is a candidate.
unregisterMaxPoolGradientKernel(['wasm']);
/** Runs `run` with @regstack/backend's MaxPoolGrad registered on wasm, then restores the shipped one. */
function withOurMaxPoolGradient(run) {
  registerMaxPoolGradientKernel(['wasm']);
  try {
    return run();
  } finally {
    unregisterMaxPoolGradientKernel(['wasm']);
  }
}

const median = (list) => {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
};

/** Batch norm whose reductions are matMuls with a ones row, with the analytic backward pass. */
export function batchNormMatMul(x, gamma, beta, epsilon = 1e-5) {
  const channels = x.shape.at(-1);
  const count = x.size / channels;
  const normalize = tf.customGrad((input, scaleParameter, shiftParameter, save) => {
    const flat = tf.reshape(input, [count, channels]);
    const ones = tf.ones([1, count]);
    const mean = tf.div(tf.matMul(ones, flat), count);
    const variance = tf.relu(tf.sub(tf.div(tf.matMul(ones, tf.square(flat)), count), tf.square(mean)));
    const inverseStd = tf.rsqrt(tf.add(variance, epsilon));
    const scale = tf.mul(scaleParameter, inverseStd);
    const value = tf.reshape(tf.add(tf.mul(flat, scale), tf.sub(shiftParameter, tf.mul(mean, scale))), input.shape);
    save([flat, mean, inverseStd, scale]);
    return {
      value,
      gradFunc: (dy, [savedFlat, savedMean, savedInverseStd, savedScale]) => {
        const dyFlat = tf.reshape(dy, [count, channels]);
        const onesRow = tf.ones([1, count]);
        const normalized = tf.mul(tf.sub(savedFlat, savedMean), savedInverseStd);
        const shiftGradient = tf.matMul(onesRow, dyFlat);
        const scaleGradient = tf.matMul(onesRow, tf.mul(dyFlat, normalized));
        // dx = γ/σ · (dy − mean(dy) − x̂·mean(dy·x̂))
        const centred = tf.sub(tf.sub(dyFlat, tf.div(shiftGradient, count)), tf.mul(normalized, tf.div(scaleGradient, count)));
        return [tf.reshape(tf.mul(centred, savedScale), dy.shape), tf.reshape(scaleGradient, [channels]), tf.reshape(shiftGradient, [channels])];
      },
    };
  });
  return normalize(x, gamma, beta);
}

/** 2×2 max-pool (stride 2, even sizes) whose gradient is an equality mask instead of MaxPoolGrad. */
export function maxPoolMask(x) {
  const [batch, height, width, channels] = x.shape;
  const pool = tf.customGrad((input, save) => {
    const value = tf.maxPool(input, 2, 2, 'valid');
    save([input, value]);
    return {
      value,
      gradFunc: (dy, [savedInput, savedValue]) => {
        const upsample = (t) =>
          tf.reshape(tf.tile(tf.reshape(t, [batch, height / 2, 1, width / 2, 1, channels]), [1, 1, 2, 1, 2, 1]), [batch, height, width, channels]);
        return tf.mul(upsample(dy), tf.cast(tf.equal(savedInput, upsample(savedValue)), 'float32'));
      },
    };
  });
  return pool(x);
}

/**
 * 2×2 max-pool (stride 2, even sizes) whose gradient is a JavaScript loop over the windows: dy goes to
 * the first maximum of each window, as the cpu backend's MaxPoolGrad does.
 */
export function maxPoolLoop(x) {
  const [batch, height, width, channels] = x.shape;
  const pool = tf.customGrad((input, save) => {
    const value = tf.maxPool(input, 2, 2, 'valid');
    save([input]);
    return {
      value,
      gradFunc: (dy, [savedInput]) => {
        const values = savedInput.dataSync();
        const upstreamValues = dy.dataSync();
        const gradient = new Float32Array(values.length);
        const rowStride = width * channels;
        let out = 0;
        for (let b = 0; b < batch; b++) {
          for (let row = 0; row < height; row += 2) {
            for (let column = 0; column < width; column += 2) {
              const corner = ((b * height + row) * width + column) * channels;
              for (let channel = 0; channel < channels; channel++, out++) {
                let best = corner + channel;
                for (const offset of [channels, rowStride, rowStride + channels]) {
                  if (values[corner + channel + offset] > values[best]) best = corner + channel + offset;
                }
                gradient[best] += upstreamValues[out];
              }
            }
          }
        }
        return tf.tensor4d(gradient, savedInput.shape);
      },
    };
  });
  return pool(x);
}

const shape = [64, 32, 32, 32];
const data = new Random(5);
const input = tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 32 }, () => data.normal() * 2 + 0.5), shape);
const upstream = tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 32 }, () => data.normal()), shape);
const pooledUpstream = tf.tensor4d(Float32Array.from({ length: 64 * 16 * 16 * 32 }, () => data.normal()), [64, 16, 16, 32]);
const gamma = tf.tensor1d(Float32Array.from({ length: 32 }, () => 0.5 + data.uniform()));
const beta = tf.tensor1d(Float32Array.from({ length: 32 }, () => data.normal()));
const running = { runningMean: tf.variable(tf.zeros([32]), false), runningVariance: tf.variable(tf.ones([32]), false) };

const batchNormCurrent = () =>
  tf.grads((x, g, b) => tf.sum(tf.mul(batchNormalization(x, { gamma: g, beta: b, ...running, momentum: 0.1, epsilon: 1e-5 }, 'frozen-stats'), upstream)))([input, gamma, beta]);
const batchNormCandidate = () => tf.grads((x, g, b) => tf.sum(tf.mul(batchNormMatMul(x, g, b), upstream)))([input, gamma, beta]);
const maxPoolCurrent = () => tf.grads((x) => tf.sum(tf.mul(tf.maxPool(x, 2, 2, 'valid'), pooledUpstream)))([input]);
const maxPoolCandidate = () => tf.grads((x) => tf.sum(tf.mul(maxPoolMask(x), pooledUpstream)))([input]);
const maxPoolLoopCandidate = () => tf.grads((x) => tf.sum(tf.mul(maxPoolLoop(x), pooledUpstream)))([input]);
const maxPoolKernelCandidate = () => withOurMaxPoolGradient(maxPoolCurrent);

/** Largest |a − b| over each gradient, relative to that gradient's largest |a|. */
function largestRelativeDifference(a, b) {
  return Math.max(...a.map((tensor, index) => tf.tidy(() => tf.max(tf.abs(tf.sub(tensor, b[index]))).dataSync()[0] / tf.max(tf.abs(tensor)).dataSync()[0])));
}

function compare(label, current, candidate) {
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
  const wasm = await gradientOn('wasm');
  const loop = tf.tidy(() =>
    tf.grad((x) => tf.sum(tf.mul(maxPoolLoop(x), tf.tensor4d(weights, [batch, height / 2, width / 2, channels]))))(tf.tensor4d(inputs, checkShape)).dataSync(),
  );
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
      `${lostWindows} of ${windows} windows lost their gradient; the JavaScript-loop gradient differs from cpu by at most ${loopDifference}`,
  );
  return { shape: checkShape, differing, size, largest, lostWindows, windows, loopDifference };
}

const results = {};
results.maxPoolGradientCheck = [await checkMaxPoolGradient([1, 4, 4, 1]), await checkMaxPoolGradient([64, 32, 32, 32])];
results.batchNorm = compare('batch norm [64,32,32,32], forward + backward', batchNormCurrent, batchNormCandidate);
// Against wasm's MaxPoolGrad the differences are that kernel's lost windows (see the check above).
results.maxPoolMask = compare('max-pool 2×2 of [64,32,32,32], forward + backward, equality mask', maxPoolCurrent, maxPoolCandidate);
results.maxPoolLoop = compare('max-pool 2×2 of [64,32,32,32], forward + backward, JavaScript loop', maxPoolCurrent, maxPoolLoopCandidate);
results.maxPoolLoopVersusMask = compare('max-pool loop (current) vs equality mask (candidate): the same gradient?', maxPoolLoopCandidate, maxPoolCandidate);
results.maxPoolKernel = compare("max-pool 2×2 of [64,32,32,32], forward + backward, @regstack/backend's MaxPoolGrad", maxPoolCurrent, maxPoolKernelCandidate);
results.maxPoolKernelVersusLoop = compare("max-pool: @regstack/backend's MaxPoolGrad (current) vs the loop (candidate): the same gradient?", maxPoolKernelCandidate, maxPoolLoopCandidate);

// A zero-copy Identity for wasm, toggled per round, on a whole small-CNN ERM step.
const shippedIdentity = tf.getKernel('Identity', 'wasm');
const zeroCopyIdentity = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: ({ inputs: { x }, backend }) => {
    backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  },
};
const useIdentity = (config) => {
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel(config);
};
const model = smallCnn({ mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] });
const optimizer = tf.train.momentum(0.01, 0.9, true);
const batch = {
  inputs: tf.tensor4d(Float32Array.from({ length: 64 * 32 * 32 * 3 }, () => data.uniform()), [64, 32, 32, 3]),
  labels: tf.tensor1d(Int32Array.from({ length: 64 }, () => data.int(10)), 'int32'),
};
const stack = composeRegularizers([]);
const random = new Random(1);
const step = () => {
  const prepared = stack.prepare({ model, batch, random });
  const { value, grads } = prepared.gradients();
  value.dataSync();
  const clipped = clipByGlobalNorm(grads, 1).grads;
  const decayed = addWeightDecay(clipped, model.trainableVariables, 5e-4);
  optimizer.applyGradients(decayed);
  tf.dispose([value, ...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)]);
  prepared.dispose();
};
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
  console.log(`small-CNN ERM step, ${label}: ${result.aMs.toFixed(0)} ms vs ${result.bMs.toFixed(0)} ms (median of ${stepRounds}, interleaved)`);
  return result;
}

results.identity = compareSteps("wasm's Identity vs zero-copy Identity", () => useIdentity(shippedIdentity), () => useIdentity(zeroCopyIdentity));
useIdentity(shippedIdentity);
results.maxPoolGradientStep = compareSteps(
  "wasm's MaxPoolGrad vs @regstack/backend's",
  () => unregisterMaxPoolGradientKernel(['wasm']),
  () => registerMaxPoolGradientKernel(['wasm']),
);
unregisterMaxPoolGradientKernel(['wasm']);
console.log(JSON.stringify(results));
