import { closeSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, parse, resolve } from 'node:path';
import { RegstackError } from '@regstack/regularizer';

/**
 * A file or folder could not be created, read or written: `field` is the path, the message says
 * why in words (the command line prints it as one line, exit code 5).
 */
export class FileSystemError extends RegstackError {
  static override readonly kind: string = 'FileSystemError';
}

/**
 * A run folder cannot be used as asked: another process holds it, it holds a finished or
 * started run and neither `--resume` nor `--overwrite` was given, or `--resume` names a folder
 * whose run was made with another spec (exit code 6).
 */
export class RunFolderError extends RegstackError {
  static override readonly kind: string = 'RunFolderError';
}

const REASONS: Record<string, string> = {
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EEXIST: 'already exists',
  ENOTDIR: 'a part of the path is a file, not a folder',
  EISDIR: 'is a folder, not a file',
  ENOENT: 'does not exist',
  EIO: 'input/output error',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'the name is too long',
  ELOOP: 'too many symbolic links',
  EBUSY: 'busy',
};

/** Whether `error` is one of Node's file-system errors (an errno code and, mostly, a path). */
export function isFileSystemError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string' && typeof (error as NodeJS.ErrnoException).syscall === 'string';
}

/** Node's file-system error as a one-line FileSystemError naming the path, what was tried and why. */
export function asFileSystemError(error: NodeJS.ErrnoException, path = error.path ?? '(unknown path)', action?: string): FileSystemError {
  const reason = REASONS[error.code ?? ''] ?? error.code ?? error.message;
  const what = action ?? (error.syscall ? `cannot ${error.syscall}` : 'failed');
  return new FileSystemError(path, `${what}: ${reason}`);
}

/**
 * Creates `path` and any missing parents one level at a time, and checks that each is a folder.
 * Not `mkdir({ recursive: true })`: Node 20's never settles on a path under /proc, where a
 * plain mkdir fails at once. Errors are FileSystemErrors naming the path.
 */
export async function prepareFolder(path: string): Promise<void> {
  const target = resolve(path);
  const { root } = parse(target);
  const levels: string[] = [];
  for (let level = target; level !== root; level = dirname(level)) levels.unshift(level);
  for (const level of levels) {
    let exists = true;
    try {
      const info = await stat(level);
      if (!info.isDirectory()) throw new FileSystemError(level, level === target ? 'is a file, not a folder' : `is a file, so ${target} cannot be made under it`);
    } catch (error) {
      if (error instanceof FileSystemError) throw error;
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') throw asFileSystemError(error as NodeJS.ErrnoException, level, 'cannot be read');
      exists = false;
    }
    if (exists) continue;
    try {
      await mkdir(level);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') continue; // made meanwhile by another process
      // mkdir under /proc and similar file systems answers ENOENT although the parent exists.
      const reason = code === 'ENOENT' ? `cannot create the folder: the file system of ${dirname(level)} does not allow it` : undefined;
      throw reason ? new FileSystemError(level, reason) : asFileSystemError(error as NodeJS.ErrnoException, level, 'cannot create the folder');
    }
  }
}

/** Writes `text` to `path` through a temporary file and a rename, so a reader never sees half a file. */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.${process.pid}.tmp`;
  await writeFile(temporary, text);
  await rename(temporary, path);
}

/** Who holds a run folder, as written in its lock file. */
export interface LockHolder {
  pid: number;
  host: string;
  /** When the holder took the lock (ISO 8601). */
  started: string;
  /** What it runs, for the message a second process gets. */
  command: string;
}

/** The lock file of a run folder. */
export const LOCK_FILE = 'regstack.lock';

const held = new Set<string>();

/** Whether a process with this id runs on this machine (EPERM: it runs, as another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * When the process `pid` started (ms since 1970), on Linux: boot time from /proc/stat plus the
 * process's start in clock ticks (field 22 of /proc/<pid>/stat, 100 ticks a second on Linux).
 * Undefined elsewhere or if unreadable.
 */
function processStart(pid: number): number | undefined {
  try {
    const boot = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    if (!boot || !Number.isFinite(ticks)) return undefined;
    return Number(boot[1]) * 1000 + ticks * 10;
  } catch {
    return undefined;
  }
}

/**
 * Whether the lock's holder still runs: its process id is alive and, where the start time of that
 * process can be read, it started before the lock was taken (else the id was reused by a new process).
 */
function holderRuns(holder: LockHolder): boolean {
  if (!alive(holder.pid)) return false;
  const started = Date.parse(holder.started);
  const processStarted = processStart(holder.pid);
  // Two seconds of slack: the boot time has one-second resolution.
  return processStarted === undefined || Number.isNaN(started) || processStarted <= started + 2000;
}

function readHolder(path: string): LockHolder | null {
  try {
    const holder = JSON.parse(readFileSync(path, 'utf8')) as LockHolder;
    return Number.isInteger(holder.pid) && typeof holder.host === 'string' ? holder : null;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return null; // unreadable or half written: treated below as a lock of unknown holder
  }
}

/** A taken lock; `release` deletes the lock file (once). */
export interface FolderLock {
  path: string;
  release(): void;
}

/**
 * Makes this process the one owner of `folder` (which must exist): creates `regstack.lock` with
 * this process's id, host and start time, failing if it exists. A lock whose holder is on this
 * host and no longer runs (a killed process, or its id now used by a process started after the
 * lock) is stale and taken over; a live holder, or one on
 * another host (whose processes cannot be checked from here), is a RunFolderError naming the
 * folder and the holder. Locks still held when the process is stopped by a signal are released
 * by {@link releaseAllLocks}.
 */
export function lockFolder(folder: string, command: string): FolderLock {
  const path = join(folder, LOCK_FILE);
  const me: LockHolder = { pid: process.pid, host: hostname(), started: new Date().toISOString(), command };
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const descriptor = openSync(path, 'wx');
      try {
        writeSync(descriptor, JSON.stringify(me));
      } finally {
        closeSync(descriptor);
      }
      held.add(path);
      let released = false;
      return {
        path,
        release() {
          if (released) return;
          released = true;
          held.delete(path);
          // Only our own lock: a folder taken over meanwhile (we were thought dead) is not ours to free.
          if (readHolder(path)?.pid === process.pid) unlinkSync(path);
        },
      };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') throw asFileSystemError(error as NodeJS.ErrnoException, path, 'cannot create the lock file');
    }
    const holder = readHolder(path);
    if (holder === null) {
      // Being written by its holder this instant, or garbage: look again shortly, then give up.
      if (attempt < 4) {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
        continue;
      }
      throw new RunFolderError(folder, `is locked by ${path}, which names no holder; delete it if no regstack process uses the folder`);
    }
    if (holder.host === me.host && holder.pid !== process.pid && !holderRuns(holder)) {
      // Stale: its process was killed (and its id maybe reused since). Move it aside (atomic) rather than delete it, so that of
      // two processes taking it over at once only one succeeds.
      const aside = `${path}.stale-${process.pid}`;
      try {
        renameSync(path, aside);
      } catch {
        continue; // another process moved it first; look again
      }
      // If another process took it over between our read and our rename, we moved its live lock:
      // put it back (link fails if a third has made one meanwhile, which then holds the folder).
      if (readHolder(aside)?.pid !== holder.pid) {
        try {
          linkSync(aside, path);
        } catch {
          // the folder has a new lock already
        }
      }
      unlinkSync(aside);
      continue;
    }
    throw new RunFolderError(
      folder,
      `is in use by process ${holder.pid} on ${holder.host} since ${holder.started} (${holder.command}); ` +
        (holder.host === me.host ? 'wait for it to finish or stop it' : `if that process no longer runs, delete ${path}`),
    );
  }
  throw new RunFolderError(folder, `could not take the lock ${path}: other processes keep taking it`);
}

/** Releases every lock this process holds (on SIGINT/SIGTERM, before exiting). */
export function releaseAllLocks(): void {
  for (const path of [...held]) {
    held.delete(path);
    try {
      if (readHolder(path)?.pid === process.pid) unlinkSync(path);
    } catch {
      // nothing to do while exiting
    }
  }
}
