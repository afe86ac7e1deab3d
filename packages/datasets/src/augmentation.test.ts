import * as tf from '@tensorflow/tfjs-core';
import { DataError, Random } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { applyCropAndFlip, createStandardAugmentation, randomCropWithPadding, randomHorizontalFlip, standardAugmentation } from './augmentation.js';

const [COUNT, HEIGHT, WIDTH, CHANNELS] = [6, 5, 4, 2];

/** Every value distinct and non-zero, so a zero can only come from padding. */
function distinctBatch(): tf.Tensor4D {
  return tf.tensor4d(Float32Array.from({ length: COUNT * HEIGHT * WIDTH * CHANNELS }, (_, index) => index + 1), [COUNT, HEIGHT, WIDTH, CHANNELS]);
}

/** Reference crop of one example, written with plain loops: window at (rowOffset, columnOffset) of the zero-padded image. */
function referenceCrop(values: Float32Array, example: number, padding: number, rowOffset: number, columnOffset: number, flip: boolean): number[] {
  const out: number[] = [];
  for (let row = 0; row < HEIGHT; row++) {
    for (let column = 0; column < WIDTH; column++) {
      const croppedColumn = flip ? WIDTH - 1 - column : column;
      const sourceRow = row + rowOffset - padding;
      const sourceColumn = croppedColumn + columnOffset - padding;
      for (let channel = 0; channel < CHANNELS; channel++) {
        const inside = sourceRow >= 0 && sourceRow < HEIGHT && sourceColumn >= 0 && sourceColumn < WIDTH;
        out.push(inside ? values[((example * HEIGHT + sourceRow) * WIDTH + sourceColumn) * CHANNELS + channel]! : 0);
      }
    }
  }
  return out;
}

function exampleValues(tensor: tf.Tensor, example: number): number[] {
  const size = HEIGHT * WIDTH * CHANNELS;
  return Array.from(tensor.dataSync().subarray(example * size, (example + 1) * size));
}

describe('randomCropWithPadding', () => {
  it('crops each example at its own offset in [0, 2·padding], padding with zeros', () => {
    const inputs = distinctBatch();
    const values = inputs.dataSync() as Float32Array;
    const padding = 2;
    const before = tf.memory().numTensors;
    const output = randomCropWithPadding(inputs, padding, new Random(5));
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(output.shape).toEqual(inputs.shape);
    const draws = new Random(5);
    const offsets = new Set<string>();
    for (let example = 0; example < COUNT; example++) {
      const rowOffset = draws.int(2 * padding + 1);
      const columnOffset = draws.int(2 * padding + 1);
      offsets.add(`${rowOffset},${columnOffset}`);
      expect(exampleValues(output, example)).toEqual(referenceCrop(values, example, padding, rowOffset, columnOffset, false));
    }
    // Per-example offsets, not one offset for the batch.
    expect(offsets.size).toBeGreaterThan(1);
    tf.dispose([inputs, output]);
  });

  it('finds every output window inside the padded image (bounds, by search)', () => {
    const inputs = distinctBatch();
    const values = inputs.dataSync() as Float32Array;
    const padding = 3;
    for (let seed = 0; seed < 5; seed++) {
      const output = randomCropWithPadding(inputs, padding, new Random(seed));
      for (let example = 0; example < COUNT; example++) {
        const actual = exampleValues(output, example);
        let matches = 0;
        for (let rowOffset = 0; rowOffset <= 2 * padding; rowOffset++) {
          for (let columnOffset = 0; columnOffset <= 2 * padding; columnOffset++) {
            if (JSON.stringify(referenceCrop(values, example, padding, rowOffset, columnOffset, false)) === JSON.stringify(actual)) matches++;
          }
        }
        expect(matches).toBe(1);
      }
      output.dispose();
    }
    inputs.dispose();
  });

  it('is the identity with zero padding', () => {
    const inputs = distinctBatch();
    const output = randomCropWithPadding(inputs, 0, new Random(1));
    expect(Array.from(output.dataSync())).toEqual(Array.from(inputs.dataSync()));
    tf.dispose([inputs, output]);
  });
});

describe('randomHorizontalFlip', () => {
  it('mirrors exactly the examples whose coin came up, leaves the rest untouched', () => {
    const inputs = distinctBatch();
    const values = inputs.dataSync() as Float32Array;
    const output = randomHorizontalFlip(inputs, new Random(9));
    const coins = new Random(9);
    const flipped: boolean[] = [];
    for (let example = 0; example < COUNT; example++) {
      const flip = coins.int(2) === 1;
      flipped.push(flip);
      expect(exampleValues(output, example)).toEqual(referenceCrop(values, example, 0, 0, 0, flip));
    }
    expect(flipped).toContain(true);
    expect(flipped).toContain(false);
    tf.dispose([inputs, output]);
  });

  it('flips about half of a large batch', () => {
    const inputs = tf.tensor4d(Float32Array.from({ length: 1000 * 2 }, (_, index) => index % 2), [1000, 1, 2, 1]);
    const output = randomHorizontalFlip(inputs, new Random(2));
    const values = output.dataSync();
    let flips = 0;
    for (let example = 0; example < 1000; example++) flips += values[2 * example]!;
    // Binomial(1000, 0.5): 5 standard deviations is ±79.
    expect(Math.abs(flips - 500)).toBeLessThan(79);
    tf.dispose([inputs, output]);
  });
});

describe('standardAugmentation', () => {
  it('equals crop then flip drawn from the same generator, in one pass', () => {
    const inputs = distinctBatch();
    const cropped = randomCropWithPadding(inputs, 4, new Random(21));
    const composed = tf.tidy(() => {
      const random = new Random(21);
      return randomHorizontalFlip(randomCropWithPadding(inputs, 4, random), random);
    });
    const before = tf.memory().numTensors;
    const output = standardAugmentation(inputs, new Random(21));
    expect(tf.memory().numTensors).toBe(before + 1);
    expect(Array.from(output.dataSync())).toEqual(Array.from(composed.dataSync()));
    expect(Array.from(output.dataSync())).not.toEqual(Array.from(cropped.dataSync()));
    tf.dispose([inputs, cropped, composed, output]);
  });

  it('is deterministic per seed and differs across seeds', () => {
    const inputs = distinctBatch();
    const first = standardAugmentation(inputs, new Random(4));
    const again = standardAugmentation(inputs, new Random(4));
    const other = standardAugmentation(inputs, new Random(5));
    expect(Array.from(again.dataSync())).toEqual(Array.from(first.dataSync()));
    expect(Array.from(other.dataSync())).not.toEqual(Array.from(first.dataSync()));
    tf.dispose([inputs, first, again, other]);
  });

  it('crops without flipping when flips are off (digits)', () => {
    const inputs = distinctBatch();
    const output = createStandardAugmentation({ padding: 2, horizontalFlip: false })(inputs, new Random(8));
    const cropped = randomCropWithPadding(inputs, 2, new Random(8));
    expect(Array.from(output.dataSync())).toEqual(Array.from(cropped.dataSync()));
    tf.dispose([inputs, output, cropped]);
  });

  it('rejects non-NHWC inputs and unknown options by name', () => {
    const inputs = tf.zeros([2, 3, 3]);
    expect(() => standardAugmentation(inputs, new Random(0))).toThrow(DataError);
    expect(() => createStandardAugmentation({ pading: 2 } as never)).toThrow(expect.objectContaining({ field: 'standardAugmentation.pading' }));
    inputs.dispose();
  });
});

describe('applyCropAndFlip', () => {
  it('gives the same result with tf.gather and with the typed-array copy, for float and int tensors', () => {
    const random = new Random(13);
    const draws = {
      rowOffsets: Int32Array.from({ length: COUNT }, () => random.int(7)),
      columnOffsets: Int32Array.from({ length: COUNT }, () => random.int(7)),
      flips: Uint8Array.from({ length: COUNT }, () => random.int(2)),
    };
    const floats = distinctBatch();
    const ints = tf.cast(floats, 'int32');
    for (const inputs of [floats, ints]) {
      const before = tf.memory().numTensors;
      const gathered = applyCropAndFlip(inputs, 3, draws, 'gather');
      const copied = applyCropAndFlip(inputs, 3, draws, 'typed-array');
      expect(tf.memory().numTensors).toBe(before + 2);
      expect(copied.dtype).toBe(inputs.dtype);
      expect(gathered.dtype).toBe(inputs.dtype);
      expect(Array.from(copied.dataSync())).toEqual(Array.from(gathered.dataSync()));
      tf.dispose([gathered, copied]);
    }
    tf.dispose([floats, ints]);
  });
});
