import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planRun, specDifferences, type JobSpec } from './job.js';
import { FileSystemError, LOCK_FILE, RunFolderError, lockFolder, prepareFolder } from './run-folder.js';

let directory: string;
beforeAll(async () => {
  directory = await mkdtemp(join(tmpdir(), 'regstack-folder-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** The id of a process that has ended. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']);
  return Number(child.stdout.toString());
}

const spec = (changes: Partial<JobSpec> = {}, recipe: Partial<JobSpec['recipe']> = {}): JobSpec => ({
  id: 'train',
  data: { name: 'fashion-mnist-embedded', trainSize: 64 },
  model: { name: 'small-cnn', options: { width: 2 } },
  stack: { label: 'mixup+rcad', regularizers: [{ name: 'mixup', options: {} }, { name: 'rcad', options: { alpha: 1 } }] },
  recipe: { epochs: 2, batchSize: 32, learningRate: 0.1, momentum: 0.9, weightDecay: 5e-4, clipNorm: 1, augment: 'none', ...recipe },
  seed: 3,
  backend: 'wasm',
  directory: '/runs/a',
  resume: true,
  ...changes,
});

describe('run folder lock', () => {
  it('lets one holder in, names it to the next, and frees the folder on release', async () => {
    const folder = join(directory, 'locked');
    await mkdir(folder);
    const lock = lockFolder(folder, 'regstack train --out x');
    const holder = JSON.parse(await readFile(join(folder, LOCK_FILE), 'utf8'));
    expect(holder).toMatchObject({ pid: process.pid, host: hostname(), command: 'regstack train --out x' });
    expect(Date.now() - Date.parse(holder.started)).toBeLessThan(60_000);
    expect(() => lockFolder(folder, 'second')).toThrow(RunFolderError);
    expect(() => lockFolder(folder, 'second')).toThrow(new RegExp(`${folder}: is in use by process ${process.pid} on ${hostname()} since .* \\(regstack train --out x\\)`));
    lock.release();
    expect(existsSync(join(folder, LOCK_FILE))).toBe(false);
    lockFolder(folder, 'third').release();
  });

  it('takes over the lock of a process that no longer runs, but not one of another host', async () => {
    const folder = join(directory, 'stale');
    await mkdir(folder);
    const dead = deadPid();
    await writeFile(join(folder, LOCK_FILE), JSON.stringify({ pid: dead, host: hostname(), started: '2026-01-01T00:00:00Z', command: 'killed' }));
    const lock = lockFolder(folder, 'after the kill');
    expect(JSON.parse(await readFile(join(folder, LOCK_FILE), 'utf8')).pid).toBe(process.pid);
    lock.release();
    // A process id reused by a process started after the lock was taken (Linux, where start times can be read).
    if (existsSync('/proc/self/stat')) {
      const later = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)']);
      try {
        await writeFile(join(folder, LOCK_FILE), JSON.stringify({ pid: later.pid, host: hostname(), started: '2020-01-01T00:00:00Z', command: 'long gone' }));
        lockFolder(folder, 'reused id').release();
        // The same process named with a start time after its own: it holds the folder.
        await writeFile(join(folder, LOCK_FILE), JSON.stringify({ pid: later.pid, host: hostname(), started: new Date().toISOString(), command: 'live' }));
        expect(() => lockFolder(folder, 'here')).toThrow(new RegExp(`in use by process ${later.pid}`));
      } finally {
        later.kill('SIGKILL');
      }
    }
    await writeFile(join(folder, LOCK_FILE), JSON.stringify({ pid: dead, host: 'elsewhere', started: '2026-01-01T00:00:00Z', command: 'remote' }));
    expect(() => lockFolder(folder, 'here')).toThrow(/on elsewhere since .*if that process no longer runs, delete .*regstack\.lock/);
  });
});

describe('prepareFolder', () => {
  it('creates missing levels and names a file in the way', async () => {
    await prepareFolder(join(directory, 'a', 'b', 'c'));
    expect(existsSync(join(directory, 'a', 'b', 'c'))).toBe(true);
    await writeFile(join(directory, 'file'), '');
    await expect(prepareFolder(join(directory, 'file', 'x'))).rejects.toThrow(FileSystemError);
    await expect(prepareFolder(join(directory, 'file'))).rejects.toThrow(`${join(directory, 'file')}: is a file, not a folder`);
  });
});

describe('what --resume may change', () => {
  it('lists every difference that shapes the numbers, and allows the location, threads and data folder', () => {
    expect(specDifferences(spec(), spec({ directory: '/elsewhere', threads: 4, data: { name: 'fashion-mnist-embedded', trainSize: 64, directory: '/data' } }))).toEqual([]);
    expect(specDifferences(spec(), spec({ seed: 9, stack: { label: 'erm', regularizers: [] } }, { learningRate: 0.01 }))).toEqual([
      'seed: 3 → 9',
      'recipe.learningRate: 0.1 → 0.01',
      'stack: mixup+rcad:alpha=1 → erm',
    ]);
    expect(specDifferences(spec(), spec({ model: { name: 'small-cnn', options: { width: 4 } } }))).toEqual(['model.options.width: 2 → 4']);
  });

  it('allows more epochs only when the milestones stay the same', () => {
    // Default milestones move with the epochs: refused, naming the milestones that keep the schedule.
    expect(specDifferences(spec(), spec({}, { epochs: 4 }))).toEqual([
      'recipe.milestones: 1,1.5,1.8 → 2,3,3.6',
      'recipe.epochs: 2 → 4 moves the default milestones; to extend the run give --milestones 1,1.5,1.8',
    ]);
    expect(specDifferences(spec(), spec({}, { epochs: 4, milestones: [1, 1.5, 1.8] }))).toEqual([]);
    expect(specDifferences(spec({}, { milestones: [1] }), spec({}, { epochs: 1, milestones: [1] }))).toEqual(['recipe.epochs: 2 → 1 (epochs may only grow)']);
  });

  it('reads a finished run back only for an equal spec, and refuses a folder with a run without --resume', () => {
    const result = { history: [{}, {}] } as never;
    expect(planRun(spec(), { job: spec(), result, started: true })).toBe('finished');
    expect(planRun(spec({}, { epochs: 3, milestones: [1, 1.5, 1.8] }), { job: spec({}, { milestones: [1, 1.5, 1.8] }), result, started: true })).toBe('run');
    expect(() => planRun(spec({}, { epochs: 3 }), { job: spec(), result, started: true })).toThrow(/was run with another spec.*recipe\.epochs: 2 → 3/);
    expect(() => planRun(spec({ resume: false }), { job: spec(), started: true })).toThrow(/holds a run already \(a checkpoint\): add --resume to continue it, or --overwrite to start over/);
    expect(planRun(spec({ resume: false, overwrite: true }), { job: spec(), started: true })).toBe('run');
    expect(() => planRun(spec({ overwrite: true }), { started: false })).toThrow(/--overwrite: cannot be combined with --resume/);
  });
});
