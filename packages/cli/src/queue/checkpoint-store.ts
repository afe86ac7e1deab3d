import type { Redis } from 'ioredis';
import { DataError, RegstackError } from '@regstack/regularizer';
import type { CheckpointManifest, CheckpointStore, SerializedCheckpoint } from '@regstack/trainer';

/** The job's lock moved to another worker: this one must stop writing for it. */
export class LockLostError extends RegstackError {}

const MAGIC = Buffer.from('RSCK1\n');

/** One value holding a checkpoint: a magic line, the manifest's byte length, the manifest (JSON), the tensors. */
export function packCheckpoint({ manifest, data }: SerializedCheckpoint): Buffer {
  const json = Buffer.from(JSON.stringify(manifest));
  const length = Buffer.alloc(4);
  length.writeUInt32LE(json.length);
  return Buffer.concat([MAGIC, length, json, data]);
}

/** Reads back what {@link packCheckpoint} wrote; a damaged value is a DataError, never a crash. */
export function unpackCheckpoint(value: Buffer, field = 'checkpoint'): SerializedCheckpoint {
  if (value.length < MAGIC.length + 4 || !value.subarray(0, MAGIC.length).equals(MAGIC)) throw new DataError(field, 'is not a regstack checkpoint');
  const length = value.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + length > value.length) throw new DataError(field, 'is truncated');
  let manifest: CheckpointManifest;
  try {
    manifest = JSON.parse(value.subarray(start, start + length).toString('utf8')) as CheckpointManifest;
  } catch {
    throw new DataError(field, 'has a manifest that is not valid JSON');
  }
  // A copy: the trainer slices the data's buffer, which must not be the whole reply's.
  return { manifest, data: new Uint8Array(value.subarray(start + length)) };
}

/**
 * Replaces the checkpoint only while this worker still holds the job's lock (BullMQ's lock key
 * holds the token of the worker that owns the job). One script, so the check and the write are
 * one step for Redis: a worker whose job was given to another after a stall can never overwrite
 * the new owner's checkpoint.
 */
const FENCED_SET = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0`;

/** Options of {@link redisCheckpointStore}. */
export interface RedisCheckpointStoreOptions {
  /** Where the latest checkpoint lives. */
  key: string;
  /** Write only while this lock key holds `token` (the job's BullMQ lock). */
  fence?: { lockKey: string; token: string };
}

/**
 * Keeps a job's latest checkpoint in one Redis value, replaced atomically by each save (a single
 * SET: a worker killed mid-write leaves the previous checkpoint whole). Any worker can resume from it.
 */
export function redisCheckpointStore(redis: Redis, options: RedisCheckpointStoreOptions): CheckpointStore {
  return {
    async save(checkpoint) {
      const value = packCheckpoint(checkpoint);
      if (!options.fence) {
        await redis.set(options.key, value);
        return;
      }
      const written = await redis.eval(FENCED_SET, 2, options.fence.lockKey, options.key, options.fence.token, value);
      if (written !== 1) throw new LockLostError('job', 'its lock now belongs to another worker (this one stalled); the checkpoint was not written');
    },
    async load() {
      const value = await redis.getBuffer(options.key);
      return value ? unpackCheckpoint(value, `checkpoint ${options.key}`) : null;
    },
  };
}
