import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, Random } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { Dataset, balancedSubset, concatenateDatasets, randomSubset } from './dataset.js';

/** n images of 2×2×1; every value of image i is i, so an image's pixels name it. */
function numbered(count: number, numClasses = 3): Dataset {
  const images = new Uint8Array(count * 4);
  for (let index = 0; index < count; index++) images.fill(index, index * 4, index * 4 + 4);
  const labels = Int32Array.from({ length: count }, (_, index) => index % numClasses);
  return new Dataset({ name: 'toy', images, labels, imageShape: [2, 2, 1], numClasses });
}

function imageIds(inputs: tf.Tensor4D): number[] {
  const values = inputs.dataSync();
  return Array.from({ length: inputs.shape[0] }, (_, example) => Math.round(values[example * 4]! * 255));
}

describe('Dataset', () => {
  it('makes float batches in [0, 1] from bytes, and int32 labels', () => {
    const dataset = new Dataset({
      name: 'bytes',
      images: Uint8Array.from([0, 51, 255, 102, 7, 8, 9, 10]),
      labels: Int32Array.from([1, 0]),
      imageShape: [1, 2, 2],
      numClasses: 2,
    });
    const { inputs, labels } = dataset.batch([1, 0]);
    expect(inputs.shape).toEqual([2, 1, 2, 2]);
    expect(inputs.dtype).toBe('float32');
    expect(labels.dtype).toBe('int32');
    const expected = [7, 8, 9, 10, 0, 51, 255, 102].map((value) => value / 255);
    Array.from(inputs.dataSync()).forEach((value, index) => expect(value).toBeCloseTo(expected[index]!, 7));
    expect(Array.from(labels.dataSync())).toEqual([0, 1]);
    tf.dispose([inputs, labels]);
  });

  it('copies Float32Array storage unscaled', () => {
    const dataset = new Dataset({ name: 'floats', images: Float32Array.from([0.25, 0.5]), labels: Int32Array.from([0, 0]), imageShape: [1, 1, 1], numClasses: 1 });
    const { inputs, labels } = dataset.batch([1, 0]);
    expect(Array.from(inputs.dataSync())).toEqual([0.5, 0.25]);
    tf.dispose([inputs, labels]);
  });

  it('shuffles in the order of Random.permutation, batch by batch, disposing nothing it keeps', () => {
    const dataset = numbered(10);
    const before = tf.memory().numTensors;
    const expected = Array.from(new Random(7).permutation(10));
    const seen: number[] = [];
    const sizes: number[] = [];
    for (const { inputs, labels } of dataset.batches({ batchSize: 4, random: new Random(7) })) {
      seen.push(...imageIds(inputs));
      sizes.push(inputs.shape[0]);
      expect(Array.from(labels.dataSync())).toEqual(imageIds(inputs).map((id) => id % 3));
      tf.dispose([inputs, labels]);
    }
    expect(seen).toEqual(expected);
    expect(sizes).toEqual([4, 4, 2]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('keeps the order without a generator and drops a short last batch on request', () => {
    const dataset = numbered(10);
    const sizes: number[] = [];
    const seen: number[] = [];
    for (const { inputs, labels } of dataset.batches({ batchSize: 4, dropLast: true })) {
      sizes.push(inputs.shape[0]);
      seen.push(...imageIds(inputs));
      tf.dispose([inputs, labels]);
    }
    expect(sizes).toEqual([4, 4]);
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(dataset.batchCount(4, true)).toBe(2);
    expect(dataset.batchCount(4)).toBe(3);
  });

  it('splits a seeded hold-out: disjoint, complete, ordered, reproducible', () => {
    const dataset = numbered(50);
    const { train, validation } = dataset.split({ random: new Random(3) });
    expect(validation.size).toBe(5);
    expect(train.size).toBe(45);
    const validationIds = Array.from(validation.images.filter((_, index) => index % 4 === 0));
    const trainIds = Array.from(train.images.filter((_, index) => index % 4 === 0));
    expect([...validationIds, ...trainIds].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, index) => index));
    expect(validationIds).toEqual([...validationIds].sort((a, b) => a - b));
    const expectedValidation = Array.from(new Random(3).permutation(50).subarray(0, 5)).sort((a, b) => a - b);
    expect(validationIds).toEqual(expectedValidation);
    const again = dataset.split({ random: new Random(3) });
    expect(Array.from(again.validation.labels)).toEqual(Array.from(validation.labels));
    const other = dataset.split({ fraction: 0.2, random: new Random(4) });
    expect(other.validation.size).toBe(10);
  });

  it('draws a class-balanced subset', () => {
    const dataset = numbered(30, 3);
    const subset = balancedSubset(dataset, 4, new Random(1));
    expect(Array.from(subset.classCounts())).toEqual([4, 4, 4]);
    const ids = Array.from(subset.images.filter((_, index) => index % 4 === 0));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    ids.forEach((id, position) => expect(subset.labels[position]).toBe(id % 3));
    expect(() => balancedSubset(dataset, 11, new Random(1))).toThrow(DataError);
  });

  it('takes the first N of a seeded permutation for a random subset', () => {
    const dataset = numbered(20);
    const subset = randomSubset(dataset, 6, new Random(11));
    expect(Array.from(subset.images.filter((_, index) => index % 4 === 0))).toEqual(Array.from(new Random(11).permutation(20).subarray(0, 6)));
  });

  it('concatenates data sets in order', () => {
    const joined = concatenateDatasets([numbered(2), numbered(3)]);
    expect(joined.size).toBe(5);
    expect(Array.from(joined.images.filter((_, index) => index % 4 === 0))).toEqual([0, 1, 0, 1, 2]);
  });

  it('names the field of bad data', () => {
    expect(() => new Dataset({ name: 'bad', images: new Uint8Array(7), labels: new Int32Array(2), imageShape: [2, 2, 1], numClasses: 2 })).toThrow(
      expect.objectContaining({ field: 'bad.images' }),
    );
    expect(() => new Dataset({ name: 'bad', images: new Uint8Array(8), labels: Int32Array.from([0, 2]), imageShape: [2, 2, 1], numClasses: 2 })).toThrow(
      expect.objectContaining({ field: 'bad.labels[1]' }),
    );
    expect(() => numbered(4).batch([4])).toThrow(ConfigError);
    expect(() => [...numbered(4).batches({ batchSize: 2, shuffle: true })]).toThrow(expect.objectContaining({ field: 'batches.random' }));
    expect(() => numbered(4).split({ fraction: 1, random: new Random(0) })).toThrow(expect.objectContaining({ field: 'split.fraction' }));
  });
});
