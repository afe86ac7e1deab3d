/**
 * Label smoothing as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { labelSmoothing, type LabelSmoothingOptions } from './label-smoothing.js';
