import { readdirSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// One project per workspace package, resolved from source through the `@regstack/source` export
// condition so that tests never need a build first.
const packages = readdirSync(new URL('./packages', import.meta.url));
const shared = {
  resolve: { conditions: ['@regstack/source'] },
  ssr: { resolve: { conditions: ['@regstack/source'] } },
};

export default defineConfig({
  test: {
    // TF.js work is CPU-bound and single-threaded on wasm: one worker per core.
    maxWorkers: 2,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      ...packages.map((name) => ({
        ...shared,
        test: { name, root: `packages/${name}`, include: ['src/**/*.test.ts', 'test/**/*.test.ts'] },
      })),
      { ...shared, test: { name: 'examples', root: 'examples', include: ['**/*.test.ts'] } },
      { ...shared, test: { name: 'tools', root: 'tools', include: ['**/*.test.ts'] } },
    ],
  },
});
