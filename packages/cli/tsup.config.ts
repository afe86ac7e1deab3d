import { defineConfig } from 'tsup';

// The command line is an ESM application (vega and vega-lite are ESM-only).
export default defineConfig({
  entry: ['src/index.ts', 'src/cli.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  sourcemap: true,
  clean: true,
  target: 'node20',
});
