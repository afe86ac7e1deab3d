import { defineConfig, type Options } from 'tsup';

/**
 * How every published @regstack package builds its main entry: ESM + CommonJS + type declarations, for
 * Node 20 and bundlers.
 */
export const libraryOptions: Options = {
  entry: ['src/index.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
};

/** {@link libraryOptions}, with `overrides` added (more entries, esbuild options). */
export function libraryConfig(overrides: Options = {}) {
  return defineConfig({ ...libraryOptions, ...overrides });
}
