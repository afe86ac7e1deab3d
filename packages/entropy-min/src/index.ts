/**
 * Entropy minimisation (Grandvalet & Bengio 2004) and the confidence penalty (Pereyra et al. 2017)
 * as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { entropyMin, type EntropyMinOptions, type EntropyMinState } from './entropy-min.js';
// Deprecated names (the factory was `entropyMinimization` before it took its package's name).
export { entropyMinimization, type EntropyMinimizationOptions } from './entropy-min.js';
