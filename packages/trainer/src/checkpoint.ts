import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, type RandomState } from '@regstack/regularizer';
import type { EpochRecord } from './metrics.js';

/** Where a run stands between epochs: everything but the tensors. */
export interface TrainingState {
  /** Epochs completed. */
  epoch: number;
  /** Optimizer steps taken. */
  step: number;
  /** The run's generator, to continue the same random stream. */
  random: RandomState;
  /** Epoch (1-based) whose weights are the best on validation so far, 0 if none. */
  bestEpoch: number;
  /** Their validation accuracy. */
  bestValidationAccuracy: number;
  /** One record per completed epoch. */
  history: EpochRecord[];
}

/** A tensor's entry in the manifest; its values are `length` elements at element `offset` of its dtype's block. */
export interface TensorEntry {
  group: 'model' | 'optimizer' | 'best';
  name: string;
  shape: number[];
  dtype: 'float32' | 'int32';
  offset: number;
}

/** The JSON half of a checkpoint. */
export interface CheckpointManifest {
  format: 'regstack-checkpoint';
  /** 2 adds `sha256`; version 1 (no checksum) is still read, unverified. */
  version: 1 | 2;
  state: TrainingState;
  tensors: TensorEntry[];
  /** SHA-256 of the data blob, lower-case hex: checked by {@link verifyCheckpoint} before any tensor is read. */
  sha256?: string;
  /** The settings of the run that wrote it (see `train`), compared on resume. */
  settings?: Record<string, unknown>;
}

/** A checkpoint as stored: a manifest and one binary blob of little-endian 32-bit values. */
export interface SerializedCheckpoint {
  manifest: CheckpointManifest;
  data: Uint8Array;
  /** Where it was read from (a file, a key), named in errors. Set by a store's `load`. */
  source?: string;
}

/**
 * Where the trainer keeps its checkpoints. `save` must replace the previous one atomically: a
 * process killed at any instant of a save leaves either the previous checkpoint or the new one
 * loadable. The trainer verifies what `load` returns ({@link verifyCheckpoint}), so a store need
 * not, but one that reads files should name them in `source`.
 */
export interface CheckpointStore {
  save(checkpoint: SerializedCheckpoint): Promise<void>;
  load(): Promise<SerializedCheckpoint | null>;
}

/** A store in memory (tests, browsers). */
export function memoryCheckpointStore(): CheckpointStore & { saves: number } {
  let stored: SerializedCheckpoint | null = null;
  return {
    saves: 0,
    async save(checkpoint) {
      stored = { manifest: structuredClone(checkpoint.manifest), data: checkpoint.data.slice() };
      this.saves++;
    },
    async load() {
      return stored;
    },
  };
}

/** Named tensors to write, grouped. */
export type TensorGroups = Record<TensorEntry['group'], Array<{ name: string; tensor: tf.Tensor }>>;

/** Packs state and tensors into a checkpoint. */
export async function serializeCheckpoint(
  state: TrainingState,
  groups: TensorGroups,
  settings?: Record<string, unknown>,
): Promise<SerializedCheckpoint> {
  const entries: TensorEntry[] = [];
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const group of ['model', 'optimizer', 'best'] as const) {
    for (const { name, tensor } of groups[group]) {
      const dtype = tensor.dtype === 'int32' ? 'int32' : 'float32';
      const values = await tensor.data();
      const typed = dtype === 'int32' ? Int32Array.from(values) : Float32Array.from(values);
      entries.push({ group, name, shape: [...tensor.shape], dtype, offset });
      chunks.push(new Uint8Array(typed.buffer, typed.byteOffset, typed.byteLength));
      offset += typed.length;
    }
  }
  const data = new Uint8Array(offset * 4);
  let position = 0;
  for (const chunk of chunks) {
    data.set(chunk, position);
    position += chunk.byteLength;
  }
  const manifest: CheckpointManifest = {
    format: 'regstack-checkpoint',
    version: 2,
    state: structuredClone(state),
    tensors: entries,
    sha256: await sha256Hex(data),
    ...(settings ? { settings: structuredClone(settings) } : {}),
  };
  return { manifest, data };
}

/** SHA-256 of `data` as lower-case hex, with Web Crypto (Node ≥ 20 and browsers in secure contexts). */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  const subtle = (globalThis as { crypto?: { subtle?: { digest(algorithm: string, data: Uint8Array): Promise<ArrayBuffer> } } }).crypto?.subtle;
  if (!subtle) throw new ConfigError('checkpoints', 'checksums need Web Crypto (crypto.subtle), which this environment lacks (a browser page not served over https?)');
  const digest = new Uint8Array(await subtle.digest('SHA-256', data));
  return Array.from(digest, (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * Checks a checkpoint before anything is restored from it: the format and version, that the blob
 * holds every tensor the manifest lists, and the blob's SHA-256 against the manifest's. Throws a
 * DataError naming `checkpoint.source` (the file) otherwise. Tensor values are checked finite as
 * {@link checkpointTensors} unpacks them.
 */
export async function verifyCheckpoint(checkpoint: SerializedCheckpoint): Promise<void> {
  const { manifest, data } = checkpoint;
  const where = checkpoint.source ?? 'checkpoint';
  if (!manifest || manifest.format !== 'regstack-checkpoint' || (manifest.version !== 1 && manifest.version !== 2) || !Array.isArray(manifest.tensors)) {
    throw new DataError(where, `not a regstack checkpoint (version 1 or 2): format ${manifest?.format}, version ${manifest?.version}`);
  }
  let elements = 0;
  for (const entry of manifest.tensors) elements = Math.max(elements, entry.offset + entry.shape.reduce((a, b) => a * b, 1));
  if (data.byteLength !== elements * 4) {
    throw new DataError(where, `holds ${data.byteLength} bytes but its manifest lists ${elements * 4}: truncated or from another save`);
  }
  if (manifest.version === 2) {
    const actual = await sha256Hex(data);
    if (actual !== manifest.sha256) {
      throw new DataError(where, `checksum mismatch (SHA-256 ${actual.slice(0, 16)}…, the manifest says ${String(manifest.sha256).slice(0, 16)}…): the file is corrupt`);
    }
  }
}

/**
 * Unpacks the tensors of one group, in stored order; the caller disposes them. Throws a DataError
 * naming the tensor and `checkpoint.source` when a float value is NaN or infinite (call
 * {@link verifyCheckpoint} first for the checksum).
 */
export function checkpointTensors(checkpoint: SerializedCheckpoint, group: TensorEntry['group']): Array<{ name: string; tensor: tf.Tensor }> {
  const { manifest, data } = checkpoint;
  const where = checkpoint.source ?? 'checkpoint';
  if (manifest.format !== 'regstack-checkpoint' || (manifest.version !== 1 && manifest.version !== 2)) {
    throw new DataError(where, `not a regstack checkpoint (version 1 or 2): ${manifest.format} ${manifest.version}`);
  }
  const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  // Every entry is checked before any tensor is made, so an error leaves nothing to dispose.
  const unpacked = manifest.tensors
    .filter((entry) => entry.group === group)
    .map((entry) => {
      const length = entry.shape.reduce((a, b) => a * b, 1);
      if ((entry.offset + length) * 4 > data.byteLength) throw new DataError(`${where}: ${group}.${entry.name}`, 'the data blob is truncated');
      const values = entry.dtype === 'int32' ? new Int32Array(buffer, entry.offset * 4, length) : new Float32Array(buffer, entry.offset * 4, length);
      if (values instanceof Float32Array) {
        const bad = values.findIndex((value) => !Number.isFinite(value));
        if (bad >= 0) throw new DataError(`${where}: ${group}.${entry.name}`, `value ${bad} is ${values[bad]}: the checkpoint is corrupt`);
      }
      return { entry, values };
    });
  return unpacked.map(({ entry, values }) => ({ name: entry.name, tensor: tf.tensor(values, entry.shape, entry.dtype) }));
}
