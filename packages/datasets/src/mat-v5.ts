import { inflateSync } from 'node:zlib';
import { DataError } from '@regstack/regularizer';

/** A numeric array read from a MAT-file: values in MATLAB's column-major order. */
export interface MatArray {
  /** The variable's name. */
  name: string;
  /** MATLAB class, e.g. `uint8` or `double` (what `class(x)` says in MATLAB). */
  matlabClass: string;
  /** Size of each dimension, as MATLAB's `size(x)` says. */
  dimensions: number[];
  /**
   * The real part, column-major, in the type it was stored as: MATLAB stores a `double` array of
   * small integers as bytes, so a `double` variable may come back as a `Uint8Array`.
   */
  values: Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array | Float32Array | Float64Array;
}

const HEADER_BYTES = 128;
const MI_MATRIX = 14;
const MI_COMPRESSED = 15;

/** Storage types: name, bytes per value, and how to read one value. */
const STORAGE: Record<number, { bytes: number; make: (count: number) => MatArray['values']; read: (view: DataView, offset: number, little: boolean) => number }> = {
  1: { bytes: 1, make: (count) => new Int8Array(count), read: (view, offset) => view.getInt8(offset) },
  2: { bytes: 1, make: (count) => new Uint8Array(count), read: (view, offset) => view.getUint8(offset) },
  3: { bytes: 2, make: (count) => new Int16Array(count), read: (view, offset, little) => view.getInt16(offset, little) },
  4: { bytes: 2, make: (count) => new Uint16Array(count), read: (view, offset, little) => view.getUint16(offset, little) },
  5: { bytes: 4, make: (count) => new Int32Array(count), read: (view, offset, little) => view.getInt32(offset, little) },
  6: { bytes: 4, make: (count) => new Uint32Array(count), read: (view, offset, little) => view.getUint32(offset, little) },
  7: { bytes: 4, make: (count) => new Float32Array(count), read: (view, offset, little) => view.getFloat32(offset, little) },
  9: { bytes: 8, make: (count) => new Float64Array(count), read: (view, offset, little) => view.getFloat64(offset, little) },
};

const NUMERIC_CLASSES: Record<number, string> = {
  6: 'double',
  7: 'single',
  8: 'int8',
  9: 'uint8',
  10: 'int16',
  11: 'uint16',
  12: 'int32',
  13: 'uint32',
};

interface Element {
  type: number;
  data: Uint8Array;
  /** Offset of the next element. */
  next: number;
}

function readElement(bytes: Uint8Array, view: DataView, offset: number, little: boolean, field: string): Element {
  if (offset + 8 > bytes.length) throw new DataError(field, `truncated: a data element tag at byte ${offset} runs past the end (${bytes.length} bytes)`);
  const first = view.getUint32(offset, little);
  // Small data element format: type and size share the first four bytes, the data the next four.
  if (first >>> 16 !== 0) {
    const size = first >>> 16;
    if (size > 4) throw new DataError(field, `corrupt small data element at byte ${offset}: size ${size} > 4`);
    return { type: first & 0xffff, data: bytes.subarray(offset + 4, offset + 4 + size), next: offset + 8 };
  }
  const size = view.getUint32(offset + 4, little);
  const start = offset + 8;
  if (start + size > bytes.length) {
    throw new DataError(field, `truncated: an element at byte ${offset} announces ${size} bytes, ${bytes.length - start} remain`);
  }
  // Elements are padded to 8 bytes, except compressed ones, whose size is exact.
  const padded = first === MI_COMPRESSED ? size : Math.ceil(size / 8) * 8;
  return { type: first, data: bytes.subarray(start, start + size), next: start + padded };
}

function readNumbers(element: Element, little: boolean, field: string): MatArray['values'] {
  const storage = STORAGE[element.type];
  if (storage === undefined) throw new DataError(field, `unsupported storage type ${element.type}`);
  const count = Math.floor(element.data.length / storage.bytes);
  if (storage.bytes === 1) {
    return element.type === 2 ? element.data : new Int8Array(element.data.buffer, element.data.byteOffset, count);
  }
  // Multi-byte values may be unaligned or big-endian: read them one by one.
  const values = storage.make(count);
  const view = new DataView(element.data.buffer, element.data.byteOffset, element.data.byteLength);
  for (let index = 0; index < count; index++) values[index] = storage.read(view, index * storage.bytes, little);
  return values;
}

function readMatrix(data: Uint8Array, little: boolean, field: string): MatArray | undefined {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const flags = readElement(data, view, 0, little, field);
  const flagWord = new DataView(flags.data.buffer, flags.data.byteOffset, flags.data.byteLength).getUint32(0, little);
  const classCode = flagWord & 0xff;
  const complex = (flagWord & 0x800) !== 0;
  const dimensionsElement = readElement(data, view, flags.next, little, field);
  const dimensions = Array.from(readNumbers(dimensionsElement, little, `${field}.dimensions`));
  const nameElement = readElement(data, view, dimensionsElement.next, little, field);
  const name = new TextDecoder().decode(nameElement.data);
  const matlabClass = NUMERIC_CLASSES[classCode];
  // Cells, structs, characters and sparse arrays are not image data: skip them.
  if (matlabClass === undefined || complex) return undefined;
  const real = readElement(data, view, nameElement.next, little, `${field}.${name}`);
  const values = readNumbers(real, little, `${field}.${name}`);
  const expected = dimensions.reduce((product, size) => product * size, 1);
  if (values.length !== expected) {
    throw new DataError(`${field}.${name}`, `holds ${values.length} values, its dimensions [${dimensions.join(', ')}] need ${expected}`);
  }
  return { name, matlabClass, dimensions, values };
}

/**
 * Reads the numeric variables of a MATLAB 5 / 7 MAT-file (`save -v7`, the default; not HDF5-based
 * `-v7.3`), including zlib-compressed elements. Non-numeric variables are skipped. `field` names
 * the file in errors.
 */
export function readMatV5(bytes: Uint8Array, field = 'mat'): Map<string, MatArray> {
  if (bytes.length < HEADER_BYTES) throw new DataError(field, `truncated: ${bytes.length} bytes is shorter than the 128-byte MAT-file header`);
  const header = new TextDecoder('latin1').decode(bytes.subarray(0, 116));
  if (header.startsWith('MATLAB 7.3')) throw new DataError(field, 'is a MATLAB 7.3 (HDF5) file; re-save it with save(..., "-v7")');
  const endian = String.fromCharCode(bytes[126]!, bytes[127]!);
  if (!header.startsWith('MATLAB 5.0 MAT-file') || (endian !== 'IM' && endian !== 'MI')) {
    throw new DataError(field, `not a MATLAB 5 MAT-file (header "${header.slice(0, 20)}", endian mark "${endian}")`);
  }
  const little = endian === 'IM';
  const variables = new Map<string, MatArray>();
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = HEADER_BYTES;
  while (offset < bytes.length) {
    let element = readElement(bytes, view, offset, little, field);
    offset = element.next;
    if (element.type === MI_COMPRESSED) {
      let inflated: Uint8Array;
      try {
        inflated = inflateSync(element.data);
      } catch (error) {
        throw new DataError(field, 'a compressed element does not inflate', { cause: error });
      }
      element = readElement(inflated, new DataView(inflated.buffer, inflated.byteOffset, inflated.byteLength), 0, little, field);
    }
    if (element.type !== MI_MATRIX) continue;
    const matrix = readMatrix(element.data, little, field);
    if (matrix !== undefined) variables.set(matrix.name, matrix);
  }
  return variables;
}
