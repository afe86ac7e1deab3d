// Writes the boilerplate of one workspace package (package.json, tsconfig, tsup config) so every
// package publishes the same way; files already there are kept. What else a new package needs is in
// CONTRIBUTING.md. Usage: node tools/scaffold-package.mjs <dir> "<description>" [dep ...]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, description, ...deps] = process.argv.slice(2);
if (!dir || !description) {
  console.error('usage: node tools/scaffold-package.mjs <dir> "<description>" [dep ...]');
  process.exit(1);
}
const root = join('packages', dir);
mkdirSync(join(root, 'src'), { recursive: true });
const pkg = {
  name: `@regstack/${dir}`,
  version: '0.1.0',
  description,
  license: 'MIT',
  repository: { type: 'git', url: 'git+https://github.com/regstack/regstack.git', directory: `packages/${dir}` },
  homepage: `https://github.com/regstack/regstack/tree/main/packages/${dir}#readme`,
  bugs: { url: 'https://github.com/regstack/regstack/issues' },
  keywords: ['regstack', 'tensorflowjs', 'tfjs', 'machine-learning', 'deep-learning', 'regularization'],
  type: 'module',
  sideEffects: false,
  exports: {
    '.': {
      '@regstack/source': './src/index.ts',
      import: { types: './dist/index.d.ts', default: './dist/index.js' },
      require: { types: './dist/index.d.cts', default: './dist/index.cjs' },
    },
    './package.json': './package.json',
  },
  main: './dist/index.cjs',
  module: './dist/index.js',
  types: './dist/index.d.ts',
  files: ['dist', 'src', '!src/**/*.test.ts', '!src/**/__fixtures__'],
  scripts: {
    build: 'tsup',
    typecheck: 'tsc --noEmit -p tsconfig.json',
    test: `vitest run --root ../.. --project ${dir}`,
    'check-package': 'publint --strict && attw --pack . --profile node16',
  },
  dependencies: Object.fromEntries(deps.map((d) => [d, '0.1.0'])),
  peerDependencies: { '@tensorflow/tfjs-core': '^4.22.0' },
  engines: { node: '>=20' },
  publishConfig: { access: 'public' },
};
const write = (file, text) => {
  if (!existsSync(join(root, file))) writeFileSync(join(root, file), text);
};
write('package.json', JSON.stringify(pkg, null, 2) + '\n');
// npm ships a LICENSE file found in the package whatever packs it; each package holds a copy of the root's.
write('LICENSE', readFileSync('LICENSE', 'utf8'));
write(
  'tsconfig.json',
  JSON.stringify({ extends: '../../tsconfig.base.json', include: ['src'] }, null, 2) + '\n',
);
write(
  'tsup.config.ts',
  // The shared build options (tools/build/tsup-library.ts), as every published package uses them.
  "import { libraryConfig } from '../../tools/build/tsup-library';\n\nexport default libraryConfig();\n",
);
console.log(
  `wrote ${root}/{package.json,LICENSE,tsconfig.json,tsup.config.ts} (existing files kept). Next: src/index.ts, the code with ` +
    'its tests beside it, README.md, `npm install` (links the workspace), a changeset; see CONTRIBUTING.md.',
);
