import { defineConfig, type Options } from 'tsup';

/**
 * How every published @regstack package builds: ESM + CommonJS + type declarations, for Node 20
 * and bundlers. `overrides` adds to it (more entries, esbuild options).
 */
export function libraryConfig(overrides: Options = {}) {
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm', 'cjs'],
    dts: true,
    sourcemap: true,
    clean: true,
    target: 'node20',
    ...overrides,
  });
}
