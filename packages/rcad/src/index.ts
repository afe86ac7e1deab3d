/**
 * RCAD (Reducing Confidence along Adversarial Directions, NeurIPS 2022) as a regstack regularizer
 * plugin, following the official script `train_maxent.py`.
 *
 * @packageDocumentation
 */
export { rcad, rcadPerturbation, type RcadOptions, type RcadState } from './rcad.js';
