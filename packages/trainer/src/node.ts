/**
 * Node-only parts of the trainer: checkpoints on disk, a console reporter, and `file://` model
 * saving and loading for plain `@tensorflow/tfjs` (registered on import). Kept out of the main entry
 * so that browser bundles never see `node:fs`.
 */
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { DataError } from '@regstack/regularizer';
import type { CheckpointManifest, CheckpointStore, SerializedCheckpoint } from './checkpoint.js';
import type { BatchInfo, EpochRecord } from './trainer.js';
import { registerFileSystemIO } from './file-system-io.js';

export { fileSystemIO, registerFileSystemIO } from './file-system-io.js';

// `model.save('file://…')` and `tf.loadLayersModel('file://…')` work once this entry is imported.
registerFileSystemIO();

/**
 * Checkpoints in a directory: `checkpoint.json` (the manifest) and `checkpoint.bin` (the tensors).
 * Each save writes both under temporary names and renames them into place, binary first, so a
 * crash mid-save leaves the previous checkpoint readable.
 */
export function fileCheckpointStore(directory: string): CheckpointStore {
  const manifestPath = join(directory, 'checkpoint.json');
  const dataPath = join(directory, 'checkpoint.bin');
  return {
    async save({ manifest, data }: SerializedCheckpoint) {
      await mkdir(directory, { recursive: true });
      // The manifest names the blob it belongs to, so a manifest never pairs with another save's blob.
      const blob = `checkpoint-${manifest.state.epoch}.bin`;
      await writeFile(join(directory, `${blob}.tmp`), data);
      await rename(join(directory, `${blob}.tmp`), join(directory, blob));
      await writeFile(`${manifestPath}.tmp`, JSON.stringify({ ...manifest, blob }, null, 1));
      await rename(`${manifestPath}.tmp`, manifestPath);
      const previous = manifest.state.epoch - 1;
      if (previous >= 0) await rm(join(directory, `checkpoint-${previous}.bin`), { force: true });
      await rm(dataPath, { force: true });
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
        throw new DataError('checkpoint', `${manifestPath} is not valid JSON`);
      }
      const data = new Uint8Array(await readFile(join(directory, manifest.blob ?? 'checkpoint.bin')));
      delete manifest.blob;
      return { manifest, data };
    },
  };
}

/** Options of {@link consoleReporter}. */
export interface ConsoleReporterOptions {
  /** Progress bar (TTY) or JSON lines. Default: a bar when stderr is a TTY. */
  style?: 'bar' | 'json';
  /** Where JSON lines go. Default process.stdout. */
  stream?: NodeJS.WritableStream;
  /** Extra fields added to each JSON line (e.g. the run's name). */
  fields?: Record<string, unknown>;
}

/**
 * Progress for `train`'s callbacks: a progress bar on a TTY, JSON lines otherwise (one per epoch,
 * for logs and scripts). Use as `train({ ...options, ...consoleReporter() })`.
 */
export function consoleReporter(options: ConsoleReporterOptions = {}): {
  onBatchEnd: (info: BatchInfo) => void;
  onEpochEnd: (record: EpochRecord) => void;
} {
  const style = options.style ?? (process.stderr.isTTY ? 'bar' : 'json');
  const stream = options.stream ?? process.stdout;
  let bar: cliProgress.SingleBar | null = null;
  return {
    onBatchEnd(info) {
      if (style !== 'bar') return;
      if (!bar) {
        bar = new cliProgress.SingleBar(
          { format: 'epoch {epoch} [{bar}] {value}/{total} | loss {loss} | {eta_formatted}', hideCursor: true, clearOnComplete: true },
          cliProgress.Presets.shades_classic,
        );
        bar.start(info.batches, 0, { epoch: info.epoch, loss: '-' });
      }
      bar.update(info.batch, { epoch: info.epoch, loss: info.terms.total?.toFixed(4) ?? '-' });
      if (info.batch === info.batches) {
        bar.stop();
        bar = null;
      }
    },
    onEpochEnd(record) {
      if (style === 'bar') {
        const validation = record.validation
          ? ` | val acc ${(100 * record.validation.accuracy).toFixed(2)}% nll ${record.validation.nll.toFixed(4)} ece ${record.validation.ece.toFixed(4)}`
          : '';
        process.stderr.write(
          `epoch ${record.epoch}: loss ${record.terms.total?.toFixed(4)}${validation} | ${(1000 * record.secondsPerStep).toFixed(0)} ms/step${record.validation && record.best ? ' *' : ''}\n`,
        );
      } else {
        stream.write(JSON.stringify({ ...options.fields, ...record }) + '\n');
      }
    },
  };
}
