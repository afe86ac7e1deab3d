import * as tf from '@tensorflow/tfjs-core';
import { DataError, type RandomState } from '@regstack/regularizer';
import type { EpochRecord } from './trainer.js';

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
  version: 1;
  state: TrainingState;
  tensors: TensorEntry[];
}

/** A checkpoint as stored: a manifest and one binary blob of little-endian 32-bit values. */
export interface SerializedCheckpoint {
  manifest: CheckpointManifest;
  data: Uint8Array;
}

/** Where the trainer keeps its checkpoints. `save` must replace the previous one atomically. */
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
export async function serializeCheckpoint(state: TrainingState, groups: TensorGroups): Promise<SerializedCheckpoint> {
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
  return { manifest: { format: 'regstack-checkpoint', version: 1, state: structuredClone(state), tensors: entries }, data };
}

/** Unpacks the tensors of one group, in stored order. The caller disposes them. */
export function checkpointTensors(checkpoint: SerializedCheckpoint, group: TensorEntry['group']): Array<{ name: string; tensor: tf.Tensor }> {
  const { manifest, data } = checkpoint;
  if (manifest.format !== 'regstack-checkpoint' || manifest.version !== 1) {
    throw new DataError('checkpoint.format', `not a regstack checkpoint (version 1): ${manifest.format} ${manifest.version}`);
  }
  const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  return manifest.tensors
    .filter((entry) => entry.group === group)
    .map((entry) => {
      const length = entry.shape.reduce((a, b) => a * b, 1);
      if ((entry.offset + length) * 4 > data.byteLength) throw new DataError(`checkpoint.${entry.name}`, 'the data blob is truncated');
      const values = entry.dtype === 'int32' ? new Int32Array(buffer, entry.offset * 4, length) : new Float32Array(buffer, entry.offset * 4, length);
      return { name: entry.name, tensor: tf.tensor(values, entry.shape, entry.dtype) };
    });
}
