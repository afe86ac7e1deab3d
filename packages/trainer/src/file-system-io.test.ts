import * as tf from '@tensorflow/tfjs-core';
import * as tfl from '@tensorflow/tfjs-layers';
import { ConfigError, DataError } from '@regstack/regularizer';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fileSystemIO, registerFileSystemIO } from './file-system-io.js';

let directory: string;
beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), 'regstack-io-'));
});
afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

function smallModel() {
  const model = tfl.sequential();
  model.add(tfl.layers.dense({ inputShape: [3], units: 4, activation: 'relu', kernelInitializer: tfl.initializers.glorotUniform({ seed: 1 }) }));
  model.add(tfl.layers.batchNormalization());
  model.add(tfl.layers.dense({ units: 2, kernelInitializer: tfl.initializers.glorotUniform({ seed: 2 }) }));
  return model;
}

const inputs = () => tf.tensor2d([[0.1, 0.5, 0.9], [1, 0, 0.3], [0.2, 0.2, 0.2]]);

describe('file:// for plain tfjs', () => {
  it('saves model.json + weights.bin that reload to the same weights and predictions', async () => {
    registerFileSystemIO();
    registerFileSystemIO(); // idempotent: a second call adds no second router
    expect(tf.io.getSaveHandlers(`file://${directory}`)).toHaveLength(1);
    const model = smallModel();
    const result = await model.save(`file://${join(directory, 'nested', 'model')}`);
    expect(result.modelArtifactsInfo.weightDataBytes).toBe(4 * (3 * 4 + 4 + 4 * 4 + 4 * 2 + 2));
    const saved = JSON.parse(await readFile(join(directory, 'nested', 'model', 'model.json'), 'utf8'));
    expect(saved.weightsManifest[0].paths).toEqual(['./weights.bin']);
    expect(saved.modelTopology.config.layers).toHaveLength(3);

    // Loading takes the model.json or, for convenience, its directory.
    for (const url of [`file://${join(directory, 'nested', 'model', 'model.json')}`, `file://${join(directory, 'nested', 'model')}`]) {
      const loaded = await tfl.loadLayersModel(url);
      const expected = model.getWeights();
      loaded.getWeights().forEach((weight, i) => expect(Array.from(weight.dataSync())).toEqual(Array.from(expected[i]!.dataSync())));
      const x = inputs();
      const [a, b] = [model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
      expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync())); // bit for bit
      tf.dispose([x, a, b]);
      loaded.dispose();
    }
    model.dispose();
  });

  it('works as a handler without the router, and says what is wrong with typed errors', async () => {
    const model = smallModel();
    await model.save(fileSystemIO(directory));
    const loaded = await tfl.loadLayersModel(fileSystemIO(join(directory, 'model.json')));
    expect(loaded.layers).toHaveLength(3);
    loaded.dispose();

    const failure = async (promise: Promise<unknown>) => promise.then(() => null, (error: unknown) => error);
    const missing = await failure(fileSystemIO(join(directory, 'absent', 'model.json')).load!());
    expect(missing).toBeInstanceOf(DataError);
    expect((missing as DataError).field).toBe('path');
    await writeFile(join(directory, 'broken.json'), '{ not json');
    const broken = await failure(fileSystemIO(join(directory, 'broken.json')).load!());
    expect(broken).toBeInstanceOf(DataError);
    expect((broken as DataError).message).toBe(`path: ${join(directory, 'broken.json')} is not valid JSON`);
    expect((broken as DataError).cause).toBeInstanceOf(SyntaxError); // the parser's own words, kept whole
    await rm(join(directory, 'weights.bin'));
    const noWeights = await failure(fileSystemIO(join(directory, 'model.json')).load!());
    expect((noWeights as DataError).field).toBe('weightsManifest');
    // Saving onto a file, not a directory.
    const onFile = await failure(model.save(fileSystemIO(join(directory, 'broken.json'))));
    expect((onFile as DataError).field).toBe('path');
    expect(() => fileSystemIO('')).toThrow(ConfigError);
    model.dispose();
  });

  it('steps aside for another file:// handler (that of tfjs-node), so that no URL has two', async () => {
    registerFileSystemIO();
    const other: tf.io.IOHandler = { save: async () => ({ modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } }) };
    tf.io.registerSaveRouter(((url: string) => (url.startsWith('file://') ? other : null)) as Parameters<typeof tf.io.registerSaveRouter>[0]);
    const handlers = tf.io.getSaveHandlers(`file://${directory}`);
    expect(handlers).toEqual([other]);
    // Loading still goes to ours: the other registered no load router.
    expect(tf.io.getLoadHandlers(`file://${directory}/model.json`)).toHaveLength(1);
  });
});
