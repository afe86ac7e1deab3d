import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { ConfigError, DataError, Random, composeRegularizers, type RegularizerPlugin, type SoftBatch } from '@regstack/regularizer';
import { mixup } from './index.js';
import { linearClassifier, minimizeSteps } from '@regstack/regularizer/testing';

const linearModel = (inputSize: number, numClasses: number) => linearClassifier({ inputSize, numClasses, seed: 3 });

/** A batch whose example i holds values distinct from every other example's. */
function imageBatch(size: number, height: number, width: number, channels: number, numClasses: number) {
  return {
    inputs: tf.tidy(() => tf.add(tf.reshape(tf.range(0, size, 1), [size, 1, 1, 1]), tf.randomUniform([size, height, width, channels], 0, 0.5, 'float32', 7))),
    labels: tf.tensor1d(Array.from({ length: size }, (_, i) => i % numClasses), 'int32'),
  };
}

/** Runs one stack step's transforms and reads the batch the base loss sees. */
function transformed(plugins: RegularizerPlugin[], batch: { inputs: tf.Tensor; labels: tf.Tensor1D }, numClasses: number, seed: number) {
  const model = linearModel(batch.inputs.size / batch.inputs.shape[0]!, numClasses);
  const step = composeRegularizers(plugins).prepare({ model, batch, random: new Random(seed), validate: false });
  const result = { inputs: step.batch.inputs.arraySync() as number[][][][] | number[][], targets: step.batch.targets.arraySync() };
  step.dispose();
  model.dispose();
  return result;
}

const oneHot = (label: number, numClasses: number) => Array.from({ length: numClasses }, (_, k) => (k === label ? 1 : 0));

describe('mixup', () => {
  it('mixes inputs and targets with λ ~ Beta(α, α) and a permutation drawn from the seeded generator', () => {
    const numClasses = 3;
    const inputs = tf.randomUniform([5, 4], 0, 1, 'float32', 2);
    const labels = tf.tensor1d([0, 1, 2, 0, 1], 'int32');
    const x = inputs.arraySync() as number[][];
    for (const seed of [1, 2, 3]) {
      const { inputs: mixed, targets } = transformed([mixup({ mixupAlpha: 0.4 })], { inputs, labels }, numClasses, seed);
      // The documented order of draws: the probability gate, λ, the permutation.
      const replica = new Random(seed);
      replica.uniform();
      const lambda = replica.beta(0.4, 0.4);
      const permutation = replica.permutation(5);
      const y = labels.arraySync();
      x.forEach((row, i) => {
        const partner = permutation[i]!;
        row.forEach((value, j) => expect((mixed as number[][])[i]![j]).toBeCloseTo(lambda * value + (1 - lambda) * x[partner]![j]!, 6));
        const expected = oneHot(y[i]!, numClasses).map((t, k) => lambda * t + (1 - lambda) * oneHot(y[partner]!, numClasses)[k]!);
        targets[i]!.forEach((t, k) => expect(t).toBeCloseTo(expected[k]!, 6));
        expect(targets[i]!.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
      });
      expect(permutation.some((partner, i) => partner !== i)).toBe(true);
    }
    tf.dispose([inputs, labels]);
  });

  it('pastes a CutMix box of area fraction 1 − λ, clipped to the image, and corrects λ to the pasted area', () => {
    const [size, height, width, numClasses] = [4, 6, 5, 4];
    const batch = imageBatch(size, height, width, 2, numClasses);
    let clippedSeen = false;
    let unclippedSeen = false;
    for (let seed = 1; seed <= 12; seed++) {
      const { inputs, targets } = transformed([mixup({ mixupAlpha: 0, cutmixAlpha: 1 })], batch, numClasses, seed);
      const replica = new Random(seed);
      replica.uniform();
      const drawn = replica.beta(1, 1);
      const permutation = replica.permutation(size);
      const centre = [replica.int(height), replica.int(width)] as const;
      const boxHeight = Math.floor(height * Math.sqrt(1 - drawn));
      const boxWidth = Math.floor(width * Math.sqrt(1 - drawn));
      for (let i = 0; i < size; i++) {
        const partner = permutation[i]!;
        if (partner === i) continue;
        // Example i's values lie in [i, i + 0.5): a pixel from the partner shows by its integer part.
        const image = (inputs as number[][][][])[i]!;
        const pasted = image.map((row) => row.map((pixel) => Math.floor(pixel[0]!) === partner));
        const rows = pasted.map((row, r) => (row.some(Boolean) ? r : -1)).filter((r) => r >= 0);
        const columns = Array.from({ length: width }, (_, c) => c).filter((c) => pasted.some((row) => row[c]));
        const area = pasted.flat().filter(Boolean).length;
        // A rectangle: every pixel in its row and column span is pasted, and every channel with it.
        expect(area).toBe(rows.length * columns.length);
        image.forEach((row, r) => row.forEach((pixel, c) => expect(Math.floor(pixel[1]!) === partner).toBe(pasted[r]![c])));
        if (area > 0) {
          expect(pasted[centre[0]]![centre[1]]).toBe(true);
          expect(rows.length).toBeLessThanOrEqual(boxHeight);
          expect(columns.length).toBeLessThanOrEqual(boxWidth);
        }
        const unclipped = centre[0] - Math.floor(boxHeight / 2) >= 0 && centre[0] - Math.floor(boxHeight / 2) + boxHeight <= height &&
          centre[1] - Math.floor(boxWidth / 2) >= 0 && centre[1] - Math.floor(boxWidth / 2) + boxWidth <= width;
        if (unclipped) {
          expect(area).toBe(boxHeight * boxWidth);
          unclippedSeen ||= area > 0;
        } else {
          expect(area).toBeLessThan(boxHeight * boxWidth);
          clippedSeen = true;
        }
        const lambda = 1 - area / (height * width);
        const label = i % numClasses;
        const partnerLabel = partner % numClasses;
        targets[i]!.forEach((t, k) => expect(t).toBeCloseTo(lambda * (k === label ? 1 : 0) + (1 - lambda) * (k === partnerLabel ? 1 : 0), 6));
      }
    }
    expect(clippedSeen && unclippedSeen).toBe(true);
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('switches between mixup and CutMix with switchProbability, and leaves the batch as is with probability 0', () => {
    const batch = imageBatch(4, 4, 4, 1, 2);
    const original = batch.inputs.arraySync();
    const untouched = transformed([mixup({ cutmixAlpha: 1, probability: 0 })], batch, 2, 1);
    expect(untouched.inputs).toEqual(original);
    expect(untouched.targets).toEqual([[1, 0], [0, 1], [1, 0], [0, 1]]);

    // switchProbability 1: always CutMix, so every pixel comes whole from one example or its partner.
    const cut = transformed([mixup({ cutmixAlpha: 1, switchProbability: 1 })], batch, 2, 4);
    expect((cut.inputs as number[][][][]).flat(3).every((v) => v - Math.floor(v) < 0.5)).toBe(true);
    // switchProbability 0: always mixup; the draws follow the gate, the switch, λ, the permutation.
    const mixed = transformed([mixup({ cutmixAlpha: 1, switchProbability: 0 })], batch, 2, 4);
    const replica = new Random(4);
    replica.uniform();
    expect(replica.uniform()).toBeGreaterThanOrEqual(0);
    const lambda = replica.beta(1, 1);
    const permutation = replica.permutation(4);
    const x = original as number[][][][];
    expect((mixed.inputs as number[][][][])[1]![2]![3]![0]).toBeCloseTo(lambda * x[1]![2]![3]![0]! + (1 - lambda) * x[permutation[1]!]![2]![3]![0]!, 6);
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('is deterministic per seed', () => {
    const batch = imageBatch(6, 4, 4, 3, 3);
    const plugins = () => [mixup({ cutmixAlpha: 1 })];
    const first = transformed(plugins(), batch, 3, 9);
    expect(transformed(plugins(), batch, 3, 9)).toEqual(first);
    expect(transformed(plugins(), batch, 3, 10)).not.toEqual(first);
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('resolves schedules each step', () => {
    const batch = imageBatch(4, 2, 2, 1, 2);
    const original = batch.inputs.arraySync();
    const model = linearModel(4, 2);
    const stack = composeRegularizers([mixup({ probability: { type: 'step', values: [0, 1], boundaries: [1], unit: 'step' } })]);
    const random = new Random(1);
    const atStep = (step: number) => {
      const prepared = stack.prepare({ model, batch, random, step });
      const inputs = prepared.batch.inputs.arraySync();
      prepared.dispose();
      return inputs;
    };
    expect(atStep(0)).toEqual(original);
    expect(atStep(1)).not.toEqual(original);
    expect(() => composeRegularizers([mixup({ mixupAlpha: () => -1 })]).prepare({ model, batch, random })).toThrow(/mixup\.mixupAlpha: must be ≥ 0/);
    model.dispose();
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('smooths the mixed targets when stacked with a target smoother', () => {
    const smoothing: RegularizerPlugin = {
      name: 'toy-smoothing',
      stage: 'target-transform',
      exclusiveGroup: 'target-smoothing',
      transformTargets: (targets, context) => tf.add(tf.mul(targets, 0.8), 0.2 / context.numClasses) as tf.Tensor2D,
    };
    const batch = imageBatch(4, 2, 2, 1, 4);
    const { targets } = transformed([smoothing, mixup()], batch, 4, 5);
    const replica = new Random(5);
    replica.uniform();
    const lambda = replica.beta(1, 1);
    const permutation = replica.permutation(4);
    targets.forEach((row, i) =>
      row.forEach((t, k) => {
        const mixed = lambda * (k === i ? 1 : 0) + (1 - lambda) * (k === permutation[i] ? 1 : 0);
        expect(t).toBeCloseTo(0.8 * mixed + 0.05, 6);
      }),
    );
    tf.dispose([batch.inputs, batch.labels]);
  });

  it('is rejected beside another batch mixer', () => {
    const other: RegularizerPlugin = {
      name: 'other-mixer',
      stage: 'batch-transform',
      exclusiveGroup: 'batch-mixing',
      transformBatch: (batch: SoftBatch) => batch,
    };
    expect(() => composeRegularizers([mixup(), other])).toThrow(/'mixup' and 'other-mixer' cannot be stacked/);
  });

  it('validates its options at construction, naming the field', () => {
    expect(() => mixup({ alpha: 1 } as never)).toThrow(ConfigError);
    expect(() => mixup({ alpha: 1 } as never)).toThrow(/mixup\.alpha: unknown option/);
    expect(() => mixup({ mixupAlpha: -0.1 })).toThrow(/mixup\.mixupAlpha/);
    expect(() => mixup({ cutmixAlpha: Number.NaN })).toThrow(/mixup\.cutmixAlpha/);
    expect(() => mixup({ probability: 1.5 })).toThrow(/mixup\.probability: must be ≤ 1/);
    expect(() => mixup({ switchProbability: { type: 'linear', from: 0, to: 2, start: 0, end: 1 } })).toThrow(/mixup\.switchProbability/);
    expect(() => mixup({ probability: 'often' as never })).toThrow(/mixup\.probability/);
  });

  it('rejects CutMix on inputs that are not NHWC images', () => {
    const inputs = tf.randomUniform([4, 6]);
    const labels = tf.tensor1d([0, 1, 0, 1], 'int32');
    expect(() => transformed([mixup({ cutmixAlpha: 1 })], { inputs, labels }, 2, 1)).toThrow(DataError);
    expect(() => transformed([mixup({ cutmixAlpha: 1 })], { inputs, labels }, 2, 1)).toThrow(/batch\.inputs: CutMix needs NHWC images/);
    tf.dispose([inputs, labels]);
  });

  it('trains in a user loop without leaking tensors', () => {
    const batch = imageBatch(8, 4, 4, 1, 2);
    const model = linearModel(16, 2);
    const optimizer = tf.train.sgd(0.1);
    const stack = composeRegularizers([mixup({ cutmixAlpha: 1 })]);
    const { tensorCounts } = minimizeSteps(stack, { model, batch, random: new Random(3), validate: false }, 8, optimizer);
    expect(new Set(tensorCounts.slice(1)).size).toBe(1);
    optimizer.dispose();
    model.dispose();
    tf.dispose([batch.inputs, batch.labels]);
  });
});
