/**
 * Label smoothing as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { labelSmoothing, type LabelSmoothingOptions, type LabelSmoothingState } from './label-smoothing.js';
