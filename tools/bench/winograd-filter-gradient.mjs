#!/usr/bin/env node
// `node tools/bench/winograd-filter-gradient.mjs [--calls 20] [--threads 1]` (after a build): one
// stride-1 3×3 filter gradient per geometry (the reference recipe's four layers, and the cases that
// decide `setWinogradFilterGradient('auto')`'s routing) by the direct SIMD loop and by Winograd
// F(2×2, 3×3), the two interleaved call by call (`conv2dFilterGradient` on wasm, as its kernel runs
// it); prints each one's minimum and median ms, their ratio, and which one 'auto' takes.
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { conv2dFilterGradient, setWinogradFilterGradient, useBackend } from '@regstack/backend';

const { values } = parseArgs({ options: { calls: { type: 'string', default: '20' }, threads: { type: 'string', default: '1' } } });
const calls = Number(values.calls);
await useBackend('wasm', { threads: Number(values.threads) });

/** [batch, side, input channels, output channels]. */
const GEOMETRIES = [
  [32, 28, 16, 16],
  [32, 14, 32, 32],
  [32, 7, 64, 64],
  [32, 4, 128, 128],
  [32, 2, 128, 128],
  [32, 3, 64, 64],
  [32, 1, 128, 128],
  [32, 28, 4, 4],
  [32, 28, 8, 8],
  [32, 28, 4, 16],
  [32, 5, 8, 8],
  [1, 7, 64, 64],
];

const median = (list) => [...list].sort((a, b) => a - b)[list.length >> 1];
console.log(`stride-1 3×3 filter gradients on wasm, ${values.threads} thread(s), ${calls} interleaved calls each`);
console.log('| x → channels | direct min / median ms | Winograd min / median ms | direct ÷ Winograd (min) | auto takes |');
console.log('|---|---|---|---|---|');
for (const [batch, side, inChannels, outChannels] of GEOMETRIES) {
  const x = tf.randomUniform([batch, side, side, inChannels], -0.5, 0.5, 'float32', 1);
  const dy = tf.randomUniform([batch, side, side, outChannels], -0.5, 0.5, 'float32', 2);
  const filterShape = [3, 3, inChannels, outChannels];
  const time = () => {
    const start = performance.now();
    tf.dispose(conv2dFilterGradient(x, dy, filterShape, { strides: 1, pad: 'same' }));
    return performance.now() - start;
  };
  const direct = [];
  const winograd = [];
  for (let call = -2; call < calls; call++) {
    setWinogradFilterGradient(false);
    const a = time();
    setWinogradFilterGradient(true);
    const b = time();
    if (call >= 0) direct.push(a), winograd.push(b);
  }
  // Which one the default takes: the same dW, bit for bit, as one of the two.
  setWinogradFilterGradient('auto');
  const routed = conv2dFilterGradient(x, dy, filterShape, { strides: 1, pad: 'same' });
  setWinogradFilterGradient(true);
  const byWinograd = conv2dFilterGradient(x, dy, filterShape, { strides: 1, pad: 'same' });
  const same = tf.util.arraysEqual(routed.dataSync(), byWinograd.dataSync());
  tf.dispose([routed, byWinograd, x, dy]);
  setWinogradFilterGradient('auto');
  const ms = (list) => `${Math.min(...list).toFixed(3)} / ${median(list).toFixed(3)}`;
  console.log(
    `| ${batch} × ${side}×${side}×${inChannels} → ${outChannels} | ${ms(direct)} | ${ms(winograd)} | ${(Math.min(...direct) / Math.min(...winograd)).toFixed(2)}× | ${same ? 'Winograd' : 'direct'} |`,
  );
}
await useBackend('wasm');
