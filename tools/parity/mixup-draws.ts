/**
 * The λ and permutation that `mixup()` draws from a fresh `new Random(seed)` on its first batch,
 * replicated from the plugin's documented draw order (mixup only, probability 1, no CutMix):
 * a uniform for `probability`, λ ~ Beta(α, α), then the permutation of the batch.
 *
 * `generate.py` runs this file (`tsx`) to read the draws, because PyTorch cannot replay our
 * xoroshiro128+ generator; the parity test then checks that the real plugin, given the same
 * seed, mixes the batch exactly as the PyTorch reference mixed it with these draws.
 */
import { Random } from '@regstack/regularizer';

/** One batch's mixup draws. */
export interface MixupDraws {
  /** The seed of the step's generator. */
  seed: number;
  /** Weight of each example's own input and target. */
  lambda: number;
  /** The partner of example i is example `permutation[i]`. */
  permutation: number[];
}

/** Replays the draws of `mixup({ mixupAlpha: alpha })` on a batch of `batchSize` with `new Random(seed)`. */
export function mixupDraws(seed: number, batchSize: number, alpha: number): MixupDraws {
  const random = new Random(seed);
  random.uniform(); // the `probability` draw; with probability 1 the batch is always mixed
  const lambda = random.beta(alpha, alpha);
  const permutation = Array.from(random.permutation(batchSize));
  return { seed, lambda, permutation };
}

const [, script, seed, batchSize, alpha] = process.argv;
if (script !== undefined && /mixup-draws\.ts$/.test(script) && seed !== undefined && batchSize !== undefined && alpha !== undefined) {
  process.stdout.write(`${JSON.stringify(mixupDraws(Number(seed), Number(batchSize), Number(alpha)))}\n`);
}
