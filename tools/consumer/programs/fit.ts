// The model.fit-style entry point (needs `fit` from @regstack/trainer): one line of a TF.js program
// changes. Afterwards the model is an ordinary LayersModel: saved and reloaded, it predicts the same.
import * as tf from '@tensorflow/tfjs';
import { useBackend } from '@regstack/backend';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { mixup } from '@regstack/mixup';
import { rcad } from '@regstack/rcad';
import { fit } from '@regstack/trainer';
import { convNet, report } from './shared.js';

async function main(): Promise<void> {
  await useBackend('wasm');
  const { train } = loadEmbeddedFashionMnist({ validationFraction: 0 });
  const { inputs: x, labels: y } = train.batch(Array.from({ length: 160 }, (_, index) => index * 12));
  const model = convNet();
  const epochEnds: number[] = [];
  const history = await fit(model, x, y, {
    regularizers: [rcad(), mixup()],
    optimizer: tf.train.adam(0.005),
    epochs: 2,
    batchSize: 32,
    validationSplit: 0.2,
    seed: 0,
    callbacks: { onEpochEnd: (epoch) => void epochEnds.push(epoch) },
  });

  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler(async (artifacts) => {
    saved = artifacts;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  const reloaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
  const probe = x.slice([0], [8]);
  const before = model.predict(probe) as tf.Tensor;
  const after = reloaded.predict(probe) as tf.Tensor;
  const predictionDifference = tf.max(tf.abs(tf.sub(before, after))).dataSync()[0];
  report({ epochs: history.epoch, keys: Object.keys(history.history).sort(), history: history.history, epochEnds, predictionDifference });
}

void main();
