/**
 * FGSM and PGD adversarial training (L∞ and L2) as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { adversarialTraining, type AdversarialTrainingOptions, type AdversarialTrainingState, type AdversarialState } from './adversarial-training.js';
