import { libraryConfig } from '../../tools/build/tsup-library';

export default libraryConfig({
  entry: ['src/index.ts', 'src/node.ts'],
  // The embedded subset is 3 MB of base64: maps keep line mappings but not a second copy of it.
  esbuildOptions(options) {
    options.sourcesContent = false;
  },
  // CommonJS too, so that both entries share one Dataset class (instanceof works across them).
  splitting: true,
});
