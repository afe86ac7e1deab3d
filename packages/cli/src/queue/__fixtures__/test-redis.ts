/**
 * Test helpers: a private redis-server on a free loopback port in a temporary folder (never a
 * system service), and regstack processes from the built command line.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { Socket, createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Whether Debian's redis-server (or another) is on the PATH. */
export const hasRedisServer = spawnSync('redis-server', ['--version']).status === 0;

/** The built command line the worker processes run (`npm run build` makes it). */
export const builtCli = fileURLToPath(new URL('../../../dist/cli.js', import.meta.url));
export const hasBuiltCli = existsSync(builtCli);

/** Whether this redis-server was built with TLS (Debian's is). */
export const redisHasTls = hasRedisServer && (() => {
  // A build without TLS rejects the first directive, `tls-port`; one with TLS gets to the made-up one after it.
  const probe = spawnSync('redis-server', ['--tls-port', '0', '--port', '0', '--regstack-probe', '1'], { timeout: 5000 });
  return !`${probe.stdout}${probe.stderr}`.includes(">>> 'tls-port");
})();

/**
 * Makes a certificate authority and a server certificate for 127.0.0.1 with openssl; returns the
 * paths, or null without openssl.
 */
export function makeCertificates(directory: string): { certificate: string; key: string; authority: string } | null {
  const run = (args: string[]) => spawnSync('openssl', args, { cwd: directory, stdio: 'ignore' }).status === 0;
  writeFileSync(join(directory, 'san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  const ok =
    run(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=regstack test CA']) &&
    run(['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost']) &&
    run(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '1', '-extfile', 'san.ext']);
  return ok ? { certificate: join(directory, 'server.pem'), key: join(directory, 'server.key'), authority: join(directory, 'ca.pem') } : null;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolvePort(port));
    });
  });
}

/** A redis-server of our own, with append-only persistence, that can be stopped and started again. */
export class TestRedis {
  private process: ChildProcess | null = null;
  constructor(
    readonly directory: string,
    readonly port: number,
    readonly password: string,
    /** With TLS: the server's certificate and key; the plain port is then off. */
    readonly tls?: { certificate: string; key: string; authority: string },
  ) {}

  /** The URL workers get. */
  get url(): string {
    return `${this.tls ? 'rediss' : 'redis'}://default:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/0`;
  }

  async start(): Promise<void> {
    const ports = this.tls
      ? ['--port', '0', '--tls-port', String(this.port), '--tls-cert-file', this.tls.certificate, '--tls-key-file', this.tls.key, '--tls-ca-cert-file', this.tls.authority, '--tls-auth-clients', 'no']
      : ['--port', String(this.port)];
    const args = [
      ...ports, '--bind', '127.0.0.1', '--dir', this.directory, '--daemonize', 'no',
      '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--requirepass', this.password,
      '--logfile', join(this.directory, 'redis.log'), '--protected-mode', 'yes',
    ];
    this.process = spawn('redis-server', args, { stdio: 'ignore' });
    const started = Date.now();
    while (Date.now() - started < 15_000) {
      if (await answers(this.port)) return;
      await new Promise((done) => setTimeout(done, 100));
    }
    throw new Error(`redis-server did not start on port ${this.port}`);
  }

  /** Stops the server the way a service manager does (SIGTERM: it flushes the append-only file). */
  async stop(): Promise<void> {
    const running = this.process;
    if (!running || running.exitCode !== null) return;
    const exited = new Promise((done) => running.once('exit', done));
    running.kill('SIGTERM');
    await exited;
    this.process = null;
  }
}

/** Whether something accepts TCP connections on the port. */
function answers(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = new Socket();
    socket.once('connect', () => (socket.destroy(), done(true)));
    socket.once('error', () => (socket.destroy(), done(false)));
    socket.connect(port, '127.0.0.1');
  });
}

/** A regstack process whose stdout is JSON lines (workers) or text, with helpers to wait for lines. */
export class CliProcess {
  readonly child: ChildProcess;
  readonly events: Array<Record<string, unknown>> = [];
  stdout = '';
  stderr = '';
  readonly exited: Promise<number | null>;
  private waiters: Array<() => void> = [];

  constructor(args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) {
    this.child = spawn(process.execPath, [builtCli, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.child.stdout!.on('data', (chunk: Buffer) => {
      this.stdout += chunk.toString();
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        try {
          this.events.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          // not a progress line
        }
      }
      this.notify();
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
      this.notify();
    });
    this.exited = new Promise((done) => this.child.once('exit', (code) => (this.notify(), done(code))));
  }

  private notify(): void {
    for (const waiter of this.waiters.splice(0)) waiter();
  }

  /** Resolves with the first event matching `test`, failing after `timeoutMs`. */
  async waitFor(test: (event: Record<string, unknown>) => boolean, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(test);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(this.events.slice(-5))}; stderr: ${this.stderr.slice(-500)}`);
      await new Promise<void>((done) => {
        this.waiters.push(done);
        setTimeout(done, 500);
      });
    }
  }
}
