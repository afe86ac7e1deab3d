import { libraryConfig } from '../../tools/build/tsup-library';

export default libraryConfig({ entry: ['src/index.ts', 'src/testing.ts'] });
