import { DataError } from '@regstack/regularizer';
import { Dataset } from './dataset.js';

const SIDE = 32;
const PIXELS = SIDE * SIDE;
const IMAGE_BYTES = 3 * PIXELS;

/** The ten CIFAR-10 classes, by label. */
export const cifar10ClassNames: readonly string[] = Object.freeze([
  'airplane',
  'automobile',
  'bird',
  'cat',
  'deer',
  'dog',
  'frog',
  'horse',
  'ship',
  'truck',
]);

/** Which CIFAR-100 labels a data set carries: the 100 fine classes or the 20 coarse superclasses. */
export type Cifar100LabelKind = 'fine' | 'coarse';

/**
 * Records of the CIFAR binary version: `labelBytes` label bytes, then 1024 red, 1024 green and 1024
 * blue bytes, each plane row-major. Returns NHWC bytes and one label array per label byte.
 */
function parseRecords(bytes: Uint8Array, labelBytes: number, field: string): { images: Uint8Array; labels: Int32Array[] } {
  const recordBytes = labelBytes + IMAGE_BYTES;
  if (bytes.length === 0 || bytes.length % recordBytes !== 0) {
    throw new DataError(
      field,
      `${bytes.length} bytes is not a whole number of ${recordBytes}-byte records (${labelBytes} label byte${labelBytes > 1 ? 's' : ''} + 3072 pixel bytes): truncated file or wrong CIFAR version`,
    );
  }
  const count = bytes.length / recordBytes;
  const images = new Uint8Array(count * IMAGE_BYTES);
  const labels = Array.from({ length: labelBytes }, () => new Int32Array(count));
  for (let example = 0; example < count; example++) {
    const record = example * recordBytes;
    for (let which = 0; which < labelBytes; which++) labels[which]![example] = bytes[record + which]!;
    const planes = record + labelBytes;
    const target = example * IMAGE_BYTES;
    // Planar CHW on disk, interleaved HWC in memory: the layout TF.js convolutions expect.
    for (let pixel = 0; pixel < PIXELS; pixel++) {
      images[target + 3 * pixel] = bytes[planes + pixel]!;
      images[target + 3 * pixel + 1] = bytes[planes + PIXELS + pixel]!;
      images[target + 3 * pixel + 2] = bytes[planes + 2 * PIXELS + pixel]!;
    }
  }
  return { images, labels };
}

function checkLabels(labels: Int32Array, limit: number, field: string): void {
  const bad = labels.findIndex((label) => label >= limit);
  if (bad >= 0) {
    throw new DataError(`${field}[${bad}]`, `label ${labels[bad]} is not below ${limit}: is this the right CIFAR version?`);
  }
}

/** One or more CIFAR-10 binary batches (`data_batch_1.bin` … `test_batch.bin`), joined in order. */
export function parseCifar10(batches: readonly Uint8Array[], name: string): Dataset {
  const parsed = batches.map((bytes, index) => parseRecords(bytes, 1, `${name}.files[${index}]`));
  const images = joinBytes(parsed.map((part) => part.images));
  const labels = joinLabels(parsed.map((part) => part.labels[0]!));
  checkLabels(labels, 10, `${name}.labels`);
  return new Dataset({ name, images, labels, imageShape: [SIDE, SIDE, 3], numClasses: 10, classNames: cifar10ClassNames });
}

/** Both label sets of a CIFAR-100 binary file (`train.bin` or `test.bin`): records are coarse label, fine label, pixels. */
export interface Cifar100Parsed {
  /** NHWC bytes. */
  images: Uint8Array;
  /** The 100-class labels. */
  fineLabels: Int32Array;
  /** The 20-superclass labels. */
  coarseLabels: Int32Array;
}

/** Parses a CIFAR-100 binary file, keeping both the fine and the coarse labels. */
export function parseCifar100Records(bytes: Uint8Array, field = 'cifar100'): Cifar100Parsed {
  const { images, labels } = parseRecords(bytes, 2, field);
  const [coarseLabels, fineLabels] = labels as [Int32Array, Int32Array];
  checkLabels(coarseLabels, 20, `${field}.coarseLabels`);
  checkLabels(fineLabels, 100, `${field}.fineLabels`);
  return { images, fineLabels, coarseLabels };
}

/** A CIFAR-100 split from its binary file, labelled by fine (100) or coarse (20) classes. */
export function parseCifar100(
  bytes: Uint8Array,
  name: string,
  labelKind: Cifar100LabelKind = 'fine',
  classNames?: { fine?: readonly string[]; coarse?: readonly string[] },
): Dataset {
  const parsed = parseCifar100Records(bytes, name);
  const names = labelKind === 'fine' ? classNames?.fine : classNames?.coarse;
  return new Dataset({
    name,
    images: parsed.images,
    labels: labelKind === 'fine' ? parsed.fineLabels : parsed.coarseLabels,
    imageShape: [SIDE, SIDE, 3],
    numClasses: labelKind === 'fine' ? 100 : 20,
    ...(names !== undefined ? { classNames: names } : {}),
  });
}

function joinBytes(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const joined = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}

function joinLabels(parts: readonly Int32Array[]): Int32Array {
  if (parts.length === 1) return parts[0]!;
  const joined = new Int32Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    joined.set(part, offset);
    offset += part.length;
  }
  return joined;
}
