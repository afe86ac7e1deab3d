import { libraryConfig } from '../../tools/build/tsup-library';

export default libraryConfig({
  entry: ['src/index.ts', 'src/node.ts', 'src/embedded.ts'],
  // The embedded subset's data stay one shipped file, `data/fashion-mnist-subset.json`, that both
  // module formats load (the import path is the same from `src/` and `dist/`): bundling it here would
  // ship it twice, once per format.
  external: ['../data/fashion-mnist-subset.json'],
  // CommonJS too, so that the entries share one Dataset class (instanceof works across them).
  splitting: true,
  // Node 20.10 is the first Node 20 with import attributes (`with { type: 'json' }`), which ES-module
  // JSON imports need; an older target makes esbuild drop them.
  target: 'node20.10',
});
