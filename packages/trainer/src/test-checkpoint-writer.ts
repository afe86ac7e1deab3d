// A child process for the kill test of the file store (checkpoint-store.test.ts): resumes from the
// store's checkpoint if there is one, then saves checkpoints of known content in a loop, printing
// `saved <epoch>` after each, until it is killed. Run with tsx (`node --import tsx`).
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { serializeCheckpoint, type TrainingState } from './checkpoint.js';
import { createFileCheckpointStore } from './file-store.js';

/** Elements of the big tensor: 4 MB, so that a kill often lands inside a write. */
export const WRITER_ELEMENTS = 1 << 20;

/** The content saved at `epoch`: each value a function of the epoch and its position. */
export function writerValues(epoch: number): Float32Array {
  const values = new Float32Array(WRITER_ELEMENTS);
  for (let i = 0; i < values.length; i++) values[i] = epoch + (i % 997) / 997;
  return values;
}

export function writerState(epoch: number): TrainingState {
  return { epoch, step: 10 * epoch, random: { seed: epoch, state: [epoch, 1, 2, 3] } as never, bestEpoch: epoch, bestValidationAccuracy: 0.5, history: [] };
}

async function main(directory: string): Promise<void> {
  await tf.setBackend('cpu');
  const store = createFileCheckpointStore(directory);
  const loaded = await store.load();
  let epoch = loaded ? loaded.manifest.state.epoch : 0;
  process.stdout.write(`ready ${epoch}\n`);
  for (;;) {
    epoch++;
    const tensor = tf.tensor1d(writerValues(epoch));
    const small = tf.tensor1d([epoch, -epoch], 'int32');
    const checkpoint = await serializeCheckpoint(writerState(epoch), {
      model: [{ name: '0', tensor }, { name: '1', tensor: small }],
      optimizer: [],
      best: [],
    });
    tf.dispose([tensor, small]);
    await store.save(checkpoint);
    process.stdout.write(`saved ${epoch}\n`);
  }
}

if (process.argv[2] === 'run') await main(process.argv[3]!);
