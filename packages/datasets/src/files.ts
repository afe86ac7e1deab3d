import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { DataError } from '@regstack/regularizer';

/** Whether `path` exists and is readable. */
export async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** Reads a file, inflating it when it starts with the gzip magic bytes. */
export async function readMaybeGzipped(path: string, field: string): Promise<Uint8Array> {
  let raw: Buffer;
  try {
    raw = await readFile(path);
  } catch (error) {
    throw new DataError(field, `cannot read ${path}`, { cause: error });
  }
  if (raw.length >= 2 && raw[0] === 0x1f && raw[1] === 0x8b) {
    try {
      return gunzipSync(raw);
    } catch (error) {
      throw new DataError(field, `${path} is a corrupt or truncated gzip file`, { cause: error });
    }
  }
  return raw;
}

/** The first of `names` (e.g. `x.gz`, then `x`) present in `directory`, or undefined. */
export async function findFile(directory: string, names: readonly string[]): Promise<string | undefined> {
  for (const name of names) {
    const path = join(directory, name);
    if (await exists(path)) return path;
  }
  return undefined;
}

/**
 * The directory holding `marker`: `directory` itself, or its sub-folder `nested` (as the official
 * archives unpack, e.g. `cifar-10-batches-bin`). Throws a DataError with `hint` when neither has it.
 */
export async function locateDirectory(directory: string, nested: string, marker: string, field: string, hint: string): Promise<string> {
  if (typeof directory !== 'string' || directory === '') throw new DataError(field, `a directory is required. ${hint}`);
  for (const candidate of [directory, join(directory, nested)]) {
    if (await exists(join(candidate, marker))) return candidate;
  }
  const why = (await exists(directory)) ? `neither ${directory} nor ${join(directory, nested)} holds ${marker}` : `${directory} does not exist`;
  throw new DataError(field, `${why}. ${hint}`);
}
