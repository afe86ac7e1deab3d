/**
 * Node-only parts of the trainer: checkpoints on disk, a console reporter, and `file://` model
 * saving and loading for plain `@tensorflow/tfjs` (registered on import). Kept out of the main entry
 * so that browser bundles never see `node:fs`.
 */
import cliProgress from 'cli-progress';
import type { CheckpointStore } from './checkpoint.js';
import { createFileCheckpointStore } from './file-store.js';
import type { BatchInfo, EpochRecord } from './trainer.js';
import { registerFileSystemIO } from './file-system-io.js';

export { fileSystemIO, registerFileSystemIO } from './file-system-io.js';

// `model.save('file://…')` and `tf.loadLayersModel('file://…')` work once this entry is imported.
registerFileSystemIO();

/**
 * Checkpoints in a directory: `checkpoint.json` (the manifest, with the blob's SHA-256) and one
 * `checkpoint-<epoch>-<hash>.bin` (the tensors). A save writes the new blob beside the old one and
 * switches by renaming the manifest, so a process killed at any instant leaves the previous or the
 * new checkpoint loadable; a load checks the checksum and names the file in any error.
 */
export function fileCheckpointStore(directory: string): CheckpointStore {
  return createFileCheckpointStore(directory);
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
