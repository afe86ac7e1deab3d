/**
 * The training worker: one run per worker. The page terminates the worker to stop a run, so the
 * training loop never has to poll for a stop request.
 */
import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '@regstack/backend';
import { balancedSubset } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { createModel } from '@regstack/models';
import { Random, RegstackError, composeRegularizers, describeError, schedules } from '@regstack/regularizer';
import { RECIPE_MILESTONE_FRACTIONS, train } from '@regstack/trainer';
// Vite copies these binaries into the build and gives their URLs; TF.js would otherwise look for
// them next to the worker script under their original names.
import wasmUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreadedSimdUrl from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import { perturbationPreview, previewIndices } from './perturbation.js';
import type { StartMessage, WorkerMessage } from './protocol.js';
import { EMBEDDED_TRAIN_SIZE, validateSettings, type PlaygroundBackend } from './settings.js';
import { regularizersOf } from './stack.js';

/** Validation images shown in the perturbation view. */
const PREVIEW_COUNT = 8;

interface WorkerScope {
  postMessage(message: WorkerMessage, transfer?: Transferable[]): void;
  onmessage: ((event: MessageEvent<StartMessage>) => void) | null;
}
const scope = self as unknown as WorkerScope;

async function prepareBackend(backend: PlaygroundBackend): Promise<void> {
  if (backend === 'webgl') {
    // useBackend loads optional backends through a specifier bundlers do not follow: a bundle imports
    // the package itself (here a chunk of its own, fetched only for webgl runs).
    await import('@tensorflow/tfjs-backend-webgl');
    await useBackend('webgl');
    return;
  }
  // TF.js insists on all three in a map, but fetches one: SIMD here, threaded SIMD only on a
  // cross-origin-isolated page, the plain binary on browsers without SIMD.
  await useBackend(backend, {
    wasmPaths: {
      'tfjs-backend-wasm.wasm': wasmUrl,
      'tfjs-backend-wasm-simd.wasm': wasmSimdUrl,
      'tfjs-backend-wasm-threaded-simd.wasm': wasmThreadedSimdUrl,
    },
  });
}

async function run(message: StartMessage): Promise<void> {
  const started = performance.now();
  const settings = validateSettings(message.settings);
  await prepareBackend(settings.backend);
  tf.env().set('PROD', true);

  const data = loadEmbeddedFashionMnist({ validationFraction: 0.1, seed: settings.seed });
  const trainData = settings.trainSize >= EMBEDDED_TRAIN_SIZE
    ? data.train
    : balancedSubset(data.train, settings.trainSize / data.info.numClasses, new Random(settings.seed + 1));
  const stack = composeRegularizers(regularizersOf(settings));
  const classNames = data.info.classNames ?? Array.from({ length: data.info.numClasses }, (_, label) => String(label));
  scope.postMessage({
    type: 'ready',
    backend: tf.getBackend(),
    stack: stack.describe(),
    trainSize: trainData.size,
    validationSize: data.validation.size,
    testSize: data.test.size,
    classNames,
  });

  const model = createModel('small-cnn', {
    inputShape: [...data.info.imageShape],
    numClasses: data.info.numClasses,
    mean: data.info.normalization.mean,
    std: data.info.normalization.std,
    seed: settings.seed,
    width: settings.width,
  });
  const preview = data.validation.batch(previewIndices(data.validation.labels, PREVIEW_COUNT));
  try {
    const result = await train({
      model,
      train: trainData,
      validation: data.validation,
      test: data.test,
      regularizers: stack,
      epochs: settings.epochs,
      batchSize: settings.batchSize,
      learningRate: schedules.multiStep(settings.learningRate, RECIPE_MILESTONE_FRACTIONS.map((fraction) => fraction * settings.epochs)),
      seed: settings.seed,
      onBatchEnd: (info) => scope.postMessage({ type: 'batch', ...info }),
      onEpochEnd: (record) => {
        const view = perturbationPreview(model, preview.inputs, preview.labels, settings.rcad.alpha);
        scope.postMessage({ type: 'epoch', record, preview: view }, [view.originals.buffer, view.perturbed.buffer]);
      },
    });
    scope.postMessage({
      type: 'done',
      bestEpoch: result.bestEpoch,
      steps: result.steps,
      validation: result.validation!, // held out above
      test: result.test!,
      totalSeconds: (performance.now() - started) / 1000,
    });
  } finally {
    tf.dispose([preview.inputs, preview.labels]);
    model.dispose();
  }
}

scope.onmessage = (event) => {
  if (event.data?.type !== 'start') return;
  run(event.data).catch((error: unknown) => {
    const message = describeError(error);
    scope.postMessage(RegstackError.isInstance(error) ? { type: 'error', message, field: error.field } : { type: 'error', message });
  });
};
