import { readdirSync } from 'node:fs';
import { defineConfig } from 'vitest/config';

// One project per workspace package, resolved from source through the `@regstack/source` export
// condition so that tests never need a build first. Projects inherit this root config (`extends`).
const packages = readdirSync(new URL('./packages', import.meta.url));
const project = (name: string, root: string, include: string[]) => ({ extends: true as const, test: { name, root, include } });

export default defineConfig({
  resolve: { conditions: ['@regstack/source'] },
  ssr: { resolve: { conditions: ['@regstack/source'] } },
  test: {
    // TF.js work is CPU-bound and single-threaded on wasm: one worker per core.
    maxWorkers: 2,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    setupFiles: [new URL('./tools/test/vitest-setup.ts', import.meta.url).pathname],
    projects: [
      ...packages.map((name) => project(name, `packages/${name}`, ['src/**/*.test.ts', 'test/**/*.test.ts'])),
      project('examples', 'examples', ['**/*.test.ts']),
      project('tools', 'tools', ['**/*.test.ts']),
    ],
  },
});
