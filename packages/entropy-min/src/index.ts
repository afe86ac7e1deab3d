/**
 * Entropy minimisation (Grandvalet & Bengio 2004) and the confidence penalty (Pereyra et al. 2017)
 * as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { entropyMinimization, type EntropyMinimizationOptions } from './entropy-minimization.js';
