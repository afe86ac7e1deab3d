import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { build } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { loadEmbeddedFashionMnist } from './embedded.js';
import { channelStatistics } from './normalization.js';

describe('loadEmbeddedFashionMnist', () => {
  it('holds 200 training and 100 test images per class', () => {
    const { train, validation, test, info } = loadEmbeddedFashionMnist({ validationFraction: 0 });
    expect(train.size).toBe(2000);
    expect(validation.size).toBe(0);
    expect(Array.from(train.classCounts())).toEqual(new Array(10).fill(200));
    expect(Array.from(test.classCounts())).toEqual(new Array(10).fill(100));
    expect(info.license).toMatch(/MIT.*Zalando SE/);
    // The subset's pixel statistics sit near the full training set's (0.2860, 0.3530).
    const { mean, std } = channelStatistics(train.images, 1, 255);
    expect(Math.abs(mean[0]! - 0.286)).toBeLessThan(0.02);
    expect(Math.abs(std[0]! - 0.353)).toBeLessThan(0.02);
  });

  it('holds out a seeded 10% by default and batches to [0, 1]', () => {
    const { train, validation } = loadEmbeddedFashionMnist();
    expect([train.size, validation.size]).toEqual([1800, 200]);
    const { inputs, labels } = train.batch([0, 1, 2]);
    expect(inputs.shape).toEqual([3, 28, 28, 1]);
    const values = inputs.dataSync();
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThanOrEqual(1);
    expect(Math.max(...values)).toBeGreaterThan(0.5);
    tf.dispose([inputs, labels]);
    expect(Array.from(loadEmbeddedFashionMnist({ seed: 1 }).validation.labels)).not.toEqual(Array.from(validation.labels));
  });
});

describe('browser safety', () => {
  it('bundles the main entry for the browser without any Node module', async () => {
    const result = await build({
      entryPoints: [fileURLToPath(new URL('./index.ts', import.meta.url))],
      bundle: true,
      write: false,
      platform: 'browser',
      format: 'esm',
      conditions: ['@regstack/source'],
      external: ['@tensorflow/tfjs-core'],
      logLevel: 'silent',
      metafile: true,
    });
    const inputs = Object.keys(result.metafile.inputs);
    expect(inputs.some((path) => path.endsWith('embedded/fashion-mnist-subset.ts'))).toBe(true);
    expect(inputs.filter((path) => /(^|\/)node:|mat-v5|download|files\.ts/.test(path))).toEqual([]);
    expect(result.outputFiles[0]!.text).not.toMatch(/from ["']node:/);
  });
});
