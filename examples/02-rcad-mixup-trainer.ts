/**
 * RCAD + mixup in the trainer: the trainer owns the recipe (Nesterov SGD, clipping, weight decay,
 * multistep decay, best-validation checkpoint); the stack is just a list of plugins.
 *
 *   npx tsx examples/02-rcad-mixup-trainer.ts [--quick]
 */
import { fileURLToPath } from 'node:url';
import { useBackend } from '@regstack/backend';
import { normalization } from '@regstack/datasets';
import { loadEmbeddedFashionMnist } from '@regstack/datasets/embedded';
import { mixup } from '@regstack/mixup';
import { smallCnn } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { schedules } from '@regstack/regularizer';
import { train } from '@regstack/trainer';
import { consoleReporter } from '@regstack/trainer/node';

export async function main({ quick = false } = {}) {
  await useBackend('wasm');
  const data = loadEmbeddedFashionMnist(); // 1,800 train + 200 validation + 1,000 test images
  const model = smallCnn({ inputShape: [28, 28, 1], numClasses: 10, width: 8, seed: 1, ...normalization.fashionMnist });
  const epochs = quick ? 1 : 10;
  const result = await train({
    model,
    train: quick ? data.train.subset(Int32Array.from({ length: 256 }, (_, i) => i)) : data.train,
    validation: data.validation,
    test: data.test,
    regularizers: [rcad({ alpha: 0.5 }), mixup({ mixupAlpha: 0.4 })],
    epochs,
    batchSize: 64,
    learningRate: schedules.multiStep(0.05, [0.5 * epochs, 0.75 * epochs]),
    seed: 1,
    ...consoleReporter({ style: 'json' }),
  });
  console.log(`best epoch ${result.bestEpoch}: test accuracy ${(100 * result.test!.accuracy).toFixed(2)}%, ECE ${result.test!.ece.toFixed(3)}`);
  model.dispose();
  return result;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main({ quick: process.argv.includes('--quick') });
