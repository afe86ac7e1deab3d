#!/usr/bin/env node
// Rebuilds data/fashion-mnist-subset.json, the class-balanced Fashion-MNIST subset shipped
// inside the package, from the official IDX files.
//
//   node scripts/build-embedded.mjs [directory] [--train-per-class 200] [--test-per-class 100]
//
// The directory defaults to Debian's `dataset-fashion-mnist` location. The subset is the first
// N images of each class in file order: deterministic, and reproducible by anyone with the files.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

const DEBIAN_DIRECTORY = '/usr/share/datasets/fashion-mnist';
const argumentsList = process.argv.slice(2);
const option = (name, fallback) => {
  const position = argumentsList.indexOf(name);
  if (position < 0) return fallback;
  const [value] = argumentsList.splice(position, 2).slice(1);
  return Number.parseInt(value, 10);
};
const trainPerClass = option('--train-per-class', 200);
const testPerClass = option('--test-per-class', 100);
const directory = argumentsList[0] ?? DEBIAN_DIRECTORY;

function readIdx(stem) {
  for (const name of [`${stem}.gz`, stem]) {
    const path = join(directory, name);
    if (!existsSync(path)) continue;
    const raw = readFileSync(path);
    const bytes = raw[0] === 0x1f && raw[1] === 0x8b ? gunzipSync(raw) : raw;
    if (bytes[0] !== 0 || bytes[1] !== 0 || bytes[2] !== 8) throw new Error(`${path}: not an unsigned-byte IDX file`);
    const rank = bytes[3];
    const dimensions = Array.from({ length: rank }, (_, axis) => bytes.readUInt32BE(4 + 4 * axis));
    const data = bytes.subarray(4 + 4 * rank);
    if (data.length !== dimensions.reduce((product, size) => product * size, 1)) throw new Error(`${path}: truncated`);
    return { dimensions, data, sha256: createHash('sha256').update(bytes).digest('hex') };
  }
  throw new Error(`${stem}(.gz) not found in ${directory}: install Debian's dataset-fashion-mnist or pass the directory`);
}

function pick(split, perClass) {
  const images = readIdx(`${split}-images-idx3-ubyte`);
  const labels = readIdx(`${split}-labels-idx1-ubyte`);
  const imageBytes = images.dimensions[1] * images.dimensions[2];
  const taken = new Array(10).fill(0);
  const chosen = [];
  for (let index = 0; index < labels.data.length && chosen.length < 10 * perClass; index++) {
    const label = labels.data[index];
    if (taken[label] < perClass) {
      taken[label]++;
      chosen.push(index);
    }
  }
  if (chosen.length !== 10 * perClass) throw new Error(`${split}: not enough images for ${perClass} per class`);
  const pixels = Buffer.alloc(chosen.length * imageBytes);
  const chosenLabels = Buffer.alloc(chosen.length);
  chosen.forEach((index, position) => {
    images.data.copy(pixels, position * imageBytes, index * imageBytes, (index + 1) * imageBytes);
    chosenLabels[position] = labels.data[index];
  });
  return { pixels, labels: chosenLabels, sourceSha256: { images: images.sha256, labels: labels.sha256 } };
}

const train = pick('train', trainPerClass);
const test = pick('t10k', testPerClass);
// Long base64 strings are cut into lines (joined on load) so that diffs and editors stay usable.
const lines = (buffer) => {
  const text = buffer.toString('base64');
  const cut = [];
  for (let start = 0; start < text.length; start += 100) cut.push(text.slice(start, start + 100));
  return cut;
};
const source = {
  selection: 'the first N images of each class, in file order',
  trainPerClass,
  testPerClass,
  imageShape: [28, 28, 1],
  sourceSha256: {
    trainImages: train.sourceSha256.images,
    trainLabels: train.sourceSha256.labels,
    testImages: test.sourceSha256.images,
    testLabels: test.sourceSha256.labels,
  },
};
const fields = {
  trainImagesBase64: lines(train.pixels),
  trainLabelsBase64: lines(train.labels),
  testImagesBase64: lines(test.pixels),
  testLabelsBase64: lines(test.labels),
};
// JSON, not a module: Node (ESM and CommonJS) and every bundler load it without a build step, so the
// package ships it once for both module formats. One base64 line per JSON line.
const text = [
  '{',
  `  "generatedBy": "scripts/build-embedded.mjs from the official Fashion-MNIST IDX files; do not edit. Fashion-MNIST is Copyright (c) 2017 Zalando SE, MIT licence: see FASHION-MNIST-LICENSE beside this file.",`,
  `  "source": ${JSON.stringify(source)},`,
  Object.entries(fields)
    .map(([name, values]) => `  ${JSON.stringify(name)}: [\n${values.map((line) => `    ${JSON.stringify(line)}`).join(',\n')}\n  ]`)
    .join(',\n'),
  '}',
  '',
].join('\n');
const target = new URL('../data/fashion-mnist-subset.json', import.meta.url);
writeFileSync(target, text);
console.log(`wrote ${target.pathname}: ${10 * trainPerClass} train + ${10 * testPerClass} test images, ${text.length} characters`);
