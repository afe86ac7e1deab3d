// Helpers for the tests that spawn processes: the built `regstack` binary and tsx children.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The built command line (`npm test` builds it first; alone: `NX_DAEMON=false npx nx run cli:build`). */
export const BINARY = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

export function assertBuilt(): void {
  if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: build the command line first (NX_DAEMON=false npx nx run cli:build)`);
}

/** What a finished process left. */
export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A running process, its output so far, and its end. */
export interface Running {
  child: ChildProcess;
  output: () => { stdout: string; stderr: string };
  done: Promise<Finished>;
  /** Resolves when stdout matches `pattern` (rejects if the process ends first). */
  waitFor: (pattern: RegExp) => Promise<void>;
}

/** Starts `node <args>`; `timeoutMs` kills it (SIGKILL) if it runs longer, so that a hang fails the test. */
export function start(args: string[], options: { cwd?: string; timeoutMs?: number } = {}): Running {
  const child = spawn(process.execPath, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    for (const listener of listeners) listener();
  });
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
  const done = new Promise<Finished>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      for (const listener of listeners) listener();
      resolve({ code, signal, stdout, stderr });
    });
  });
  const waitFor = (pattern: RegExp) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (pattern.test(stdout)) {
          listeners.delete(check);
          resolve();
        } else if (child.exitCode !== null || child.signalCode !== null) {
          listeners.delete(check);
          reject(new Error(`the process ended before printing ${pattern}: ${stderr.slice(-2000)}`));
        }
      };
      listeners.add(check);
      check();
    });
  return { child, output: () => ({ stdout, stderr }), done, waitFor };
}

/** Runs the built `regstack` with `args` to its end. */
export function regstack(args: string[], options: { timeoutMs?: number } = {}): Promise<Finished> {
  return start([BINARY, ...args], options).done;
}

/** Runs a TypeScript file of this package from source, as the tests do (tsx, the source condition). */
export function startTypeScript(file: URL, args: string[], options: { timeoutMs?: number } = {}): Running {
  return start(['--conditions=@regstack/source', '--import', 'tsx', fileURLToPath(file), ...args], options);
}

/** Whether a process with this id still runs. */
export function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A copy of `value` without the wall-clock fields (they differ between any two runs). */
export function withoutTimings<T>(value: T): T {
  return JSON.parse(JSON.stringify(value, (key, inner) => (['trainSeconds', 'secondsPerStep', 'secondsPerEpoch'].includes(key) ? undefined : inner))) as T;
}
