#!/usr/bin/env node
// `node tools/bench/conv-layers.mjs [--model small-cnn|resnet18-w16] [--batch 64]` (after a build): the
// time of each distinct convolution of a benchmark model on wasm (one thread), forward and both
// gradients (@regstack/backend's functions, as its kernels run them), medians of 7 after a warm-up,
// with the forward pass's GFLOP/s and totals weighted by how often the layer occurs.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { conv2dFilterGradient, conv2dInputGradient, useBackend } from '@regstack/backend';

const { values } = parseArgs({ options: { model: { type: 'string', default: 'resnet18-w16' }, batch: { type: 'string', default: '64' } } });
/** [input size, in channels, out channels, kernel, stride, occurrences, needs the input gradient]. */
const LAYERS = {
  'small-cnn': [
    [32, 3, 32, 3, 1, 1, false],
    [32, 32, 32, 3, 1, 1, true],
    [16, 32, 64, 3, 1, 1, true],
    [16, 64, 64, 3, 1, 1, true],
  ],
  'resnet18-w16': [
    [32, 3, 16, 3, 1, 1, false],
    [32, 16, 16, 3, 1, 4, true],
    [32, 16, 32, 3, 2, 1, true],
    [16, 32, 32, 3, 1, 3, true],
    [32, 16, 32, 1, 2, 1, true],
    [16, 32, 64, 3, 2, 1, true],
    [8, 64, 64, 3, 1, 3, true],
    [16, 32, 64, 1, 2, 1, true],
    [8, 64, 128, 3, 2, 1, true],
    [4, 128, 128, 3, 1, 3, true],
    [8, 64, 128, 1, 2, 1, true],
  ],
};
const layers = LAYERS[values.model];
if (!layers) {
  console.error(`unknown --model '${values.model}'; known: ${Object.keys(LAYERS).join(', ')}`);
  process.exit(2);
}
const batch = Number(values.batch);
tf.env().set('PROD', true);
await useBackend('wasm');

function median(run, repeats = 7) {
  tf.dispose(run());
  const times = [];
  for (let index = 0; index < repeats; index++) {
    const start = performance.now();
    tf.dispose(run());
    times.push(performance.now() - start);
  }
  return times.sort((a, b) => a - b)[repeats >> 1];
}

const totals = { forward: 0, filter: 0, input: 0 };
console.log(`${values.model}, batch ${batch}, wasm (1 thread): milliseconds per call`);
console.log('| layer | × | forward | GFLOP/s | filter gradient | input gradient |');
console.log('|---|---|---|---|---|---|');
for (const [size, inChannels, outChannels, kernel, stride, count, inputGradient] of layers) {
  const x = tf.randomNormal([batch, size, size, inChannels]);
  const filter = tf.randomNormal([kernel, kernel, inChannels, outChannels]);
  const y = tf.conv2d(x, filter, stride, 'same');
  const dy = tf.randomNormal(y.shape);
  const attributes = { strides: stride, pad: 'same' };
  const forward = median(() => tf.conv2d(x, filter, stride, 'same'));
  // A fresh dy per call, as in training (the convolution packs its "filter" again every time).
  const filterGradient = median(() => tf.tidy(() => conv2dFilterGradient(x, tf.add(dy, 0), [kernel, kernel, inChannels, outChannels], attributes)));
  const input = inputGradient ? median(() => conv2dInputGradient([batch, size, size, inChannels], dy, filter, attributes)) : 0;
  totals.forward += forward * count;
  totals.filter += filterGradient * count;
  totals.input += input * count;
  const gflops = (2 * y.size * kernel * kernel * inChannels) / forward / 1e6;
  console.log(
    `| ${size}×${size}×${inChannels} → ${outChannels}, ${kernel}×${kernel} stride ${stride} | ${count} | ${forward.toFixed(1)} | ${gflops.toFixed(1)} | ` +
      `${filterGradient.toFixed(1)} | ${inputGradient ? input.toFixed(1) : '—'} |`,
  );
  tf.dispose([x, filter, y, dy]);
}
console.log(`| total (× occurrences) | | ${totals.forward.toFixed(0)} | | ${totals.filter.toFixed(0)} | ${totals.input.toFixed(0)} |`);
