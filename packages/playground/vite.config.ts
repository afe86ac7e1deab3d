import { defaultClientConditions, defineConfig } from 'vite';

/**
 * The workspace packages resolve to their TypeScript sources through the `@regstack/source` export
 * condition, so the page builds without building them first; an installed copy (no such
 * condition in its exports) resolves to its `dist` as usual.
 */
export default defineConfig({
  // Relative asset URLs: the built page works from any folder or sub-path.
  base: './',
  resolve: { conditions: ['@regstack/source', ...defaultClientConditions] },
  worker: {
    // The worker imports backends lazily; only ES-module workers can be code-split.
    format: 'es',
  },
  build: {
    target: 'es2022',
    // TF.js and its backends are large by nature; they load in the worker, not on the page.
    chunkSizeWarningLimit: 2500,
  },
  server: { host: '127.0.0.1' },
  preview: { host: '127.0.0.1' },
});
