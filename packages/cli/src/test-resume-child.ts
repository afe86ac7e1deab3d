// A child process for resume.test.ts: trains a small CNN with batch norm through `train()` of
// @regstack/trainer (mixup, crop + flip, the two-view base loss, a multi-step schedule), with a
// checkpoint each epoch in <folder>/checkpoint, printing `batch <epoch> <batch>` after every step
// so that the test can kill it mid-epoch. When training ends it writes <folder>/out.json: the
// result and every variable of the model (weights and batch-norm statistics).
// Run with tsx: node --conditions=@regstack/source --import tsx test-resume-child.ts <folder> [resume | pause-at '<epoch> <batch>']
import { rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import { useBackend } from '@regstack/backend';
import { standardAugmentation } from '@regstack/datasets';
import { smallCnn } from '@regstack/models';
import { schedules } from '@regstack/regularizer';
import { train } from '@regstack/trainer';
import { fileCheckpointStore } from '@regstack/trainer/node';
import { loadData } from './data.js';
import { createRegularizers } from './registry.js';

/** The run both the killed and the uninterrupted child make. */
export const RESUME_RUN = { trainSize: 160, testSize: 100, epochs: 3, batchSize: 16, seed: 5, width: 2 } as const;

/**
 * Registers TF.js's gradients. Plain Node cannot import their module (ESM with extension-less
 * imports; the built @regstack/backend ships a bundled copy), so bundle it here, as its build does.
 */
async function registerGradients(): Promise<void> {
  const [bundle] = buildSync({
    stdin: { contents: "import '@tensorflow/tfjs-core/dist/register_all_gradients';", resolveDir: process.cwd() },
    bundle: true, format: 'cjs', platform: 'node', write: false, logLevel: 'silent',
  }).outputFiles;
  const file = join(tmpdir(), `regstack-gradients-${process.pid}.cjs`);
  await writeFile(file, bundle!.text);
  createRequire(import.meta.url)(file);
  await rm(file, { force: true });
}

async function main(folder: string, resume: boolean, pauseAt: string | undefined): Promise<void> {
  await registerGradients();
  await useBackend('wasm');
  const data = await loadData({ name: 'fashion-mnist-embedded', trainSize: RESUME_RUN.trainSize, testSize: RESUME_RUN.testSize });
  const model = smallCnn({
    inputShape: [...data.info.imageShape] as [number, number, number],
    numClasses: data.info.numClasses,
    width: RESUME_RUN.width,
    seed: resume ? 999 : RESUME_RUN.seed, // a resumed run must take every weight from the checkpoint
  });
  const result = await train({
    model,
    train: data.train,
    validation: data.validation,
    test: data.test,
    regularizers: createRegularizers([{ name: 'mixup', options: {} }]),
    epochs: RESUME_RUN.epochs,
    batchSize: RESUME_RUN.batchSize,
    // Up ×8 at 2.5 epochs: the last epoch's rate is too high, so the best-validation epoch is an
    // earlier one and restoring its weights at the end is visible in the weights.
    learningRate: schedules.multiStep(0.05, [1.5, 2.5], 8),
    seed: RESUME_RUN.seed,
    augment: standardAugmentation,
    baseLoss: 'two-view',
    checkpoints: fileCheckpointStore(join(folder, 'checkpoint')),
    resume,
    onBatchEnd: (info) => {
      process.stdout.write(`batch ${info.epoch} ${info.batch}\n`);
      // Wait there to be killed, so that the kill lands mid-epoch however loaded the machine is.
      if (pauseAt === `${info.epoch} ${info.batch}`) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    },
  });
  const variables = [...model.trainableVariables, ...model.nonTrainableVariables].map((variable) => Array.from(variable.dataSync()));
  await writeFile(join(folder, 'out.json'), JSON.stringify({ result, variables }));
  model.dispose();
}

if (process.argv[2]) await main(process.argv[2], process.argv[3] === 'resume', process.argv[3] === 'pause-at' ? process.argv[4] : undefined);
