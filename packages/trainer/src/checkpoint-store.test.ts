import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError, DivergenceError, classifierFromFunction } from '@regstack/regularizer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointTensors, memoryCheckpointStore, serializeCheckpoint, verifyCheckpoint, type SerializedCheckpoint } from './checkpoint.js';
import { tensorData } from './data.js';
import { SAVE_STEPS, createFileCheckpointStore, type SaveStep } from './file-store.js';
import { fileCheckpointStore } from './node.js';
import { writerState, writerValues, WRITER_ELEMENTS } from './test-checkpoint-writer.js';
import { linearModel, prototypeData } from './test-models.js';
import { train } from './trainer.js';

let directory: string;
beforeAll(async () => {
  await tf.setBackend('cpu');
  directory = await mkdtemp(join(tmpdir(), 'regstack-store-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** A small checkpoint whose content is a function of `epoch`. */
async function smallCheckpoint(epoch: number): Promise<SerializedCheckpoint> {
  const tensor = tf.tensor1d([epoch, epoch + 0.5, epoch + 0.25]);
  const checkpoint = await serializeCheckpoint(writerState(epoch), { model: [{ name: '0', tensor }], optimizer: [], best: [] });
  tensor.dispose();
  return checkpoint;
}

function problem(count: number, seed: number) {
  const { inputs, labels } = prototypeData(count, 12, 4, seed);
  return tensorData(tf.tensor2d(inputs, [count, 12]), tf.tensor1d(labels, 'int32'));
}

describe('checkpoint format', () => {
  it('records the SHA-256 of the blob and verifies it', async () => {
    const checkpoint = await smallCheckpoint(3);
    expect(checkpoint.manifest.version).toBe(2);
    // Three float32 values: 12 bytes; the hash checked against Node's own implementation.
    const { createHash } = await import('node:crypto');
    expect(checkpoint.manifest.sha256).toBe(createHash('sha256').update(checkpoint.data).digest('hex'));
    await expect(verifyCheckpoint(checkpoint)).resolves.toBeUndefined();
    const flipped = { ...checkpoint, data: checkpoint.data.slice(), source: '/runs/x/checkpoint-3.bin' };
    flipped.data[5]! ^= 1;
    await expect(verifyCheckpoint(flipped)).rejects.toThrow(/\/runs\/x\/checkpoint-3\.bin: checksum mismatch/);
    await expect(verifyCheckpoint({ ...checkpoint, data: checkpoint.data.slice(0, 8) })).rejects.toThrow(/holds 8 bytes but its manifest lists 12/);
  });

  it('refuses NaN or infinite values even with a matching checksum, and leaks no tensor', async () => {
    const tensor = tf.tensor1d([1, Number.NaN, 2]);
    const good = tf.tensor1d([1, 2]);
    const checkpoint = await serializeCheckpoint(writerState(1), { model: [{ name: '0', tensor: good }, { name: '1', tensor }], optimizer: [], best: [] });
    await verifyCheckpoint(checkpoint); // the bytes are as written
    const before = tf.memory().numTensors;
    expect(() => checkpointTensors({ ...checkpoint, source: 'memory' }, 'model')).toThrow(/memory: model\.1: value 1 is NaN/);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([tensor, good]);
  });
});

describe('file checkpoint store', () => {
  it('leaves the previous or the new checkpoint loadable when a save stops after any step', async () => {
    const seen: Record<string, number> = {};
    for (const stopAt of SAVE_STEPS) {
      const folder = join(directory, `step-${stopAt}`);
      await createFileCheckpointStore(folder).save(await smallCheckpoint(1));
      const crash = new Error('killed');
      const store = createFileCheckpointStore(folder, { afterStep: (step: SaveStep) => { if (step === stopAt) throw crash; } });
      await expect(store.save(await smallCheckpoint(2))).rejects.toBe(crash);
      const loaded = await fileCheckpointStore(folder).load();
      const epoch = loaded!.manifest.state.epoch;
      expect(Array.from(new Float32Array(loaded!.data.buffer, loaded!.data.byteOffset, 3))).toEqual([epoch, epoch + 0.5, epoch + 0.25]);
      seen[stopAt] = epoch;
      // The next save cleans whatever the stopped one left.
      await createFileCheckpointStore(folder).save(await smallCheckpoint(3));
      expect((await readdir(folder)).sort()).toEqual([`checkpoint-3-${(await smallCheckpoint(3)).manifest.sha256!.slice(0, 16)}.bin`, 'checkpoint.json']);
    }
    // Until the manifest's rename the previous checkpoint is the one read; from it on, the new one.
    expect(seen).toEqual({ 'blob-written': 1, 'blob-renamed': 1, 'manifest-written': 1, 'manifest-renamed': 2, cleaned: 2 });
  });

  it('survives SIGKILL at many instants of a save loop: every kill leaves a checkpoint that loads and equals a saved one', async () => {
    const folder = join(directory, 'kill-loop');
    const script = fileURLToPath(new URL('./test-checkpoint-writer.ts', import.meta.url));
    const outcomes: string[] = [];
    // Delays after the first save spread over the next few (each writes and hashes 4 MB, a few
    // milliseconds once warm), so kills land in every phase of a save.
    const delays = [0, 4, 8, 12, 17, 23, 30, 38, 47, 57, 68, 80, 95, 110];
    let lastConfirmed = 0;
    for (const delay of delays) {
      const child = spawn(process.execPath, ['--conditions=@regstack/source', '--import', 'tsx', script, 'run', folder], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      let errors = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
      await new Promise<void>((resolve, reject) => {
        const poll = setInterval(() => {
          if (/saved \d+\n/.test(output)) { clearInterval(poll); resolve(); }
          if (child.exitCode !== null) { clearInterval(poll); reject(new Error(`writer exited early: ${errors}`)); }
        }, 2);
      });
      const started = Number(/ready (\d+)/.exec(output)![1]);
      expect(started).toBeGreaterThanOrEqual(lastConfirmed); // what a previous kill left was loaded by the writer itself
      await new Promise((resolve) => setTimeout(resolve, delay));
      child.kill('SIGKILL');
      await exited;
      const confirmed = [...output.matchAll(/saved (\d+)/g)].map((match) => Number(match[1]));
      const files = await readdir(folder).catch(() => [] as string[]);
      const loaded = await fileCheckpointStore(folder).load();
      const epoch = loaded?.manifest.state.epoch ?? 0;
      const last = confirmed.at(-1) ?? started;
      // The checkpoint read is the last confirmed save or the one being written when the kill came.
      expect([last, last + 1]).toContain(epoch);
      if (loaded) {
        const values = new Float32Array(loaded.data.buffer, loaded.data.byteOffset, WRITER_ELEMENTS);
        expect(Buffer.from(values.buffer, values.byteOffset, values.byteLength).equals(Buffer.from(writerValues(epoch).buffer))).toBe(true);
      }
      lastConfirmed = epoch;
      const ours = files.filter((name) => name.endsWith(`.${child.pid}.tmp`)); // not those of an earlier kill
      const phase = ours.length > 0
        ? (ours.some((name) => name.startsWith('checkpoint.json.')) ? 'manifest being written' : 'blob being written')
        : files.filter((name) => name.endsWith('.bin')).length > 1
          ? (epoch === last ? 'new blob in place, manifest not switched' : 'manifest switched, old blob not yet deleted')
          : 'no file being written';
      outcomes.push(`${delay} ms: ${confirmed.length} saves, loaded epoch ${epoch} (${epoch === last ? 'last confirmed' : 'the save in flight'}), ${phase}`);
    }
    console.info(`kill points:\n  ${outcomes.join('\n  ')}`);
  });

  it('names the file when the blob is corrupt or missing, or the manifest is not JSON', async () => {
    const folder = join(directory, 'corrupt');
    const store = fileCheckpointStore(folder);
    const tensor = tf.tensor1d(writerValues(1).subarray(0, 4000));
    await store.save(await serializeCheckpoint(writerState(1), { model: [{ name: '0', tensor }], optimizer: [], best: [] }));
    tensor.dispose();
    const blob = (await readdir(folder)).find((name) => name.endsWith('.bin'))!;
    const bytes = await readFile(join(folder, blob));
    bytes.fill(0xff, 1000, 5000); // 4,000 bytes of 0xFF, same size: NaNs without the checksum
    await writeFile(join(folder, blob), bytes);
    await expect(store.load()).rejects.toThrow(new RegExp(`${join(folder, blob)}: checksum mismatch`));
    await unlink(join(folder, blob));
    await expect(store.load()).rejects.toThrow(DataError);
    await expect(store.load()).rejects.toThrow(new RegExp(`${join(folder, blob)}: is missing`));
    await writeFile(join(folder, 'checkpoint.json'), '{"format": "regstack-ch');
    await expect(store.load()).rejects.toThrow(/checkpoint\.json: is not valid JSON/);
  });
});

describe('resume checks', () => {
  it('refuses a corrupt checkpoint before touching the model, leaking no tensor', async () => {
    const data = problem(120, 2);
    const folder = join(directory, 'resume-corrupt');
    const model = linearModel(12, 4, 1);
    const common = { model, train: data, batchSize: 16, learningRate: 0.2, seed: 3, epochs: 2 } as const;
    await train({ ...common, checkpoints: fileCheckpointStore(folder) });
    const blob = (await readdir(folder)).find((name) => name.endsWith('.bin'))!;
    const bytes = await readFile(join(folder, blob));
    bytes.fill(0xff, 0, 40);
    await writeFile(join(folder, blob), bytes);
    const before = values(model);
    const tensors = tf.memory().numTensors;
    await expect(train({ ...common, epochs: 3, checkpoints: fileCheckpointStore(folder), resume: true })).rejects.toThrow(/checksum mismatch/);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(values(model)).toEqual(before);
    // The same bytes through a store that does not verify (memory, a database): the trainer checks.
    const stored = memoryCheckpointStore();
    const manifest = JSON.parse(await readFile(join(folder, 'checkpoint.json'), 'utf8'));
    await stored.save({ manifest, data: new Uint8Array(bytes) });
    await expect(train({ ...common, epochs: 3, checkpoints: stored, resume: true })).rejects.toThrow(/checkpoint: checksum mismatch/);
    expect(tf.memory().numTensors).toBe(tensors);
    model.dispose();
  });

  it('refuses to resume a checkpoint of a run with other settings, listing the differences', async () => {
    const data = problem(120, 2);
    const store = memoryCheckpointStore();
    const model = linearModel(12, 4, 1);
    await train({ model, train: data, batchSize: 16, learningRate: 0.2, seed: 3, epochs: 1, checkpoints: store });
    const attempt = train({ model, train: data, batchSize: 16, learningRate: 0.01, seed: 9, epochs: 3, checkpoints: store, resume: true });
    await expect(attempt).rejects.toThrow(ConfigError);
    await expect(train({ model, train: data, batchSize: 16, learningRate: 0.01, seed: 9, epochs: 3, checkpoints: store, resume: true }))
      .rejects.toThrow(/resume: the checkpoint was written by a different run: seed 3 → 9; learningRate at epoch 1 0\.2 → 0\.01/);
    await expect(train({ model, train: data, batchSize: 8, learningRate: 0.2, seed: 3, epochs: 3, checkpoints: store, resume: true }))
      .rejects.toThrow(/batchSize 16 → 8/);
    // More epochs with the same settings is allowed: it continues.
    const result = await train({ model, train: data, batchSize: 16, learningRate: 0.2, seed: 3, epochs: 2, checkpoints: store, resume: true });
    expect(result.history.map((record) => record.epoch)).toEqual([1, 2]);
    model.dispose();
  });

  it('rejects a negative learning rate and does not name a checkpoint that was never saved on divergence', async () => {
    const data = problem(64, 4);
    const model = linearModel(12, 4, 1);
    await expect(train({ model, train: data, learningRate: -1 })).rejects.toThrow(/learningRate: must be ≥ 0 at the start, got -1/);
    const poisoned = classifierFromFunction({
      numClasses: 4,
      trainableVariables: model.trainableVariables,
      apply: (inputs, options) => tf.mul(model.apply(inputs, options).logits, Number.NaN) as tf.Tensor2D,
    });
    const failure = train({ model: poisoned, train: data, epochs: 2, batchSize: 16, checkpoints: memoryCheckpointStore() });
    await expect(failure).rejects.toThrow(DivergenceError);
    await expect(train({ model: poisoned, train: data, epochs: 2, batchSize: 16, checkpoints: memoryCheckpointStore() }))
      .rejects.toThrow(/at epoch 1, step 0; training stopped and no checkpoint was saved/);
    await expect(train({ model: poisoned, train: data, epochs: 2, batchSize: 16 })).rejects.not.toThrow(/epoch 0/);
    model.dispose();
  });
});

const values = (model: { trainableVariables: readonly tf.Variable[] }) => model.trainableVariables.map((v) => Array.from(v.dataSync()));
