// Kept for test files written before `tools/test/vitest-setup.ts` selected the cpu backend for every
// test file and `linearClassifier` joined `./testing.js`: new tests need neither.
import * as tf from '@tensorflow/tfjs-core';
import { linearClassifier } from './testing.js';

/** Selects the cpu backend, as the global test setup already has. */
export async function useCpu(): Promise<void> {
  await tf.setBackend('cpu');
  await tf.ready();
}

/** {@link linearClassifier} with N(0, 0.5) weights drawn from `seed` and a zero bias. */
export const countingLinearModel = (inputSize: number, numClasses: number, seed = 1) => linearClassifier({ inputSize, numClasses, seed });
