import { DataError } from '@regstack/regularizer';
import { Dataset } from './dataset.js';

/** A parsed IDX file of unsigned bytes (the format of MNIST and Fashion-MNIST). */
export interface IdxArray {
  /** Size of each dimension, outermost first, e.g. `[60000, 28, 28]`. */
  dimensions: number[];
  /** The values, row-major (a view into the input bytes, not a copy). */
  data: Uint8Array;
}

const UNSIGNED_BYTE = 0x08;

/**
 * Parses an uncompressed IDX file (magic `00 00 08 <rank>`, big-endian dimension sizes, then the
 * values). `field` names the file in errors.
 */
export function parseIdx(bytes: Uint8Array, field = 'idx'): IdxArray {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    throw new DataError(field, 'is gzip-compressed; decompress it first (the Node loaders in @regstack/datasets/node do)');
  }
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    const magic = Array.from(bytes.subarray(0, 4), (byte) => byte.toString(16).padStart(2, '0')).join(' ');
    throw new DataError(field, `wrong magic number "${magic}": an IDX file starts with 00 00 <type> <rank>`);
  }
  if (bytes[2] !== UNSIGNED_BYTE) {
    throw new DataError(field, `value type 0x${bytes[2]!.toString(16)} is not supported; only unsigned bytes (0x08) are`);
  }
  const rank = bytes[3]!;
  const headerLength = 4 + 4 * rank;
  if (rank === 0 || bytes.length < headerLength) {
    throw new DataError(field, `truncated header: rank ${rank} needs ${headerLength} bytes, the file has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dimensions = Array.from({ length: rank }, (_, axis) => view.getUint32(4 + 4 * axis, false));
  const expected = dimensions.reduce((product, size) => product * size, 1);
  const available = bytes.length - headerLength;
  if (available < expected) {
    throw new DataError(field, `truncated: the header announces [${dimensions.join(', ')}] = ${expected} values, the file holds ${available}`);
  }
  if (available > expected) {
    throw new DataError(field, `${available - expected} bytes follow the ${expected} values announced by the header [${dimensions.join(', ')}]`);
  }
  return { dimensions, data: bytes.subarray(headerLength) };
}

/** The licence line of Fashion-MNIST; the full text ships as `data/FASHION-MNIST-LICENSE`. */
export const fashionMnistLicense = 'MIT, Copyright (c) 2017 Zalando SE';

/** The ten Fashion-MNIST classes, by label. */
export const fashionMnistClassNames: readonly string[] = Object.freeze([
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
]);

/**
 * A Fashion-MNIST (or MNIST) split from its two uncompressed IDX files: images `[N, 28, 28]` and
 * labels `[N]`. Images are copied so that the data set does not pin the file's buffer.
 */
export function datasetFromIdx(imageBytes: Uint8Array, labelBytes: Uint8Array, name: string): Dataset {
  const images = parseIdx(imageBytes, `${name}.images`);
  const labels = parseIdx(labelBytes, `${name}.labels`);
  if (images.dimensions.length !== 3) {
    throw new DataError(`${name}.images`, `expected rank 3 [count, height, width], got [${images.dimensions.join(', ')}]`);
  }
  if (labels.dimensions.length !== 1) {
    throw new DataError(`${name}.labels`, `expected rank 1 [count], got [${labels.dimensions.join(', ')}]`);
  }
  const [count, height, width] = images.dimensions as [number, number, number];
  if (labels.dimensions[0] !== count) {
    throw new DataError(`${name}.labels`, `holds ${labels.dimensions[0]} labels for ${count} images`);
  }
  return new Dataset({
    name,
    images: images.data.slice(),
    labels: Int32Array.from(labels.data),
    imageShape: [height, width, 1],
    numClasses: 10,
    classNames: fashionMnistClassNames,
  });
}
