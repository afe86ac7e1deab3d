// Writers of the official file formats, for tests: each writes the bytes the format's documentation describes.
import { deflateSync } from 'node:zlib';

/** An unsigned-byte IDX file written as the format says: 00 00 08 rank, big-endian sizes, values. */
export function writeIdx(dimensions: number[], values: ArrayLike<number>): Uint8Array {
  const header = new Uint8Array(4 + 4 * dimensions.length);
  header.set([0, 0, 8, dimensions.length]);
  const view = new DataView(header.buffer);
  dimensions.forEach((size, axis) => view.setUint32(4 + 4 * axis, size, false));
  const bytes = new Uint8Array(header.length + values.length);
  bytes.set(header);
  bytes.set(Array.from(values), header.length);
  return bytes;
}

/** CIFAR binary records: label byte(s), then the red, green and blue planes of 1024 bytes each. */
export function writeCifarRecords(records: { labels: number[]; pixel: (channel: number, row: number, column: number) => number }[]): Uint8Array {
  const labelBytes = records[0]!.labels.length;
  const size = labelBytes + 3072;
  const bytes = new Uint8Array(records.length * size);
  records.forEach((record, example) => {
    bytes.set(record.labels, example * size);
    for (let channel = 0; channel < 3; channel++) {
      for (let row = 0; row < 32; row++) {
        for (let column = 0; column < 32; column++) {
          bytes[example * size + labelBytes + channel * 1024 + row * 32 + column] = record.pixel(channel, row, column);
        }
      }
    }
  });
  return bytes;
}


/** One variable of a MAT-file written by {@link writeMatV5}. */
export interface MatVariableToWrite {
  name: string;
  /** mxClass code: 4 char, 6 double, 9 uint8, … */
  classCode: number;
  /** miType code of the stored values: 2 miUINT8, 4 miUINT16, 9 miDOUBLE, … */
  storageType: number;
  dimensions: number[];
  /** Values in column-major order. */
  values: ArrayLike<number>;
  /** Wrap the matrix in a zlib-compressed element, as MATLAB's -v7 does. */
  compress?: boolean;
}

const STORAGE_BYTES: Record<number, number> = { 1: 1, 2: 1, 4: 2, 5: 4, 6: 4, 9: 8 };

/**
 * A MATLAB 5 MAT-file as the "MAT-File Format" document describes it: a 128-byte header (text,
 * subsystem offset, version 0x0100, endian mark), then one miMATRIX element per variable, made
 * of array flags, dimensions, the name (small data element format) and the real part, each
 * padded to 8 bytes.
 */
export function writeMatV5(variables: MatVariableToWrite[], deflate: (bytes: Uint8Array) => Uint8Array, bigEndian = false): Uint8Array {
  const little = !bigEndian;
  const parts: Uint8Array[] = [];
  const header = new Uint8Array(128).fill(0x20);
  header.set(new TextEncoder().encode('MATLAB 5.0 MAT-file, Platform: regstack test, Created on: never'));
  header.fill(0, 116, 124);
  new DataView(header.buffer).setUint16(124, 0x0100, little);
  header.set(new TextEncoder().encode(bigEndian ? 'MI' : 'IM'), 126);
  parts.push(header);

  const element = (type: number, data: Uint8Array, pad = true): Uint8Array => {
    const padded = pad ? Math.ceil(data.length / 8) * 8 : data.length;
    const bytes = new Uint8Array(8 + padded);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, type, little);
    view.setUint32(4, data.length, little);
    bytes.set(data, 8);
    return bytes;
  };
  const smallElement = (type: number, data: Uint8Array): Uint8Array => {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setUint32(0, (data.length << 16) | type, little);
    bytes.set(data, 4);
    return bytes;
  };
  const numbers = (type: number, values: ArrayLike<number>): Uint8Array => {
    const size = STORAGE_BYTES[type]!;
    const bytes = new Uint8Array(values.length * size);
    const view = new DataView(bytes.buffer);
    for (let index = 0; index < values.length; index++) {
      const value = values[index]!;
      const offset = index * size;
      if (type === 1) view.setInt8(offset, value);
      else if (type === 2) view.setUint8(offset, value);
      else if (type === 4) view.setUint16(offset, value, little);
      else if (type === 5) view.setInt32(offset, value, little);
      else if (type === 6) view.setUint32(offset, value, little);
      else view.setFloat64(offset, value, little);
    }
    return bytes;
  };
  const join = (chunks: Uint8Array[]): Uint8Array => {
    const joined = new Uint8Array(chunks.reduce((total, chunk) => total + chunk.length, 0));
    let offset = 0;
    for (const chunk of chunks) {
      joined.set(chunk, offset);
      offset += chunk.length;
    }
    return joined;
  };

  for (const variable of variables) {
    const name = new TextEncoder().encode(variable.name);
    const matrix = element(
      14,
      join([
        element(6, numbers(6, [variable.classCode, 0])),
        element(5, numbers(5, variable.dimensions)),
        name.length <= 4 ? smallElement(1, name) : element(1, name),
        element(variable.storageType, numbers(variable.storageType, variable.values)),
      ]),
    );
    parts.push(variable.compress ? element(15, deflate(matrix), false) : matrix);
  }
  return join(parts);
}

/** X(row, column, channel, example) of the synthetic SVHN file: asymmetric in row and column. */
export const svhnPixel = (row: number, column: number, channel: number, example: number): number => (row * 7 + column * 3 + channel * 50 + example * 100) % 256;

/** A synthetic SVHN split in the official layout: X 32×32×3×N uint8 column-major, y N×1 double. */
export function svhnMat(digits: number[], compress: boolean): Uint8Array {
  const count = digits.length;
  const values = new Uint8Array(32 * 32 * 3 * count);
  for (let example = 0; example < count; example++) {
    for (let channel = 0; channel < 3; channel++) {
      for (let column = 0; column < 32; column++) {
        for (let row = 0; row < 32; row++) values[row + 32 * column + 1024 * channel + 3072 * example] = svhnPixel(row, column, channel, example);
      }
    }
  }
  const deflate = (bytes: Uint8Array): Uint8Array => deflateSync(bytes);
  return writeMatV5(
    [
      { name: 'X', classCode: 9, storageType: 2, dimensions: [32, 32, 3, count], values, compress },
      { name: 'y', classCode: 6, storageType: 9, dimensions: [count, 1], values: digits, compress },
    ],
    deflate,
  );
}

