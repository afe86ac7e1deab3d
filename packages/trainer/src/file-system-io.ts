/**
 * `file://` model saving and loading for plain `@tensorflow/tfjs` in Node, where only tfjs-node
 * (a native package) would otherwise provide it. Same layout as tfjs-node: `model.save('file://dir')`
 * writes `dir/model.json` and `dir/weights.bin`; `tf.loadLayersModel('file://dir/model.json')` reads them.
 */
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError, DataError } from '@regstack/regularizer';

const SCHEME = 'file://';
const MODEL_FILE = 'model.json';
const WEIGHTS_FILE = 'weights.bin';

/** The path of a `file://` URL (`file:///abs/dir` → `/abs/dir`; `file://rel/dir` → `rel/dir`, as tfjs-node reads it). */
function pathOf(url: string): string {
  if (typeof url !== 'string' || !url.startsWith(SCHEME)) throw new ConfigError('url', `expected a file:// URL, got ${String(url)}`);
  const path = url.slice(SCHEME.length);
  if (path === '') throw new ConfigError('url', 'names no path');
  return path;
}

async function kindOf(path: string): Promise<'file' | 'directory' | 'none'> {
  try {
    return (await stat(path)).isDirectory() ? 'directory' : 'file';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
    throw error;
  }
}

/** Writes under a temporary name and renames into place, so a reader never sees half a file. */
async function writeAtomically(path: string, data: string | Uint8Array): Promise<void> {
  await writeFile(`${path}.tmp`, data);
  await rename(`${path}.tmp`, path);
}

/**
 * An IO handler for a directory (saving) or a `model.json` (loading; a directory means its
 * `model.json`). Use it directly (`model.save(fileSystemIO('runs/model'))`) or through the
 * `file://` router that {@link registerFileSystemIO} installs.
 */
export function fileSystemIO(path: string): tf.io.IOHandler {
  if (typeof path !== 'string' || path === '') throw new ConfigError('path', 'expected a directory or model.json path');
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      if (artifacts.modelTopology === undefined || artifacts.modelTopology instanceof ArrayBuffer) {
        throw new DataError('modelTopology', 'is missing or binary; file:// here saves Layers models (JSON topology)');
      }
      if ((await kindOf(path)) === 'file') throw new DataError('path', `${path} is a file; file:// saves into a directory`);
      await mkdir(path, { recursive: true });
      const weightData = artifacts.weightData === undefined ? new ArrayBuffer(0) : tf.io.CompositeArrayBuffer.join(artifacts.weightData);
      const modelJSON: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology,
        format: artifacts.format,
        generatedBy: artifacts.generatedBy,
        convertedBy: artifacts.convertedBy,
        weightsManifest: [{ paths: [`./${WEIGHTS_FILE}`], weights: artifacts.weightSpecs ?? [] }],
      };
      if (artifacts.trainingConfig !== undefined) modelJSON.trainingConfig = artifacts.trainingConfig;
      if (artifacts.signature !== undefined) modelJSON.signature = artifacts.signature;
      if (artifacts.userDefinedMetadata !== undefined) modelJSON.userDefinedMetadata = artifacts.userDefinedMetadata;
      if (artifacts.modelInitializer !== undefined) modelJSON.modelInitializer = artifacts.modelInitializer;
      if (artifacts.initializerSignature !== undefined) modelJSON.initializerSignature = artifacts.initializerSignature;
      // Weights first: a model.json on disk always has its weights beside it.
      await writeAtomically(join(path, WEIGHTS_FILE), new Uint8Array(weightData));
      await writeAtomically(join(path, MODEL_FILE), JSON.stringify(modelJSON));
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(artifacts) };
    },

    async load(): Promise<tf.io.ModelArtifacts> {
      const kind = await kindOf(path);
      if (kind === 'none') throw new DataError('path', `${resolve(path)} does not exist`);
      const modelPath = kind === 'directory' ? join(path, MODEL_FILE) : path;
      let modelJSON: tf.io.ModelJSON;
      try {
        modelJSON = JSON.parse(await readFile(modelPath, 'utf8'));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new DataError('path', `${resolve(modelPath)} does not exist`);
        throw new DataError('path', `${modelPath} is not valid JSON`, { cause: error });
      }
      if (modelJSON === null || typeof modelJSON !== 'object' || modelJSON.modelTopology === undefined) {
        throw new DataError('path', `${modelPath} has no modelTopology: is it a model.json that model.save wrote?`);
      }
      const directory = dirname(modelPath);
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const parts: ArrayBuffer[] = [];
        for (const group of manifest) {
          for (const file of group.paths) {
            const bytes = await readFile(join(directory, file)).catch((error: NodeJS.ErrnoException) => {
              throw error.code === 'ENOENT' ? new DataError('weightsManifest', `names ${file}, which is not in ${resolve(directory)}`) : error;
            });
            parts.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer);
          }
        }
        return [tf.io.getWeightSpecs(manifest), tf.io.CompositeArrayBuffer.join(parts)];
      });
    },
  };
}

/**
 * The tfjs-core copies (by their registerSaveRouter) that have our router: one per copy, even when
 * both the ESM and the CommonJS build of this package are loaded (two routers would each step aside
 * for the other).
 */
const REGISTERED = Symbol.for('@regstack/trainer/file-system-io');
/** Set while our router asks the registry whether another handler also claims the URL. */
let askingOthers = false;

/** Another `file://` handler of this URL (tfjs-node's), registered before or after ours. */
function othersClaim(url: string, kind: 'save' | 'load'): boolean {
  askingOthers = true;
  try {
    return (kind === 'save' ? tf.io.getSaveHandlers(url) : tf.io.getLoadHandlers(url)).length > 0;
  } finally {
    askingOthers = false;
  }
}

/** What tfjs-core's registry calls; `null` means "not mine" (the registry's own type omits it). */
type Router = Parameters<typeof tf.io.registerSaveRouter>[0];

function router(kind: 'save' | 'load'): Router {
  return ((url: string | string[]): tf.io.IOHandler | null => {
    if (askingOthers || typeof url !== 'string' || !url.startsWith(SCHEME)) return null;
    // Step aside for another file:// handler, so that loading tfjs-node too never makes two handlers claim one URL.
    if (othersClaim(url, kind)) return null;
    return fileSystemIO(pathOf(url));
  }) as Router;
}

/**
 * Lets `model.save('file://dir')` and `tf.loadLayersModel('file://dir/model.json')` work with
 * plain `@tensorflow/tfjs` in Node. Importing `@regstack/trainer/node` calls it; calling it again
 * does nothing. Where another `file://` handler exists (tfjs-node's), that one is used.
 */
export function registerFileSystemIO(): void {
  const holder = globalThis as { [REGISTERED]?: WeakSet<object> };
  const registries = (holder[REGISTERED] ??= new WeakSet());
  if (registries.has(tf.io.registerSaveRouter)) return;
  registries.add(tf.io.registerSaveRouter);
  tf.io.registerSaveRouter(router('save'));
  tf.io.registerLoadRouter(router('load'));
}
