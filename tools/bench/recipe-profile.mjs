#!/usr/bin/env node
// `node tools/bench/recipe-profile.mjs [--rounds 4] [--threads 2]` (after a build):
// where the reference recipe's step (bench model recipe-resnet18-w16: ResNet-18 width 16, 28×28×1,
// batch 32, two-view ERM with standardAugmentation) spends its time, and what a second thread buys
// per convolution. Each round takes one profiled step at 1 thread and one at `threads` (order
// alternating), with every kernel call timed (self time, as kernel-profile.mjs); then the medians:
//
// - the step split into convolutions (per kernel and shape: multiply-adds, ms at 1 and at n threads),
//   the other kernels (per name), small kernels (under 4096 output values: per-call overhead), and the
//   time outside any kernel (engine bookkeeping, tape, the second view's augmentation, glue);
// - the augmentation alone, and a kernel call on a tiny tensor (the fixed cost of one kernel).
//
// `--compare pieces` instead times whole steps with several settings, the order rotated per round:
// `threads` threads with 1 (the default), 2 and 4 claimed pieces of the batch per thread
// (`setPiecesPerThread`), and 1 thread beside them. `--compare cast` times 1-thread steps with
// wasm's shipped `Cast` against ours. `--compare batch-norm` times 1-thread steps with batch norm (and
// the ReLU after it) as the fused `RegstackBatchNorm` kernel and its gradient against the op with the
// channel-reduction kernels and TF.js's elementwise ops (issue 18). `--compare winograd` times steps
// (at 1 thread, or `threads` with `--threads n`) with the stride-1 3×3 convolutions by the direct SIMD
// kernel against Winograd F(2×2, 3×3) (`setWinogradConvolution`); `--compare winograd-filter` the same
// for the stride-1 3×3 filter gradients (`setWinogradFilterGradient`: the direct loop against Winograd
// where it is chosen). `--compare overlap` times `threads`-thread steps with the images copied in while
// the workers run and this thread's outputs copied out while they finish (`setCopyOverlap(true)`, the
// default) against every copy before the workers start and every output after they finish (false), the
// overlap with 2 claimed pieces per thread, and 1 thread beside them. `--compare sub-pixel` times steps at
// 1 and `threads` threads with the strided input gradients as one sub-pixel call of the direct kernels
// (`setSubPixelInputGradient(true)`, the default) against phase convolutions interleaved after (false).
// `--compare minimum-work` times `threads`-thread steps with convolutions shared from 2^23 (the default),
// 2^22, 2^21 and 2^20 multiply-adds up (`setMinimumParallelWork`). Each reports wall time and the process's CPU time (user + system,
// all threads) per step: on a machine loaded by other jobs wall time says little, CPU time more.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import {
  BATCH_NORM_KERNEL_NAMES,
  registerKernels,
  setCopyOverlap,
  setMinimumParallelWork,
  setPiecesPerThread,
  setSubPixelInputGradient,
  setWinogradConvolution,
  setWinogradFilterGradient,
  unregisterKernels,
  useBackend,
} from '@regstack/backend';
import { standardAugmentation } from '@regstack/datasets';
import { Random, addWeightDecay, clipByGlobalNorm, composeRegularizers } from '@regstack/regularizer';
import { resnet18 } from '@regstack/models';
import { MODELS } from './harness.mjs';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '4' },
    threads: { type: 'string', default: '2' },
    variant: { type: 'string', default: 'erm' },
    compare: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const threads = Number(values.threads);
tf.env().set('PROD', true);
await useBackend('wasm');

const spec = MODELS['recipe-resnet18-w16'];
const [height, width, channels] = spec.inputShape;
const batchSize = spec.batchSize;
const model = resnet18({ width: spec.width, inputShape: spec.inputShape, numClasses: spec.numClasses, mean: spec.mean, std: spec.std, seed: 0 });
const optimizer = tf.train.momentum(0.01, 0.9, true);
const dataRandom = new Random(1);
const batch = {
  inputs: tf.tensor4d(Float32Array.from({ length: batchSize * height * width * channels }, () => dataRandom.uniform()), [batchSize, height, width, channels]),
  labels: tf.tensor1d(Int32Array.from({ length: batchSize }, () => dataRandom.int(spec.numClasses)), 'int32'),
};
const { rcad } = await import('@regstack/rcad');
const stack = composeRegularizers(values.variant === 'rcad' ? [rcad()] : []);
const random = new Random(2);
let augmentMs = 0;
const augment = (inputs, generator) => {
  const start = performance.now();
  const result = standardAugmentation(inputs, generator);
  augmentMs += performance.now() - start;
  return result;
};
const step = () => {
  const { value, grads } = stack.gradients({ model, batch, random, baseLoss: 'two-view', augment });
  value.dataSync();
  const clipped = clipByGlobalNorm(grads, 1).grads;
  const decayed = addWeightDecay(clipped, model.trainableVariables, 5e-4);
  optimizer.applyGradients(decayed);
  tf.dispose([value, ...Object.values(grads), ...Object.values(clipped), ...Object.values(decayed)]);
};

/** Multiply-adds of one convolution call, counted as the kernels count them to decide on sharing. */
function convolutionWork(name, parameters, result) {
  const size = (shape) => shape.reduce((product, value) => product * value, 1);
  const { x, dy, filter } = parameters.inputs;
  if (name === tf.Conv2D) return size(result.shape) * filter.shape[0] * filter.shape[1] * filter.shape[2];
  if (name === tf.Conv2DBackpropFilter) {
    const filterShape = parameters.attrs.filterShape;
    return size(dy.shape) * filterShape[0] * filterShape[1] * filterShape[2];
  }
  return size(dy.shape) * filter.shape[0] * filter.shape[1] * filter.shape[2];
}

const CONVOLUTIONS = new Set([tf.Conv2D, tf.Conv2DBackpropFilter, tf.Conv2DBackpropInput]);
const SMALL = 4096;

/** One step with every kernel call timed: self times by convolution (kernel and shapes), by other kernel, small calls, outside. */
function profiledStep() {
  const engine = /** @type {any} */ (tf.engine());
  const original = engine.runKernelFunc;
  const convolutions = new Map();
  const others = new Map();
  const childTime = [];
  let kernelMs = 0;
  let small = { calls: 0, ms: 0 };
  let calls = 0;
  engine.runKernelFunc = function timed(parameters) {
    const name = parameters.kernelName ?? 'custom';
    childTime.push(0);
    const start = performance.now();
    let result;
    try {
      result = original.call(this, parameters);
      return result;
    } finally {
      const elapsed = performance.now() - start;
      const self = elapsed - childTime.pop();
      if (childTime.length > 0) childTime[childTime.length - 1] += elapsed;
      else kernelMs += elapsed;
      calls += 1;
      if (CONVOLUTIONS.has(name) && childTime.length === 0) {
        const inputs = Object.values(parameters.inputs ?? {}).map((tensor) => tensor.shape.join('×'));
        const attributes = parameters.attrs ?? {};
        // A filter gradient's inputs (x, dy) are the same for a 3×3 convolution and the 1×1 shortcut beside it: its filter shape tells them apart.
        const filterShape = attributes.filterShape ? ` → ${attributes.filterShape.join('×')}` : '';
        const key = `${name} ${inputs.join(' ; ')}${filterShape}${attributes.strides ? ` s${[attributes.strides].flat()[0]}` : ''}`;
        const entry = convolutions.get(key) ?? { ms: 0, calls: 0, work: 0 };
        entry.work = convolutionWork(name, parameters, result);
        entry.ms += elapsed;
        entry.calls += 1;
        convolutions.set(key, entry);
      } else if (!CONVOLUTIONS.has(name) && !insideConvolution(childTime.length, parameters)) {
        const entry = others.get(name) ?? { ms: 0, calls: 0 };
        entry.ms += self;
        entry.calls += 1;
        others.set(name, entry);
        const outputs = [result].flat().filter(Boolean);
        const size = outputs.reduce((total, output) => total + (output.size ?? tf.util.sizeFromShape(output.shape ?? [])), 0);
        if (size < SMALL) {
          small.calls += 1;
          small.ms += self;
        }
      }
    }
  };
  // Kernels that run inside a convolution kernel (its copies, transposes) count as that convolution's.
  const stackOfNames = [];
  const wrapped = engine.runKernelFunc;
  engine.runKernelFunc = function tracked(parameters) {
    stackOfNames.push(parameters.kernelName ?? 'custom');
    try {
      return wrapped.call(this, parameters);
    } finally {
      stackOfNames.pop();
    }
  };
  function insideConvolution() {
    return stackOfNames.slice(0, -1).some((name) => CONVOLUTIONS.has(name));
  }
  augmentMs = 0;
  const start = performance.now();
  try {
    step();
  } finally {
    engine.runKernelFunc = original;
  }
  const totalMs = performance.now() - start;
  return { totalMs, kernelMs, outsideMs: totalMs - kernelMs, augmentMs, calls, small, convolutions, others };
}

const median = (list) => {
  const sorted = [...list].sort((a, b) => a - b);
  return sorted.length % 2 ? sorted[sorted.length >> 1] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
};

if (values.compare !== undefined) {
  await compare(values.compare);
  process.exit(0);
}

/** Wall and CPU milliseconds of one step. */
function timedStep() {
  const cpu = process.cpuUsage();
  const start = performance.now();
  step();
  const wallMs = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { wallMs, cpuMs: (used.user + used.system) / 1000 };
}

async function compare(what) {
  // --compare winograd and winograd-filter: 1 thread unless --threads was given.
  const winogradThreads = process.argv.includes('--threads') && threads > 1 ? { threads } : {};
  /** name → async setup before a step of that setting */
  const settings =
    what === 'pieces'
      ? {
          '1 claimed piece per thread (default)': async () => (await useBackend('wasm', { threads }), setPiecesPerThread(1)),
          '2 claimed pieces per thread': async () => (await useBackend('wasm', { threads }), setPiecesPerThread(2)),
          '4 claimed pieces per thread': async () => (await useBackend('wasm', { threads }), setPiecesPerThread(4)),
          '1 thread': async () => useBackend('wasm'),
        }
      : what === 'cast'
        ? { "wasm's Cast": async () => unregisterKernels('wasm', [tf.Cast]), 'our Cast': async () => registerKernels('wasm', [tf.Cast]) }
        : what === 'batch-norm'
          ? {
              'batch norm as an op with the channel kernels': async () => unregisterKernels('wasm', BATCH_NORM_KERNEL_NAMES),
              'fused batch norm kernels': async () => registerKernels('wasm', BATCH_NORM_KERNEL_NAMES),
            }
          : what === 'winograd'
            ? {
                'direct kernel': async () => (await useBackend('wasm', winogradThreads), setWinogradConvolution(false)),
                'Winograd F(2×2, 3×3)': async () => (await useBackend('wasm', winogradThreads), setWinogradConvolution('auto')),
              }
            : what === 'winograd-filter'
              ? {
                  'direct filter gradient': async () => (await useBackend('wasm', winogradThreads), setWinogradFilterGradient(false)),
                  'Winograd filter gradient': async () => (await useBackend('wasm', winogradThreads), setWinogradFilterGradient('auto')),
                }
              : what === 'overlap'
                ? {
                    'copies overlapped with the workers (default)': async () => (await useBackend('wasm', { threads }), setCopyOverlap(true), setPiecesPerThread(1)),
                    'every copy before the workers start': async () => (await useBackend('wasm', { threads }), setCopyOverlap(false), setPiecesPerThread(1)),
                    'overlapped, 2 claimed pieces per thread': async () => (await useBackend('wasm', { threads }), setCopyOverlap(true), setPiecesPerThread(2)),
                    '1 thread': async () => (await useBackend('wasm'), setCopyOverlap(true), setPiecesPerThread(1)),
                  }
                : what === 'sub-pixel'
                  ? {
                      'phase convolutions, 1 thread': async () => (await useBackend('wasm'), setSubPixelInputGradient(false)),
                      'one sub-pixel call, 1 thread': async () => (await useBackend('wasm'), setSubPixelInputGradient(true)),
                      [`phase convolutions, ${threads} threads`]: async () => (await useBackend('wasm', { threads }), setSubPixelInputGradient(false)),
                      [`one sub-pixel call, ${threads} threads`]: async () => (await useBackend('wasm', { threads }), setSubPixelInputGradient(true)),
                    }
                  : what === 'minimum-work'
                    ? Object.fromEntries(
                        [23, 22, 21, 20].map((power) => [`${threads} threads, shared from 2^${power} multiply-adds${power === 23 ? ' (default)' : ''}`, async () => (await useBackend('wasm', { threads }), setMinimumParallelWork(2 ** power))]),
                      )
                    : undefined;
  if (settings === undefined) throw new Error(`--compare: expected pieces, cast, batch-norm, winograd, winograd-filter, overlap, sub-pixel or minimum-work, got '${what}'`);
  const names = Object.keys(settings);
  const times = Object.fromEntries(names.map((name) => [name, []]));
  for (const name of names) {
    await settings[name]();
    step();
  }
  for (let round = 0; round < rounds; round++) {
    const order = [...names.slice(round % names.length), ...names.slice(0, round % names.length)];
    for (const name of order) {
      await settings[name]();
      times[name].push(timedStep());
    }
    console.error(`round ${round + 1}/${rounds}: ${names.map((name) => `${name} ${times[name].at(-1).wallMs.toFixed(0)} ms (cpu ${times[name].at(-1).cpuMs.toFixed(0)})`).join(', ')}`);
  }
  const [reference] = names;
  console.log(`recipe step (${values.variant}, two views, batch ${batchSize}), ${rounds} rounds, order rotated per round; ratios to '${reference}' per round: median [range]`);
  console.log('| setting | wall ms (median) | wall × ' + reference + ' | CPU ms (median) | CPU × ' + reference + ' |');
  console.log('|---|---|---|---|---|');
  const spread = (list) => `${median(list).toFixed(2)}× [${Math.min(...list).toFixed(2)}–${Math.max(...list).toFixed(2)}]`;
  for (const name of names) {
    const wall = times[name].map((time, round) => time.wallMs / times[reference][round].wallMs);
    const cpu = times[name].map((time, round) => time.cpuMs / times[reference][round].cpuMs);
    console.log(`| ${name} | ${median(times[name].map((time) => time.wallMs)).toFixed(0)} | ${spread(wall)} | ${median(times[name].map((time) => time.cpuMs)).toFixed(0)} | ${spread(cpu)} |`);
  }
  setPiecesPerThread(1);
  setCopyOverlap(true);
  setWinogradConvolution('auto');
  setWinogradFilterGradient('auto');
  setSubPixelInputGradient(true);
  setMinimumParallelWork(2 ** 23);
  registerKernels('wasm', [tf.Cast, ...BATCH_NORM_KERNEL_NAMES]);
  await useBackend('wasm');
}

step();
await useBackend('wasm', { threads });
step();
await useBackend('wasm');
const samples = { 1: [], [threads]: [] };
for (let round = 0; round < rounds; round++) {
  for (const count of round % 2 ? [threads, 1] : [1, threads]) {
    await useBackend('wasm', count > 1 ? { threads: count } : {});
    samples[count].push(profiledStep());
  }
  console.error(`round ${round + 1}/${rounds}: 1 thread ${samples[1].at(-1).totalMs.toFixed(0)} ms, ${threads} threads ${samples[threads].at(-1).totalMs.toFixed(0)} ms`);
}
await useBackend('wasm');

// The fixed cost of one kernel: an Add of two 16-value tensors, and the augmentation of a batch alone.
const tinyA = tf.ones([16]);
const tinyB = tf.ones([16]);
const tinyTimes = [];
for (let repeat = 0; repeat < 5; repeat++) {
  const start = performance.now();
  for (let index = 0; index < 1000; index++) tf.add(tinyA, tinyB).dispose();
  tinyTimes.push((performance.now() - start) / 1000);
}
const augmentTimes = [];
for (let repeat = 0; repeat < 9; repeat++) {
  const start = performance.now();
  standardAugmentation(batch.inputs, random).dispose();
  augmentTimes.push(performance.now() - start);
}

const summary = (list) => ({
  totalMs: median(list.map((sample) => sample.totalMs)),
  kernelMs: median(list.map((sample) => sample.kernelMs)),
  outsideMs: median(list.map((sample) => sample.outsideMs)),
  augmentMs: median(list.map((sample) => sample.augmentMs)),
  calls: median(list.map((sample) => sample.calls)),
  smallCalls: median(list.map((sample) => sample.small.calls)),
  smallMs: median(list.map((sample) => sample.small.ms)),
  convolutionMs: median(list.map((sample) => [...sample.convolutions.values()].reduce((total, entry) => total + entry.ms, 0))),
  otherKernelMs: median(list.map((sample) => [...sample.others.values()].reduce((total, entry) => total + entry.ms, 0))),
});
const one = summary(samples[1]);
const many = summary(samples[threads]);
const perRoundSpeedUp = samples[1].map((sample, round) => sample.totalMs / samples[threads][round].totalMs);
console.log(`recipe step (${values.variant}, two views, batch ${batchSize}, 28×28×1), medians of ${rounds} interleaved rounds:`);
console.log('| | 1 thread | ' + threads + ' threads | gain |');
console.log('|---|---|---|---|');
for (const key of ['totalMs', 'convolutionMs', 'otherKernelMs', 'smallMs', 'outsideMs', 'augmentMs']) {
  console.log(`| ${key} | ${one[key].toFixed(1)} | ${many[key].toFixed(1)} | ${(one[key] / many[key]).toFixed(2)}× |`);
}
console.log(`| kernel calls (small: < ${SMALL} values) | ${one.calls} (${one.smallCalls}) | ${many.calls} (${many.smallCalls}) | |`);
console.log(`whole step gain per round: ${perRoundSpeedUp.map((value) => value.toFixed(2)).join(' ')} (median ${median(perRoundSpeedUp).toFixed(2)}×)`);
console.log(`tiny Add (16 values): ${median(tinyTimes).toFixed(4)} ms a call; standardAugmentation of [${batch.inputs.shape}]: ${median(augmentTimes).toFixed(2)} ms`);

console.log('\nconvolutions by kernel and shapes (ms per step, medians):');
console.log('| kernel, input shapes | calls | M multiply-adds a call | 1 thread ms | ' + threads + ' threads ms | gain |');
console.log('|---|---|---|---|---|---|');
const keys = [...samples[1][0].convolutions.keys()];
const rows = keys.map((key) => {
  const ms1 = median(samples[1].map((sample) => sample.convolutions.get(key)?.ms ?? 0));
  const msN = median(samples[threads].map((sample) => sample.convolutions.get(key)?.ms ?? 0));
  const { calls, work } = samples[1][0].convolutions.get(key);
  return { key, calls, work, ms1, msN };
});
rows.sort((x, y) => y.ms1 - x.ms1);
for (const row of rows) {
  console.log(`| ${row.key} | ${row.calls} | ${(row.work / 1e6).toFixed(1)} | ${row.ms1.toFixed(1)} | ${row.msN.toFixed(1)} | ${(row.ms1 / row.msN).toFixed(2)}× |`);
}
console.log('\nother kernels (self ms per step, medians, top 12):');
const otherNames = [...samples[1][0].others.keys()];
const otherRows = otherNames
  .map((name) => ({ name, calls: samples[1][0].others.get(name).calls, ms1: median(samples[1].map((sample) => sample.others.get(name)?.ms ?? 0)), msN: median(samples[threads].map((sample) => sample.others.get(name)?.ms ?? 0)) }))
  .sort((x, y) => y.ms1 - x.ms1)
  .slice(0, 12);
console.log('| kernel | calls | 1 thread ms | ' + threads + ' threads ms |');
console.log('|---|---|---|---|');
for (const row of otherRows) console.log(`| ${row.name} | ${row.calls} | ${row.ms1.toFixed(1)} | ${row.msN.toFixed(1)} |`);
