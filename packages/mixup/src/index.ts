/**
 * Mixup and CutMix as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { mixup, type MixupOptions, type MixupState } from './mixup.js';
