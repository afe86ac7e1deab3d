#!/usr/bin/env node
// `npm run bench [-- options]`: training-step time of ERM, every regularizer plugin and a few stacks on
// the default backend (wasm), beside PyTorch-CPU on the same machine. Prints markdown tables and writes
// tools/bench/results/bench-<time>.json (and latest.json).
//
//   --quick                 a third of the rounds, one warm-up step
//   --models a,b            from: small-cnn, layers-cnn (the small CNN as a tf.LayersModel), resnet18-w16,
//                           recipe-resnet18-w16 (the reference recipe: 28×28×1, batch 32, two views; ERM,
//                           RCAD, RCAD + label smoothing) (default all)
//   --variants a,b          from harness.mjs VARIANTS (default all; erm is always included)
//   --rounds-scale x        multiply every model's rounds
//   --batch n               batch size (default 64; the recipe keeps its 32)
//   --threads 1,2           our thread counts (default 1,2; k > 1 times ERM and RCAD with k − 1
//                           convolution worker threads, beside PyTorch at k threads)
//   --no-torch              skip PyTorch
//   --no-relaxed-simd       our convolutions with the separate SIMD multiply and add (useBackend's relaxedSimd: false)
//   --python path           Python with torch (default /usr/bin/python3)
//   --output file           JSON path (default tools/bench/results/bench-<time>.json)
//
// The full run took about 9 minutes on the idle 2-core VM (13 at a load of 4–7 from other jobs) before
// layers-cnn, which adds about a third (its steps are slower than the small CNN's; no PyTorch twin).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { MODELS, VARIANTS, formatReport, runBenchmark } from './harness.mjs';

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    models: { type: 'string' },
    variants: { type: 'string' },
    'rounds-scale': { type: 'string' },
    batch: { type: 'string' },
    threads: { type: 'string' },
    'no-torch': { type: 'boolean', default: false },
    'no-relaxed-simd': { type: 'boolean', default: false },
    python: { type: 'string' },
    output: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log(`npm run bench -- [--quick] [--models ${Object.keys(MODELS).join(',')}] [--variants ${Object.keys(VARIANTS).join(',')}]\n` +
    '                    [--rounds-scale x] [--batch n] [--threads 1,2] [--no-torch] [--no-relaxed-simd] [--python path] [--output file]');
  process.exit(0);
}

function list(value, known, what) {
  if (value === undefined) return Object.keys(known);
  const names = value.split(',').map((name) => name.trim()).filter(Boolean);
  for (const name of names) {
    if (!(name in known)) {
      console.error(`unknown ${what} '${name}'; known: ${Object.keys(known).join(', ')}`);
      process.exit(2);
    }
  }
  return names;
}

function positive(value, fallback, what) {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!(number > 0)) {
    console.error(`--${what} expects a positive number, got '${value}'`);
    process.exit(2);
  }
  return number;
}

function threadCounts(value) {
  if (value === undefined) return [1, 2];
  const counts = value.split(',').map((part) => Number(part.trim()));
  if (counts.some((count) => !Number.isInteger(count) || count < 1)) {
    console.error(`--threads expects positive integers separated by commas, got '${value}'`);
    process.exit(2);
  }
  return counts;
}

// TF.js's one-time "install tfjs-node" notice is noise here.
tf.env().set('PROD', true);

const report = await runBenchmark({
  models: list(values.models, MODELS, 'model').map((name) => MODELS[name]),
  variants: list(values.variants, VARIANTS, 'variant'),
  batchSize: Math.round(positive(values.batch, 64, 'batch')),
  threads: threadCounts(values.threads),
  warmup: values.quick ? 1 : 2,
  roundsScale: positive(values['rounds-scale'], values.quick ? 1 / 3 : 1, 'rounds-scale'),
  relaxedSimd: !values['no-relaxed-simd'],
  torch: values['no-torch'] ? false : { ...(values.python ? { python: values.python } : {}), stepsPerRound: values.quick ? 3 : 2 },
  log: (line) => console.error(`[bench] ${line}`),
});

console.log(formatReport(report));
const resultsDirectory = fileURLToPath(new URL('./results/', import.meta.url));
const output = values.output ?? `${resultsDirectory}bench-${report.createdAt.replace(/[:.]/g, '-')}.json`;
mkdirSync(dirname(output), { recursive: true });
const json = `${JSON.stringify(report, null, 2)}\n`;
writeFileSync(output, json);
if (values.output === undefined) writeFileSync(`${resultsDirectory}latest.json`, json);
console.error(`[bench] wrote ${output}`);
