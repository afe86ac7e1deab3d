/**
 * Mixup and CutMix as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { mixup, type MixupOptions } from './mixup.js';
