import { libraryConfig } from '../../tools/build/tsup-library';

export default libraryConfig();
