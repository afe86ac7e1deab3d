// A browser entry that uses one RCAD stack: what it bundles beyond TF.js is @regstack/rcad and
// @regstack/regularizer.
import { rcad } from '@regstack/rcad';
import { composeRegularizers } from '@regstack/regularizer';

export const stack = composeRegularizers([rcad()]);
