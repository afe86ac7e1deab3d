import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError } from '@regstack/regularizer';
import type { ClassifierModel } from './model.js';

/** One tensor of {@link SavedWeights}. */
export interface SavedTensor {
  /** The variable's name, e.g. `layer1.0.conv1.weight`. */
  name: string;
  /** Its shape in regstack's layout (conv HWIO, linear [in, out]). */
  shape: number[];
  /** Always `float32`. */
  dtype: 'float32';
  /** The values in row-major order as little-endian float32 bytes, base64-encoded. */
  data: string;
}

/** A model's weights as a JSON-serialisable object (see {@link saveWeights}). */
export interface SavedWeights {
  /** Marks the object's format. */
  format: 'regstack-weights';
  /** Format version. */
  version: 1;
  /** The model's architecture, e.g. `resnet18`. */
  architecture: string;
  /** Every variable, trainable and running statistics, in the model's order. */
  tensors: SavedTensor[];
}

/** Options of {@link loadWeights} and {@link importNamedTensors}. */
export interface LoadWeightsOptions {
  /**
   * When true (default), every model variable must be given and no unknown name may appear;
   * when false, only the given names are loaded (still shape-checked), e.g. for fine-tuning a new head.
   */
  strict?: boolean;
}

/**
 * Reads every variable of `model` (trainable weights and batch-norm running statistics) into a
 * JSON-serialisable object, ready for `JSON.stringify`.
 */
export async function saveWeights(model: ClassifierModel): Promise<SavedWeights> {
  const tensors: SavedTensor[] = [];
  for (const [name, variable] of model.namedVariables()) {
    const values = (await variable.data()) as Float32Array;
    tensors.push({ name, shape: [...variable.shape], dtype: 'float32', data: encodeFloat32(values) });
  }
  return { format: 'regstack-weights', version: 1, architecture: model.architecture, tensors };
}

/**
 * Loads {@link SavedWeights} into `model`. Every tensor is checked before any is written, so a
 * failed load leaves the model unchanged; a mismatch raises a DataError naming the tensor.
 */
export function loadWeights(model: ClassifierModel, saved: SavedWeights, options: LoadWeightsOptions = {}): void {
  if (saved === null || typeof saved !== 'object' || saved.format !== 'regstack-weights') {
    throw new DataError('weights.format', `expected an object from saveWeights (format 'regstack-weights')`);
  }
  if (saved.version !== 1) throw new DataError('weights.version', `unsupported version ${String(saved.version)}`);
  if (!Array.isArray(saved.tensors)) throw new DataError('weights.tensors', 'expected an array');
  const strict = options.strict ?? true;
  if (strict && saved.architecture !== model.architecture) {
    throw new DataError('weights.architecture', `weights of a ${saved.architecture}, model is a ${model.architecture}`);
  }
  const decoded = new Map<string, { shape: number[]; values: Float32Array }>();
  for (const tensor of saved.tensors) {
    if (tensor.dtype !== 'float32') throw new DataError(`weights.${tensor.name}`, `expected dtype float32, got ${String(tensor.dtype)}`);
    const values = decodeFloat32(tensor.data, `weights.${tensor.name}`);
    decoded.set(tensor.name, { shape: tensor.shape, values });
  }
  assign(model, decoded, strict);
}

/**
 * Every variable of `model` as a `tf.NamedTensorMap` of copies (the caller disposes them), e.g. for
 * `tf.io.encodeWeights` or a `tf.io` save handler.
 */
export function exportNamedTensors(model: ClassifierModel): tf.NamedTensorMap {
  const map: tf.NamedTensorMap = {};
  for (const [name, variable] of model.namedVariables()) map[name] = tf.clone(variable);
  return map;
}

/**
 * Loads a `tf.NamedTensorMap` (e.g. from `tf.io.decodeWeights`, or PyTorch weights converted to
 * regstack's layout) into `model`. Shapes are checked first; the caller keeps ownership of `tensors`.
 */
export function importNamedTensors(model: ClassifierModel, tensors: tf.NamedTensorMap, options: LoadWeightsOptions = {}): void {
  if (tensors === null || typeof tensors !== 'object') throw new DataError('weights', 'expected a NamedTensorMap');
  const entries = new Map<string, { shape: number[]; tensor: tf.Tensor }>();
  for (const [name, tensor] of Object.entries(tensors)) {
    if (!(tensor instanceof tf.Tensor)) throw new DataError(`weights.${name}`, 'expected a tf.Tensor');
    if (tensor.dtype !== 'float32') throw new DataError(`weights.${name}`, `expected dtype float32, got ${tensor.dtype}`);
    entries.set(name, { shape: tensor.shape, tensor });
  }
  assign(model, entries, options.strict ?? true);
}

function assign(
  model: ClassifierModel,
  given: Map<string, { shape: number[]; values?: Float32Array; tensor?: tf.Tensor }>,
  strict: boolean,
): void {
  const variables = model.namedVariables();
  for (const [name, entry] of given) {
    const variable = variables.get(name);
    if (variable === undefined) {
      if (strict) throw new DataError(`weights.${name}`, `no variable of that name in this ${model.architecture}`);
      continue;
    }
    if (!Array.isArray(entry.shape) || !sameShape(entry.shape, variable.shape)) {
      throw new DataError(`weights.${name}`, `expected shape [${variable.shape.join(', ')}], got [${String(entry.shape)}]`);
    }
    if (entry.values !== undefined && entry.values.length !== variable.size) {
      throw new DataError(`weights.${name}`, `expected ${variable.size} values for shape [${variable.shape.join(', ')}], got ${entry.values.length}`);
    }
  }
  if (strict) {
    for (const name of variables.keys()) {
      if (!given.has(name)) throw new DataError(`weights.${name}`, 'missing');
    }
  }
  tf.tidy(() => {
    for (const [name, entry] of given) {
      const variable = variables.get(name);
      if (variable === undefined) continue;
      variable.assign(entry.tensor ? tf.clone(entry.tensor) : tf.tensor(entry.values!, variable.shape, 'float32'));
    }
  });
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((size, axis) => size === b[axis]);
}

const chunkSize = 0x8000;

function encodeFloat32(values: Float32Array): string {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  if (!littleEndian) {
    throw new ConfigError('platform', 'saveWeights needs a little-endian platform');
  }
  let binary = '';
  for (let offset = 0; offset < bytes.length; offset += chunkSize) {
    binary += String.fromCharCode(...bytes.subarray(offset, offset + chunkSize));
  }
  return btoa(binary);
}

function decodeFloat32(data: unknown, field: string): Float32Array {
  if (typeof data !== 'string') throw new DataError(field, 'expected base64 data');
  let binary: string;
  try {
    binary = atob(data);
  } catch {
    throw new DataError(field, 'data is not valid base64');
  }
  if (binary.length % 4 !== 0) throw new DataError(field, `data has ${binary.length} bytes, not a whole number of float32 values`);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
  return new Float32Array(bytes.buffer);
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
