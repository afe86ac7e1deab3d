import { homedir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DataError, assertKnownOptions } from '@regstack/regularizer';
import { downloadFile, type Checksum, type DownloadProgress } from './download.js';
import { exists, findFile, readMaybeGzipped } from './files.js';
import { datasetFromIdx, fashionMnistClassNames, fashionMnistLicense } from './idx.js';
import { withHoldOut, type HoldOutOptions, type LoadedDataset } from './loaded.js';
import { fashionMnistNormalization } from './normalization.js';

/** Where Debian's `dataset-fashion-mnist` package installs the four gzipped IDX files. */
export const debianFashionMnistDirectory = '/usr/share/datasets/fashion-mnist';

/** Zalando's official download location (the `source_url` of the Fashion-MNIST README). */
export const fashionMnistBaseUrl = 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/';

/** The four official files, without their `.gz` suffix. */
export const fashionMnistFiles = Object.freeze({
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const);

/** One of the four Fashion-MNIST files. */
export type FashionMnistFile = keyof typeof fashionMnistFiles;

/** MD5 digests of the official `.gz` files, as published in the Fashion-MNIST README. */
export const fashionMnistChecksums: Readonly<Record<FashionMnistFile, Checksum>> = Object.freeze({
  trainImages: { md5: '8d4fb7e6c68d591d4c3dfef9ec88bf0d' },
  trainLabels: { md5: '25c81989df183df01b3e8a0aad5dffbe' },
  testImages: { md5: 'bef4ecab320f06d8554ea6380940ec79' },
  testLabels: { md5: 'bb300cfdad3c16e7a12a480ee83cd310' },
});

/** Options of {@link loadFashionMnist}. */
export interface FashionMnistOptions extends HoldOutOptions {
  /** Read the IDX files (gzipped or not) from this directory and nowhere else. */
  directory?: string;
  /** Download the files into `cacheDirectory` when no local copy is found (default false). */
  download?: boolean;
  /** Where downloads are kept (default {@link defaultCacheDirectory}`/fashion-mnist`). */
  cacheDirectory?: string;
  /** Where to download from (default {@link fashionMnistBaseUrl}); a mirror or a test server. */
  baseUrl?: string;
  /** Digests the downloads must match (default {@link fashionMnistChecksums}, the official `.gz` files). */
  checksums?: Partial<Record<FashionMnistFile, Checksum>>;
  /** Download progress: a callback, `true` for a bar on a terminal (default), `false` for none. */
  progress?: boolean | ((progress: DownloadProgress) => void);
  /** Look in Debian's location when no `directory` is given (default true). */
  useSystemCopy?: boolean;
}

/** The cache root: `$REGSTACK_DATA`, else `$XDG_CACHE_HOME/regstack/datasets`, else `~/.cache/regstack/datasets`. */
export function defaultCacheDirectory(): string {
  if (process.env.REGSTACK_DATA) return process.env.REGSTACK_DATA;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'regstack', 'datasets');
}

const stems = Object.entries(fashionMnistFiles) as [FashionMnistFile, string][];

async function completeIn(directory: string): Promise<Record<FashionMnistFile, string> | undefined> {
  const found: Partial<Record<FashionMnistFile, string>> = {};
  for (const [key, stem] of stems) {
    const path = await findFile(directory, [`${stem}.gz`, stem]);
    if (path === undefined) return undefined;
    found[key] = path;
  }
  return found as Record<FashionMnistFile, string>;
}

const HINT =
  `Get the files with "apt-get install dataset-fashion-mnist" (Debian puts them in ${debianFashionMnistDirectory}), ` +
  'pass download: true, or pass directory: a folder holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, ' +
  't10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not)';

/**
 * Fashion-MNIST from the official IDX files: from `directory` when given; else from Debian's
 * package location; else from the cache; else, with `download: true`, fetched from Zalando's
 * servers into the cache with checksums verified.
 */
export async function loadFashionMnist(options: FashionMnistOptions = {}): Promise<LoadedDataset> {
  assertKnownOptions('loadFashionMnist', options, [
    'directory',
    'download',
    'cacheDirectory',
    'baseUrl',
    'checksums',
    'progress',
    'useSystemCopy',
    'validationFraction',
    'seed',
  ]);
  let paths: Record<FashionMnistFile, string> | undefined;
  let source: string;
  if (options.directory !== undefined) {
    if (!(await exists(options.directory))) throw new DataError('loadFashionMnist.directory', `${options.directory} does not exist. ${HINT}`);
    paths = await completeIn(options.directory);
    if (paths === undefined) {
      const missing = [];
      for (const [, stem] of stems) if ((await findFile(options.directory, [`${stem}.gz`, stem])) === undefined) missing.push(stem);
      throw new DataError('loadFashionMnist.directory', `${options.directory} lacks ${missing.join(', ')}. ${HINT}`);
    }
    source = options.directory;
  } else {
    const cacheDirectory = options.cacheDirectory ?? join(defaultCacheDirectory(), 'fashion-mnist');
    if (options.useSystemCopy !== false) paths = await completeIn(debianFashionMnistDirectory);
    source = debianFashionMnistDirectory;
    if (paths === undefined) {
      paths = await completeIn(cacheDirectory);
      source = cacheDirectory;
    }
    if (paths === undefined) {
      if (options.download !== true) {
        throw new DataError('loadFashionMnist', `no local copy in ${debianFashionMnistDirectory} nor in ${cacheDirectory}. ${HINT}`);
      }
      paths = await downloadAll(cacheDirectory, options);
      source = options.baseUrl ?? fashionMnistBaseUrl;
    }
  }
  const read = (key: FashionMnistFile): Promise<Uint8Array> => readMaybeGzipped(paths![key], `loadFashionMnist.${key}`);
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all([
    read('trainImages'),
    read('trainLabels'),
    read('testImages'),
    read('testLabels'),
  ]);
  const fullTrain = datasetFromIdx(trainImages, trainLabels, 'fashion-mnist/train');
  const test = datasetFromIdx(testImages, testLabels, 'fashion-mnist/test');
  return withHoldOut(fullTrain, test, options, 'loadFashionMnist', {
    name: 'fashion-mnist',
    numClasses: 10,
    imageShape: [28, 28, 1],
    normalization: fashionMnistNormalization,
    source,
    license: fashionMnistLicense,
    classNames: fashionMnistClassNames,
  });
}

async function downloadAll(cacheDirectory: string, options: FashionMnistOptions): Promise<Record<FashionMnistFile, string>> {
  const baseUrl = options.baseUrl ?? fashionMnistBaseUrl;
  let base: URL;
  try {
    base = new URL(baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`);
  } catch {
    throw new ConfigError('loadFashionMnist.baseUrl', `not a URL: ${baseUrl}`);
  }
  const checksums = options.checksums ?? fashionMnistChecksums;
  const paths: Partial<Record<FashionMnistFile, string>> = {};
  // One file after another: a clean progress bar, and a failure stops before fetching the rest.
  for (const [key, stem] of stems) {
    const destination = join(cacheDirectory, `${stem}.gz`);
    if (!(await exists(destination))) {
      await downloadFile(new URL(`${stem}.gz`, base).href, destination, {
        checksum: checksums[key] ?? {},
        progress: options.progress ?? true,
        field: `loadFashionMnist.download.${key}`,
      });
    }
    paths[key] = destination;
  }
  return paths as Record<FashionMnistFile, string>;
}
