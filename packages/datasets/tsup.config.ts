import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/node.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  // The embedded subset is 3 MB of base64: maps keep line mappings but not a second copy of it.
  esbuildOptions(options) {
    options.sourcesContent = false;
  },
  // CommonJS too, so that both entries share one Dataset class (instanceof works across them).
  splitting: true,
  clean: true,
  target: 'node20',
});
