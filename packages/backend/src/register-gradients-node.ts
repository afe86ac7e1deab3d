/**
 * TF.js's gradient registrations, bundled into a self-contained file at build time (see tsup.config.ts).
 * Plain Node cannot load `@tensorflow/tfjs-core/dist/register_all_gradients` itself: that file is ESM whose
 * internal imports have no file extensions. Loaded only as a fallback by `useBackend` in Node.
 */
import '@tensorflow/tfjs-core/dist/register_all_gradients';
