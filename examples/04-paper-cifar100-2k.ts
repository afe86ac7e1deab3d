/**
 * A paper setting: CIFAR-100-2k (2,000 training images, the full 10,000 test images), ResNet-18
 * (CIFAR variant), the reference recipe: batch 32, 200 epochs, SGD 0.1 with Nesterov momentum,
 * ×0.1 at epochs 100/150/180, clipping 1.0 then weight decay 5e-4, the reference's two-view base
 * loss with crop + flip, and RCAD (λ 0.2, α 1.0) + label smoothing 0.6.
 *
 *   npx tsx examples/04-paper-cifar100-2k.ts --data-dir /path/to/cifar-100-binary [--stack erm]
 *   npx tsx examples/04-paper-cifar100-2k.ts --quick      # tiny generated files, one epoch
 *
 * The same run from the command line:
 *   regstack train --data cifar100-2k --data-dir DIR --model resnet18 --epochs 200 --batch-size 32 \
 *     --augment two-view --reg rcad:alpha=1,lambda=0.2 --reg label-smoothing:epsilon=0.6 --out runs/c100-2k
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { useBackend } from '@regstack/backend';
import { standardAugmentation } from '@regstack/datasets';
import { loadCifar100 } from '@regstack/datasets/node';
import { labelSmoothing } from '@regstack/label-smoothing';
import { resnet18 } from '@regstack/models';
import { rcad } from '@regstack/rcad';
import { Random, schedules } from '@regstack/regularizer';
import { train } from '@regstack/trainer';
import { consoleReporter, fileCheckpointStore } from '@regstack/trainer/node';

/** Writes a tiny CIFAR-100 in the official binary format (coarse label, fine label, 3072 planar bytes). */
async function writeTinyCifar100(directory: string, trainCount: number, testCount: number): Promise<string> {
  const folder = join(directory, 'cifar-100-binary');
  await mkdir(folder, { recursive: true });
  const random = new Random(5);
  const records = (count: number) => {
    const bytes = new Uint8Array(count * 3074);
    for (let i = 0; i < count; i++) {
      const fine = i % 100;
      bytes[i * 3074] = fine % 20;
      bytes[i * 3074 + 1] = fine;
      for (let j = 0; j < 3072; j++) bytes[i * 3074 + 2 + j] = (fine * 37 + random.int(64)) % 256;
    }
    return bytes;
  };
  await writeFile(join(folder, 'train.bin'), records(trainCount));
  await writeFile(join(folder, 'test.bin'), records(testCount));
  return folder;
}

export async function main({ quick = false, dataDir = '', out = 'runs/paper-cifar100-2k' } = {}) {
  let scratch: string | undefined;
  if (quick) {
    scratch = await mkdtemp(join(tmpdir(), 'regstack-example-'));
    dataDir = await writeTinyCifar100(scratch, 300, 100);
    out = join(scratch, 'run');
  }
  if (!dataDir) throw new Error('pass --data-dir with the unpacked cifar-100-binary folder (or --quick)');
  try {
    await useBackend('wasm');
    // CIFAR-100-2k: the first 2,000 of a seeded permutation of the training set (numpy seed 43 in the reference).
    const data = await loadCifar100({ directory: dataDir, trainSize: quick ? 200 : 2000, subsetSeed: 43 });
    const model = resnet18({ numClasses: 100, width: quick ? 4 : 64, seed: 10, ...data.info.normalization });
    const epochs = quick ? 1 : 200;
    const result = await train({
      model,
      train: data.train,
      validation: data.validation,
      test: data.test,
      regularizers: [rcad({ alpha: 1.0, lambda: 0.2 }), labelSmoothing({ epsilon: 0.6 })],
      epochs,
      batchSize: 32,
      learningRate: schedules.multiStep(0.1, [100, 150, 180].map((epoch) => (epoch / 200) * epochs)),
      momentum: 0.9,
      nesterov: true,
      weightDecay: 5e-4,
      clipNorm: 1.0,
      augment: standardAugmentation,
      baseLoss: 'two-view',
      seed: 10,
      checkpoints: fileCheckpointStore(join(out, 'checkpoint')),
      resume: true,
      ...consoleReporter(),
    });
    console.log(`CIFAR-100${quick ? ' (tiny generated files)' : '-2k'}: best epoch ${result.bestEpoch}, test accuracy ${(100 * result.test!.accuracy).toFixed(2)}%, NLL ${result.test!.nll.toFixed(3)}, ECE ${result.test!.ece.toFixed(3)}`);
    model.dispose();
    return { result, trainSize: data.train.size, validationSize: data.validation.size, testSize: data.test.size };
  } finally {
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const argument = (name: string) => {
    const index = process.argv.indexOf(name);
    return index >= 0 ? process.argv[index + 1] : undefined;
  };
  await main({ quick: process.argv.includes('--quick'), dataDir: argument('--data-dir') ?? '', out: argument('--out') ?? 'runs/paper-cifar100-2k' });
}
