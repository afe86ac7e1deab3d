// Shared by this package's tests (not exported from the package).

/** ‖actual − expected‖₂ / ‖expected‖₂ over flat arrays. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let difference = 0;
  let norm = 0;
  for (let index = 0; index < expected.length; index++) {
    difference += (actual[index]! - expected[index]!) ** 2;
    norm += expected[index]! ** 2;
  }
  return Math.sqrt(difference / norm);
}
