// The built `regstack` binary as a user runs it: exit codes, one-line errors, run-folder
// ownership, failed jobs in `compare`, and signals to `compare` reaching its workers.
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CODES } from './cli.js';
import { assertBuilt, BINARY, regstack, running, start } from './test-processes.js';

let directory: string;
beforeAll(async () => {
  assertBuilt();
  directory = await mkdtemp(join(tmpdir(), 'regstack-process-'));
});
afterAll(async () => {
  await rm(directory, { recursive: true, force: true });
});

/** A tiny run: 64 embedded images, a 2-channel CNN, one epoch. */
const TINY = ['--train-size', '64', '--test-size', '50', '--model-options', 'width=2', '--batch-size', '32', '--epochs', '1'];
const lines = (text: string) => text.split('\n').filter((line) => line.trim() !== '');

describe('regstack exit codes (the built binary)', () => {
  it('succeeds with 0 and writes the run folder', async () => {
    const out = join(directory, 'ok');
    const result = await regstack(['train', ...TINY, '--out', out]);
    expect(result.code, result.stderr).toBe(EXIT_CODES.success);
    expect(result.stderr).toMatch(/best epoch 1: test accuracy/);
    expect((await readdir(out)).sort()).toEqual(['checkpoint', 'job.json', 'result.json']); // the lock is gone
  });

  it('rejects bad arguments with exit code 2, before creating any folder', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['train', '--lr', '-1'], /--lr must be a number > 0, got -1/],
      [['train', '--clip-norm', '-0.5'], /--clip-norm must be a number ≥ 0, got -0.5/],
      [['compare', '--stack', 'erm', '--workers', '0'], /--workers must be an integer ≥ 1, got 0/],
      [['train', '--threads', '0'], /--threads must be an integer ≥ 1, got 0/],
      [['compare', '--stack', ''], /--stack is empty; write 'erm'/],
      [['train', '--test-size', '-5'], /--test-size must be an integer ≥ 1, got -5/],
      [['train', '--momentum', '1'], /--momentum must be a number < 1, got 1/],
      [['train', '--epochs', '2.5'], /--epochs must be an integer, got '2.5'/],
      [['train', '--no-such-option'], /unknown option '--no-such-option'/],
    ];
    for (const [args, message] of cases) {
      const out = join(directory, 'never');
      const result = await regstack([...args, '--out', out]);
      expect(result.code, args.join(' ')).toBe(EXIT_CODES.usage);
      expect(lines(result.stderr)[0], args.join(' ')).toMatch(message);
      expect(existsSync(out)).toBe(false);
    }
  });

  it('prints a configuration or data error as one line (2, 3) and leaves no folder with job.json', async () => {
    const config = await regstack(['train', ...TINY, '--reg', 'rcad:alpah=1', '--out', join(directory, 'bad-config')]);
    expect(config.code).toBe(EXIT_CODES.usage);
    expect(lines(config.stderr)).toEqual(['regstack: rcad.alpah: unknown option; known options: alpha, lambda, mode']);
    expect(existsSync(join(directory, 'bad-config'))).toBe(false);
    const empty = join(directory, 'no-data');
    await rm(empty, { recursive: true, force: true });
    const data = await regstack(['train', '--data', 'cifar10', '--data-dir', directory, '--out', join(directory, 'bad-data')]);
    expect(data.code).toBe(EXIT_CODES.data);
    expect(lines(data.stderr)).toHaveLength(1);
    expect(data.stderr).toMatch(/^regstack: loadCifar10\.directory: .* holds test_batch\.bin/);
    expect(existsSync(join(directory, 'bad-data'))).toBe(false);
  });

  it('prints file-system failures as one line naming the path (5), and never hangs on /proc', async () => {
    const file = join(directory, 'a-file');
    await writeFile(file, 'x');
    const cases: Array<[string, string]> = [
      [file, `regstack: ${file}: is a file, not a folder`],
      [join(file, 'run'), `regstack: ${file}: is a file, so ${join(file, 'run')} cannot be made under it`],
      ['/proc/regstack-run', 'regstack: /proc/regstack-run: cannot create the folder: the file system of /proc does not allow it'],
    ];
    if (existsSync('/sys/kernel')) cases.push(['/sys/regstack-run', 'regstack: /sys/regstack-run: cannot create the folder: operation not permitted']);
    for (const [out, message] of cases) {
      const result = await regstack(['train', ...TINY, '--out', out], { timeoutMs: 60_000 });
      expect(result.signal, `${out} hung`).toBeNull();
      expect(result.code, out).toBe(EXIT_CODES.fileSystem);
      expect(lines(result.stderr), out).toEqual([message]);
    }
  });

  it('stops a diverging run with exit code 4 and a message that names no checkpoint it did not save', async () => {
    const result = await regstack(['train', ...TINY, '--epochs', '2', '--reg', 'entropy-min:lambda=1e39', '--out', join(directory, 'diverges')]);
    expect(result.code).toBe(EXIT_CODES.divergence);
    expect(lines(result.stderr)).toEqual(['regstack: loss: became Infinity at epoch 1, step 0; training stopped and no checkpoint was saved (it diverged in the first epoch)']);
  });

  it('reports a failing job of `compare --workers 2` with its stack (exit 7) while the other finishes', async () => {
    const out = join(directory, 'one-fails');
    const result = await regstack(['compare', ...TINY, '--workers', '2', '--stack', 'erm', '--stack', 'entropy-min:lambda=1e39', '--out', out]);
    expect(result.code, result.stderr).toBe(EXIT_CODES.jobsFailed);
    expect(result.stderr).toMatch(/\[\d\/2\] entropy-min:lambda=1e39 seed 0: failed: loss: became Infinity at epoch 1/);
    expect(lines(result.stderr).at(-1)).toMatch(/^regstack: 1 of 2 jobs failed \(the table has the others\): entropy-min:lambda=1e39 seed 0: loss: became Infinity/);
    expect(result.stdout).toMatch(/│ erm /);
    const recorded = lines(await readFile(join(out, 'results.jsonl'), 'utf8')).map((line) => JSON.parse(line).stack);
    expect(recorded).toEqual(['erm']);
    expect(existsSync(join(out, 'report.html'))).toBe(true);
  });
});

describe('one owner per run folder', () => {
  it('lets one of two simultaneous compares on one --out run, refusing the other with the holder', async () => {
    const out = join(directory, 'race');
    const args = ['compare', ...TINY, '--workers', '1', '--stack', 'erm', '--stack', 'label-smoothing:epsilon=0.1', '--out', out];
    const [first, second] = await Promise.all([regstack(args), regstack([...args.slice(0, -2), '--epochs', '2', '--out', out])]);
    const codes = [first.code, second.code].sort();
    expect(codes).toEqual([EXIT_CODES.success, EXIT_CODES.runFolder]);
    const refused = first.code === EXIT_CODES.runFolder ? first : second;
    expect(lines(refused.stderr)).toHaveLength(1);
    expect(refused.stderr).toMatch(new RegExp(`^regstack: ${out}: (is in use by process \\d+ on .* since .*\\(regstack compare|holds results of an earlier comparison)`));
    const ids = lines(await readFile(join(out, 'results.jsonl'), 'utf8')).map((line) => JSON.parse(line).id);
    expect(ids.sort()).toEqual(['erm__seed0', 'label-smoothing_epsilon=0.1__seed0']);

    // A rerun without --resume would append duplicates: refused; --resume reads the runs back.
    const rerun = await regstack(args);
    expect(rerun.code).toBe(EXIT_CODES.runFolder);
    expect(lines(rerun.stderr)).toEqual([`regstack: ${out}: holds results of an earlier comparison: add --resume to continue it, or --overwrite to start over`]);
    const winner = first.code === EXIT_CODES.success ? args : [...args.slice(0, -2), '--epochs', '2', '--out', out];
    // A kill between result.json and its results.jsonl line: the resume restores the line.
    const kept = lines(await readFile(join(out, 'results.jsonl'), 'utf8'));
    await writeFile(join(out, 'results.jsonl'), `${kept[0]}\n${kept[1]!.slice(0, 20)}`); // the last line cut short
    const resumed = await regstack([...winner, '--resume']);
    expect(resumed.code, resumed.stderr).toBe(EXIT_CODES.success);
    expect(lines(await readFile(join(out, 'results.jsonl'), 'utf8')).map((line) => JSON.parse(line).id).sort()).toEqual(ids.sort());
    // A resume that asks for another run lists what differs.
    const other = await regstack([...winner, '--resume', '--lr', '0.01', '--seeds', '0']);
    expect(other.code).toBe(EXIT_CODES.runFolder);
    expect(other.stderr).toMatch(/cannot be resumed as asked: .*recipe\.learningRate: 0\.1 → 0\.01/);
    // --overwrite starts over: one line per run again.
    const over = await regstack([...args, '--overwrite']);
    expect(over.code, over.stderr).toBe(EXIT_CODES.success);
    expect(lines(await readFile(join(out, 'results.jsonl'), 'utf8'))).toHaveLength(2);
  });

  it('ends its worker processes when compare is killed (SIGTERM, and SIGKILL through the closed channel)', async () => {
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const out = join(directory, `killed-${signal}`);
      const compare = start([BINARY, 'compare', ...TINY, '--epochs', '200', '--workers', '2', '--stack', 'erm', '--stack', 'mixup', '--out', out]);
      // Both workers hold their job folders once they train.
      const locks = ['erm__seed0', 'mixup__seed0'].map((id) => join(out, 'runs', id, 'regstack.lock'));
      const deadline = Date.now() + 90_000;
      while (!locks.every((lock) => existsSync(lock))) {
        if (Date.now() > deadline) throw new Error(`workers never started: ${compare.output().stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const pids = await Promise.all(locks.map(async (lock) => JSON.parse(await readFile(lock, 'utf8')).pid as number));
      expect(pids.every(running)).toBe(true);
      compare.child.kill(signal);
      const ended = await compare.done;
      if (signal === 'SIGTERM') {
        expect(ended.code).toBe(EXIT_CODES.terminated);
        expect(ended.stderr).toMatch(/regstack: stopped by SIGTERM; rerun with --resume to continue/);
      }
      const stopBy = Date.now() + 20_000;
      while (pids.some(running) && Date.now() < stopBy) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(pids.filter(running), `workers still training after ${signal}`).toEqual([]);
      // They freed their folders as they ended.
      expect(locks.filter((lock) => existsSync(lock))).toEqual([]);
    }
  });
});
