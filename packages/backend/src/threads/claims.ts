/**
 * Pieces of a batch claimed by whichever thread is free (no Node imports: the main thread's kernels and
 * the workers share it).
 */

/**
 * Runs pieces of a batch until none is left unclaimed: each turn takes the next index from `claims[0]`
 * (atomically, so that no two threads run the same piece) and runs it. Returns how many pieces this
 * thread ran.
 */
export function runClaimedPieces(claims: Int32Array, pieces: ReadonlyArray<readonly [number, number]>, run: (first: number, end: number, region: number) => void): number {
  let ran = 0;
  for (;;) {
    const index = Atomics.add(claims, 0, 1);
    if (index >= pieces.length) return ran;
    const [first, end] = pieces[index]!;
    run(first, end, index);
    ran += 1;
  }
}
