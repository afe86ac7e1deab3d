/**
 * Pieces of a batch claimed by whichever thread is free (no Node imports: the main thread's kernels and
 * the workers share it).
 */
import { CLAIMS } from './conv-protocol.js';

/**
 * How long a thread spins on the copied count before it sleeps on it (ms). The main thread copies a
 * piece of the recipe's largest calls in about 0.1 ms, less than a sleep and wake-up through
 * `Atomics.wait` and `Atomics.notify` costs, so a short spin usually sees the piece arrive.
 */
const SPIN_MS = 0.2;

/**
 * Waits until piece `index`'s images are copied in (`claims[CLAIMS.copied]` > index): spins briefly,
 * then sleeps until the main thread publishes more. False when the copy was aborted.
 */
function waitUntilCopied(claims: Int32Array, index: number): boolean {
  let copied = Atomics.load(claims, CLAIMS.copied);
  if (copied > index) return true;
  const deadline = performance.now() + SPIN_MS;
  for (let spins = 1; copied >= 0 && copied <= index; spins++) {
    if ((spins & 63) === 0 && performance.now() > deadline) {
      Atomics.wait(claims, CLAIMS.copied, copied);
    }
    copied = Atomics.load(claims, CLAIMS.copied);
  }
  return copied > index;
}

/**
 * Runs pieces of a batch until none is left unclaimed: each turn takes the next index from
 * `claims[CLAIMS.next]` (atomically, so that no two threads run the same piece), waits until the main
 * thread has copied that piece's images in (it copies them while the workers start and run the first
 * ones), and runs it. Returns how many pieces this thread ran; it stops early when the copy was aborted.
 */
export function runClaimedPieces(claims: Int32Array, pieces: ReadonlyArray<readonly [number, number]>, run: (first: number, end: number, region: number) => void): number {
  let ran = 0;
  for (;;) {
    const index = Atomics.add(claims, CLAIMS.next, 1);
    if (index >= pieces.length || !waitUntilCopied(claims, index)) return ran;
    const [first, end] = pieces[index]!;
    run(first, end, index);
    ran += 1;
  }
}
