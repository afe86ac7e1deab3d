import { deflateSync } from 'node:zlib';
import { DataError } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { svhnMat, svhnPixel as pixel, writeMatV5 } from './__fixtures__/official-formats.js';
import { readMatV5 } from './mat-v5.js';
import { svhnFromMat } from './svhn.js';

const deflate = (bytes: Uint8Array): Uint8Array => deflateSync(bytes);

describe('readMatV5', () => {
  it('reads plain and compressed numeric variables, little- and big-endian, and skips others', () => {
    for (const bigEndian of [false, true]) {
      const bytes = writeMatV5(
        [
          { name: 'label', classCode: 4, storageType: 4, dimensions: [1, 2], values: [104, 105] },
          { name: 'counts', classCode: 6, storageType: 9, dimensions: [2, 3], values: [1.5, -2, 3, 4, 5, 1e10] },
          { name: 'X', classCode: 9, storageType: 2, dimensions: [2, 2], values: [1, 2, 3, 255], compress: true },
          { name: 'y', classCode: 6, storageType: 2, dimensions: [3, 1], values: [10, 1, 7] },
        ],
        deflate,
        bigEndian,
      );
      const variables = readMatV5(bytes);
      expect([...variables.keys()]).toEqual(['counts', 'X', 'y']);
      expect(variables.get('counts')).toEqual({ name: 'counts', matlabClass: 'double', dimensions: [2, 3], values: Float64Array.from([1.5, -2, 3, 4, 5, 1e10]) });
      expect(Array.from(variables.get('X')!.values)).toEqual([1, 2, 3, 255]);
      // MATLAB stores small-integer doubles as bytes; the class still says double.
      expect(variables.get('y')!.matlabClass).toBe('double');
      expect(Array.from(variables.get('y')!.values)).toEqual([10, 1, 7]);
    }
  });

  it('rejects what is not a v5 MAT-file, and truncation', () => {
    const bytes = writeMatV5([{ name: 'X', classCode: 9, storageType: 2, dimensions: [1, 40], values: new Array(40).fill(1) }], deflate);
    expect(() => readMatV5(bytes.subarray(0, 100), 'train.mat')).toThrow(/train\.mat: truncated: 100 bytes/);
    expect(() => readMatV5(bytes.subarray(0, bytes.length - 16), 'train.mat')).toThrow(/truncated: an element at byte 128/);
    const hdf5 = bytes.slice();
    hdf5.set(new TextEncoder().encode('MATLAB 7.3 MAT-file'));
    expect(() => readMatV5(hdf5, 'f')).toThrow(/HDF5/);
    expect(() => readMatV5(new Uint8Array(200), 'f')).toThrow(DataError);
  });
});

describe('svhnFromMat', () => {
  it('turns column-major X into NHWC and label 10 into digit 0', () => {
    const dataset = svhnFromMat(readMatV5(svhnMat([10, 3], true)), 'svhn');
    expect(dataset.imageShape).toEqual([32, 32, 3]);
    expect(Array.from(dataset.labels)).toEqual([0, 3]);
    for (const [example, row, column, channel] of [
      [0, 0, 0, 0],
      [1, 5, 9, 2],
      [1, 31, 30, 1],
    ] as const) {
      expect(dataset.images[((example * 32 + row) * 32 + column) * 3 + channel]).toBe(pixel(row, column, channel, example));
    }
  });

  it('names bad labels and shapes', () => {
    expect(() => svhnFromMat(readMatV5(svhnMat([0], false)), 'svhn')).toThrow(expect.objectContaining({ field: 'svhn.y[0]' }));
    const wrong = writeMatV5([{ name: 'X', classCode: 9, storageType: 2, dimensions: [2, 2], values: [1, 2, 3, 4] }, { name: 'y', classCode: 6, storageType: 9, dimensions: [1, 1], values: [1] }], deflate);
    expect(() => svhnFromMat(readMatV5(wrong), 'svhn')).toThrow(expect.objectContaining({ field: 'svhn.X' }));
  });
});
