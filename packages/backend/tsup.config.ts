import { defineConfig } from 'tsup';

export default defineConfig([
  {
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
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
