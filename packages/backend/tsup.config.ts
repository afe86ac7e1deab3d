import { defineConfig } from 'tsup';
import { libraryOptions } from '../../tools/build/tsup-library';

export default defineConfig([
  {
    ...libraryOptions,
    // import.meta.url in the CommonJS build, where threads/conv-pool.ts finds the worker script.
    shims: true,
  },
  {
    // The convolution workers' script (Node only): threads/conv-pool.ts starts it in worker threads from next to
    // the main bundle.
    entry: ['src/threads/conv-worker.ts'],
    format: ['esm'],
    sourcemap: true,
    clean: false,
    target: 'node20',
  },
  {
    // Plain Node cannot import TF.js's gradient registration module (extension-less ESM imports), so this
    // fallback bundles it; bundlers and browsers never load it (see use-backend.ts).
    entry: ['src/register-gradients-node.ts'],
    format: ['cjs'],
    sourcemap: false,
    clean: false,
    target: 'node20',
    noExternal: [/^@tensorflow\/tfjs-core\/dist\//],
  },
]);
