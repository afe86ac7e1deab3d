#!/usr/bin/env node
// `node tools/bench/threads.mjs [--model small-cnn|resnet18-w16] [--threads 2] [--rounds 6]` (after a
// build): whole ERM steps of a benchmark model at one thread and with convolution worker threads
// (`useBackend('wasm', { threads })`), alternating two steps of each per round, then a run of steps
// with the workers on throughout. Prints each step's milliseconds and the medians.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { Random, composeRegularizers } from '@regstack/regularizer';
import { resnet18, smallCnn } from '@regstack/models';

const { values } = parseArgs({
  options: { model: { type: 'string', default: 'resnet18-w16' }, threads: { type: 'string', default: '2' }, rounds: { type: 'string', default: '6' } },
});
const threads = Number(values.threads);
const rounds = Number(values.rounds);
tf.env().set('PROD', true);
await useBackend('wasm');
const options = { inputShape: [32, 32, 3], numClasses: 10, seed: 0 };
const model = values.model === 'small-cnn' ? smallCnn({ ...options, width: 32 }) : resnet18({ ...options, width: 16 });
const optimizer = tf.train.momentum(0.01, 0.9, true);
const random = new Random(1);
const batch = {
  inputs: tf.randomUniform([64, 32, 32, 3], 0, 1, 'float32', 2),
  labels: tf.tensor1d(Int32Array.from({ length: 64 }, () => random.int(10)), 'int32'),
};
const stack = composeRegularizers([]);
const step = () => {
  const start = performance.now();
  const { value, grads } = stack.gradients({ model, batch, random });
  value.dataSync();
  optimizer.applyGradients(grads);
  tf.dispose([value, ...Object.values(grads)]);
  return performance.now() - start;
};
const median = (list) => [...list].sort((a, b) => a - b)[list.length >> 1];
step();
const alternating = { one: [], many: [] };
for (let round = 0; round < rounds; round++) {
  await useBackend('wasm');
  alternating.one.push(step(), step());
  await useBackend('wasm', { threads });
  alternating.many.push(step(), step());
}
const continuous = Array.from({ length: 2 * rounds }, step);
await useBackend('wasm');
const show = (list) => list.map((ms) => ms.toFixed(0)).join(' ');
console.log(`${values.model}, batch 64, ERM steps (ms)`);
console.log(`1 thread, alternating:        ${show(alternating.one)} (median ${median(alternating.one).toFixed(0)})`);
console.log(`${threads} threads, alternating:      ${show(alternating.many)} (median ${median(alternating.many).toFixed(0)})`);
console.log(`${threads} threads, continuously:     ${show(continuous)} (median ${median(continuous).toFixed(0)})`);
