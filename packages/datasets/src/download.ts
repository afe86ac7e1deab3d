import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DataError } from '@regstack/regularizer';

/** Expected digests of a file, lower-case hex; every one given must match. */
export interface Checksum {
  /** MD5 digest (what the Fashion-MNIST README publishes). */
  md5?: string;
  /** SHA-256 digest. */
  sha256?: string;
}

/** Progress of one download. */
export interface DownloadProgress {
  /** The URL being fetched. */
  url: string;
  /** Bytes received so far. */
  received: number;
  /** Content-Length, when the server sent one. */
  total: number | undefined;
}

/** Options of {@link downloadFile}. */
export interface DownloadOptions {
  /** Digests the downloaded bytes must have; the file is kept only when they all match. */
  checksum?: Checksum;
  /** Called as bytes arrive; `true` draws a bar on standard error when it is a terminal (default), `false` is silent. */
  progress?: boolean | ((progress: DownloadProgress) => void);
  /** Field named in errors (default `download`). */
  field?: string;
}

/** A one-line text progress bar on standard error, redrawn in place. */
export function terminalProgressBar(progress: DownloadProgress): void {
  const name = progress.url.slice(progress.url.lastIndexOf('/') + 1);
  const megabytes = (progress.received / 1048576).toFixed(1);
  if (progress.total === undefined || progress.total === 0) {
    process.stderr.write(`\r${name} ${megabytes} MB`);
    return;
  }
  const share = Math.min(1, progress.received / progress.total);
  const width = 30;
  const filled = Math.round(share * width);
  process.stderr.write(`\r${name} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(share * 100).toFixed(0).padStart(3)}% ${megabytes} MB`);
  if (progress.received >= progress.total) process.stderr.write('\n');
}

/**
 * Downloads `url` to `destination`, hashing while writing. The bytes go to a temporary file that is
 * renamed into place only after every given checksum matched, so a corrupt or truncated download
 * never lands in the cache.
 */
export async function downloadFile(url: string, destination: string, options: DownloadOptions = {}): Promise<void> {
  const field = options.field ?? 'download';
  const report =
    typeof options.progress === 'function'
      ? options.progress
      : options.progress !== false && process.stderr.isTTY
        ? terminalProgressBar
        : undefined;
  let response: Response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new DataError(field, `cannot reach ${url}`, { cause: error });
  }
  if (!response.ok || response.body === null) {
    throw new DataError(field, `${url} answered HTTP ${response.status} ${response.statusText}`);
  }
  const lengthHeader = response.headers.get('content-length');
  const total = lengthHeader === null ? undefined : Number(lengthHeader);
  await mkdir(dirname(destination), { recursive: true });
  const temporary = `${destination}.partial-${process.pid}-${Date.now()}`;
  const md5 = createHash('md5');
  const sha256 = createHash('sha256');
  const output = createWriteStream(temporary);
  let received = 0;
  try {
    const reader = response.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      md5.update(value);
      sha256.update(value);
      received += value.length;
      if (!output.write(value)) await new Promise<void>((resolve) => output.once('drain', () => resolve()));
      report?.({ url, received, total });
    }
    await new Promise<void>((resolve, reject) => output.end((error?: Error | null) => (error ? reject(error) : resolve())));
    if (total !== undefined && received !== total) {
      throw new DataError(field, `${url}: received ${received} bytes of the ${total} announced (connection cut?)`);
    }
    const digests = { md5: md5.digest('hex'), sha256: sha256.digest('hex') };
    for (const kind of ['md5', 'sha256'] as const) {
      const expected = options.checksum?.[kind];
      if (expected !== undefined && expected.toLowerCase() !== digests[kind]) {
        throw new DataError(field, `${url}: ${kind} is ${digests[kind]}, expected ${expected.toLowerCase()}; the corrupt file was deleted, not cached`);
      }
    }
    await rename(temporary, destination);
  } catch (error) {
    output.destroy();
    await rm(temporary, { force: true });
    if (DataError.isInstance(error)) throw error;
    throw new DataError(field, `${url}: download failed`, { cause: error });
  }
}
