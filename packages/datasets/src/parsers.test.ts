import { DataError } from '@regstack/regularizer';
import { describe, expect, it } from 'vitest';
import { parseCifar10, parseCifar100, parseCifar100Records } from './cifar.js';
import { datasetFromIdx, parseIdx } from './idx.js';
import { writeCifarRecords, writeIdx } from './__fixtures__/official-formats.js';

describe('parseIdx', () => {
  it('reads big-endian dimensions and the values', () => {
    const bytes = writeIdx([2, 1, 3], [1, 2, 3, 4, 5, 6]);
    // A size above 255 checks the byte order of the header.
    const long = writeIdx([300], new Uint8Array(300).fill(9));
    expect(parseIdx(bytes)).toEqual({ dimensions: [2, 1, 3], data: Uint8Array.from([1, 2, 3, 4, 5, 6]) });
    expect(parseIdx(long).dimensions).toEqual([300]);
  });

  it('rejects a wrong magic number, gzip, a truncated file, trailing bytes', () => {
    const good = writeIdx([2, 2], [1, 2, 3, 4]);
    const badMagic = good.slice();
    badMagic[0] = 8;
    expect(() => parseIdx(badMagic, 'train-images')).toThrow(/train-images: wrong magic number "08 00 08 02"/);
    expect(() => parseIdx(Uint8Array.from([0x1f, 0x8b, 8, 0]), 'f')).toThrow(/gzip/);
    expect(() => parseIdx(good.subarray(0, good.length - 1), 'f')).toThrow(/truncated: the header announces \[2, 2\] = 4 values, the file holds 3/);
    expect(() => parseIdx(good.subarray(0, 9), 'f')).toThrow(/truncated header/);
    expect(() => parseIdx(Uint8Array.from([...good, 0]), 'f')).toThrow(DataError);
  });

  it('makes a 28×28×1 Fashion-MNIST split from image and label files', () => {
    const pixels = Uint8Array.from({ length: 2 * 784 }, (_, index) => index % 251);
    const dataset = datasetFromIdx(writeIdx([2, 28, 28], pixels), writeIdx([2], [9, 0]), 'fm');
    expect(dataset.imageShape).toEqual([28, 28, 1]);
    expect(Array.from(dataset.labels)).toEqual([9, 0]);
    expect(dataset.images[785]).toBe(785 % 251);
    expect(dataset.classNames?.[9]).toBe('Ankle boot');
    expect(() => datasetFromIdx(writeIdx([2, 28, 28], pixels), writeIdx([3], [1, 2, 3]), 'fm')).toThrow(expect.objectContaining({ field: 'fm.labels' }));
    expect(() => datasetFromIdx(writeIdx([2, 28, 28], pixels), writeIdx([2], [1, 10]), 'fm')).toThrow(expect.objectContaining({ field: 'fm.labels[1]' }));
  });
});

describe('CIFAR binary', () => {
  const pixel = (seed: number) => (channel: number, row: number, column: number) => (seed * 7 + channel * 50 + row * 3 + column) % 256;

  it('turns planar records into NHWC images', () => {
    const dataset = parseCifar10([writeCifarRecords([{ labels: [3], pixel: pixel(0) }]), writeCifarRecords([{ labels: [7], pixel: pixel(1) }])], 'c10');
    expect(dataset.size).toBe(2);
    expect(Array.from(dataset.labels)).toEqual([3, 7]);
    // Example 1, row 5, column 9: HWC offset 3072 + (5·32 + 9)·3 + channel.
    for (let channel = 0; channel < 3; channel++) {
      expect(dataset.images[3072 + (5 * 32 + 9) * 3 + channel]).toBe(pixel(1)(channel, 5, 9));
    }
    expect(dataset.classNames?.[3]).toBe('cat');
  });

  it('reads CIFAR-100 coarse then fine labels', () => {
    const bytes = writeCifarRecords([
      { labels: [4, 55], pixel: pixel(0) },
      { labels: [19, 99], pixel: pixel(2) },
    ]);
    const records = parseCifar100Records(bytes);
    expect(Array.from(records.coarseLabels)).toEqual([4, 19]);
    expect(Array.from(records.fineLabels)).toEqual([55, 99]);
    expect(parseCifar100(bytes, 'c100', 'coarse').numClasses).toBe(20);
    expect(Array.from(parseCifar100(bytes, 'c100').labels)).toEqual([55, 99]);
  });

  it('rejects truncated files and the wrong version', () => {
    const bytes = writeCifarRecords([{ labels: [1], pixel: pixel(0) }]);
    expect(() => parseCifar10([bytes.subarray(0, 3000)], 'c10')).toThrow(/c10\.files\[0\]: 3000 bytes is not a whole number of 3073-byte records/);
    // A CIFAR-100 record read as CIFAR-10 is misaligned; with 3073·3074 bytes it aligns but labels go wrong.
    expect(() => parseCifar100Records(writeCifarRecords([{ labels: [25, 1], pixel: pixel(0) }]), 'c')).toThrow(/coarseLabels\[0\]: label 25/);
  });
});
