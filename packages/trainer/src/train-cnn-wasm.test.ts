// End to end on the default backend: the trainer, a small CNN from @regstack/models, and wasm with
// the conv-gradient kernels of @regstack/backend (wasm as shipped cannot train a conv net).
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { smallCnn } from '@regstack/models';
import { Random } from '@regstack/regularizer';
import { beforeAll, describe, expect, it } from 'vitest';
import { tensorData } from './data.js';
import { train } from './trainer.js';

const SIDE = 12;
const CLASSES = 4;

/** Each class lights one quadrant of a noisy 12×12 image: learnable by a CNN, not by chance. */
function quadrantImages(count: number, seed: number) {
  const random = new Random(seed);
  const pixels = new Float32Array(count * SIDE * SIDE);
  const labels = new Int32Array(count);
  for (let n = 0; n < count; n++) {
    const label = random.int(CLASSES);
    labels[n] = label;
    const [rowStart, columnStart] = [Math.floor(label / 2) * 6, (label % 2) * 6];
    for (let row = 0; row < SIDE; row++) {
      for (let column = 0; column < SIDE; column++) {
        const lit = row >= rowStart && row < rowStart + 6 && column >= columnStart && column < columnStart + 6;
        pixels[n * SIDE * SIDE + row * SIDE + column] = Math.min(1, Math.max(0, (lit ? 0.6 : 0.3) + 0.25 * random.normal()));
      }
    }
  }
  return { inputs: tf.tensor4d(pixels, [count, SIDE, SIDE, 1]), labels: tf.tensor1d(labels, 'int32') };
}

describe('training a small CNN on the default backend (wasm)', () => {
  // Vitest isolates test files, so switching the backend here affects no other file.
  beforeAll(async () => {
    const info = await useBackend();
    expect(info.name).toBe('wasm');
  });

  it('raises validation accuracy well above chance', async () => {
    const data = quadrantImages(480, 1);
    const model = smallCnn({ inputShape: [SIDE, SIDE, 1], numClasses: CLASSES, width: 4, seed: 3 });
    const stepMilliseconds: number[] = [];
    const result = await train({
      model,
      train: tensorData(data.inputs, data.labels),
      epochs: 3,
      batchSize: 32,
      learningRate: 0.05,
      seed: 2,
      onEpochEnd: (record) => {
        stepMilliseconds.push(1000 * record.secondsPerStep);
      },
    });
    expect(tf.getBackend()).toBe('wasm');
    expect(result.validation?.count).toBe(48);
    expect(result.validation?.accuracy).toBeGreaterThan(0.8); // chance is 0.25
    expect(stepMilliseconds.every((ms) => ms > 0)).toBe(true);
    console.info(`small CNN (width 4, 12×12×1, batch 32) on wasm: ${stepMilliseconds.map((ms) => ms.toFixed(1)).join(', ')} ms per step by epoch`);
    model.dispose();
    tf.dispose([data.inputs, data.labels]);
  });
});
