import { open, readFile, readdir, rename, rm, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DataError } from '@regstack/regularizer';
import { verifyCheckpoint, type CheckpointManifest, type CheckpointStore, type SerializedCheckpoint } from './checkpoint.js';

/** The steps of a save, in order; a test stops a save after each to check what is left on disk. */
export const SAVE_STEPS = ['blob-written', 'blob-renamed', 'manifest-written', 'manifest-renamed', 'cleaned'] as const;
export type SaveStep = (typeof SAVE_STEPS)[number];

/** Internal options of the file store (tests). */
export interface FileStoreHooks {
  /** Called after each step of a save; a throw stops the save there, as a kill would. */
  afterStep?: (step: SaveStep) => void | Promise<void>;
}

/** Writes `data` to `path` and flushes it to the disk before returning. */
async function writeDurably(path: string, data: Uint8Array | string): Promise<void> {
  const handle = await open(path, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Checkpoints in a directory: `checkpoint.json` (the manifest) names its blob
 * `checkpoint-<epoch>-<sha256 prefix>.bin`. A save writes the new blob under a temporary name,
 * renames it to its own (new) name, writes the manifest under a temporary name and renames it over
 * `checkpoint.json`, and only then deletes the old blob and leftovers. The rename of the manifest
 * is the one instant the checkpoint changes: a kill before it leaves the previous manifest and its
 * untouched blob, a kill after it the new pair. Loading checks the blob's SHA-256 and names the
 * file in any error.
 */
export function createFileCheckpointStore(directory: string, hooks: FileStoreHooks = {}): CheckpointStore {
  const manifestPath = join(directory, 'checkpoint.json');
  const step = async (name: SaveStep) => hooks.afterStep?.(name);
  return {
    async save({ manifest, data }: SerializedCheckpoint) {
      await mkdir(directory, { recursive: true });
      const blob = `checkpoint-${manifest.state.epoch}-${(manifest.sha256 ?? 'unverified').slice(0, 16)}.bin`;
      // Temporary names carry the process id, so two writers (which the run-folder lock prevents) could not rename each other's files.
      const blobTemporary = join(directory, `${blob}.${process.pid}.tmp`);
      await writeDurably(blobTemporary, data);
      await step('blob-written');
      await rename(blobTemporary, join(directory, blob));
      await step('blob-renamed');
      const manifestTemporary = `${manifestPath}.${process.pid}.tmp`;
      await writeDurably(manifestTemporary, JSON.stringify({ ...manifest, blob }, null, 1));
      await step('manifest-written');
      await rename(manifestTemporary, manifestPath);
      await step('manifest-renamed');
      for (const name of await readdir(directory)) {
        const stale = (name.startsWith('checkpoint-') && name.endsWith('.bin') && name !== blob) || name.endsWith('.tmp') || name === 'checkpoint.bin';
        if (stale) await rm(join(directory, name), { force: true });
      }
      await step('cleaned');
    },
    async load() {
      let text: string;
      try {
        text = await readFile(manifestPath, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw error;
      }
      let manifest: CheckpointManifest & { blob?: string };
      try {
        manifest = JSON.parse(text);
      } catch {
        throw new DataError(manifestPath, 'is not valid JSON: the checkpoint manifest is corrupt');
      }
      if (typeof manifest !== 'object' || manifest === null) throw new DataError(manifestPath, 'is not a checkpoint manifest');
      const blobPath = join(directory, typeof manifest.blob === 'string' ? manifest.blob : 'checkpoint.bin');
      let data: Uint8Array;
      try {
        data = new Uint8Array(await readFile(blobPath));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        throw new DataError(blobPath, code === 'ENOENT' ? `is missing (named by ${manifestPath})` : `cannot be read (${code ?? (error as Error).message})`);
      }
      delete manifest.blob;
      const checkpoint: SerializedCheckpoint = { manifest, data, source: blobPath };
      await verifyCheckpoint(checkpoint);
      return checkpoint;
    },
  };
}
