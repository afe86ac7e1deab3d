/**
 * ME-ADA (maximum-entropy adversarial data augmentation), online form, as a regstack regularizer plugin.
 *
 * @packageDocumentation
 */
export { meAda, type MeAdaOptions, type MeAdaState } from './me-ada.js';
