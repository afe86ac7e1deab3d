/**
 * What the browser tests share: Debian's Chromium (or `CHROMIUM_PATH`), a Vite build of a page, and a
 * static server for it on 127.0.0.1.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The browser the tests drive. */
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';
/** Whether it is installed. */
export const hasChromium = existsSync(CHROMIUM);

/** `CI` as CI services set it (`true`, `1`, or a service name); unset, empty, `0` and `false` mean not CI. */
function isCi(value: string | undefined): boolean {
  return value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
}

/**
 * Under CI (`.ci/run` installs Chromium) a missing browser means a broken machine, and a skipped test
 * would pass green: the tests run and fail instead. Elsewhere they skip and say why.
 */
export const chromiumRequired = isCi(process.env['CI']);

/** True when a browser test should be skipped; says why once. */
export function skipWithoutChromium(what: string): boolean {
  if (hasChromium || chromiumRequired) return false;
  console.warn(`SKIPPED ${what}: no Chromium at ${CHROMIUM}. Install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH. With CI set this fails instead.`);
  return true;
}

/** Throws, under CI, when there is no browser to run (call it first in `beforeAll`). */
export function assertChromium(): void {
  if (!hasChromium) throw new Error(`CI is set and there is no Chromium at ${CHROMIUM}: install it (apt-get install -y chromium, as .ci/run does) or set CHROMIUM_PATH`);
}

/**
 * Flags of every browser test. SwiftShader's Vulkan through ANGLE gives WebGL2 with float colour
 * buffers without a GPU; since Chromium 137 software WebGL needs the "unsafe" opt-in.
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/** The playground package's folder. */
export const packageRoot = fileURLToPath(new URL('..', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  // instantiateStreaming refuses wasm served under any other type.
  '.wasm': 'application/wasm',
  '.json': 'application/json',
};

/**
 * `vite build` of the page whose `index.html` is in `root` (relative to the package; default the
 * playground itself), with the playground's `vite.config.ts`, into `outDir`.
 */
export function buildPage(outDir: string, root = '.'): Promise<void> {
  const viteBin = join(dirname(createRequire(import.meta.url).resolve('vite/package.json')), 'bin', 'vite.js');
  const args = [viteBin, 'build', root, '--config', join(packageRoot, 'vite.config.ts'), '--outDir', outDir, '--emptyOutDir', '--logLevel', 'warn'];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      cwd: packageRoot,
      env: { ...process.env, NODE_ENV: 'production' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`vite build exited ${code}:\n${output}`))));
  });
}

/** A static file server for a built page, on a free port of 127.0.0.1. */
export async function serve(root: string): Promise<Server> {
  const server = createServer(async (request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? '/', 'http://127.0.0.1').pathname);
    const file = normalize(join(root, path.endsWith('/') ? `${path}index.html` : path));
    if (!file.startsWith(root + sep)) {
      response.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      response.writeHead(200, { 'content-type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** The served page's URL. */
export function urlOf(server: Server): string {
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
}
