import { isIP } from 'node:net';
import { Redis, type RedisOptions } from 'ioredis';
import { ConfigError, RegstackError } from '@regstack/regularizer';

/** Redis could not be reached, or refused our credentials: raised within seconds, never a hang. */
export class QueueConnectionError extends RegstackError {}

/** Where the queue lives, read from a `redis://` or `rediss://` URL. */
export interface QueueLocation {
  /** The URL with its password replaced by `***`, for messages and logs. */
  display: string;
  /** ioredis options (host, port, db, credentials, TLS). */
  redis: RedisOptions;
}

/**
 * Parses `redis://[user:password@]host:port/db` or `rediss://…` (TLS, verified against the system's
 * certificate authorities; add a private one with NODE_EXTRA_CA_CERTS). `field` names the option in errors.
 */
export function parseQueueUrl(text: string, field = '--queue'): QueueLocation {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(field, `expected redis://[user:password@]host:port/db, got '${text}'`);
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
    throw new ConfigError(field, `expected a redis:// or rediss:// URL, got protocol '${url.protocol}'`);
  }
  if (!url.hostname) throw new ConfigError(field, 'the URL names no host');
  const port = url.port ? Number(url.port) : 6379;
  const path = url.pathname.replace(/^\//, '');
  if (path !== '' && !/^\d+$/.test(path)) throw new ConfigError(field, `the database must be a number (/0, /1, …), got '/${path}'`);
  if (url.search || url.hash) throw new ConfigError(field, 'query strings and fragments are not read; give host, port and database only');
  // URL keeps IPv6 hosts in brackets; ioredis wants them bare.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const redis: RedisOptions = {
    host,
    port,
    db: path === '' ? 0 : Number(path),
    ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
    // TLS checks the certificate against the host name (SNI), or its IP address for an IP.
    ...(url.protocol === 'rediss:' ? { tls: isIP(host) ? {} : { servername: host } } : {}),
  };
  const shown = new URL(text);
  if (shown.password) shown.password = '***';
  return { display: shown.toString(), redis };
}

/**
 * Checks that Redis answers (and accepts the credentials) before anything waits on it: a worker or
 * an enqueue against a wrong address fails in `timeoutMs` with a {@link QueueConnectionError}
 * instead of retrying for ever.
 */
export async function assertReachable(location: QueueLocation, timeoutMs = 5000): Promise<void> {
  const client = new Redis({
    ...location.redis,
    lazyConnect: true,
    connectTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
  });
  let cause: Error | null = null;
  client.on('error', (error: Error) => (cause ??= error)); // the socket's error says more than "Connection is closed"
  try {
    await client.connect();
    await client.ping();
  } catch (error) {
    throw new QueueConnectionError('--queue', `cannot use Redis at ${location.display}: ${(cause ?? (error as Error)).message}`);
  } finally {
    client.disconnect();
  }
}

/** A connection that reconnects after Redis restarts (workers, and waiting for a sweep). */
export function reconnectingClient(location: QueueLocation): Redis {
  return new Redis({
    ...location.redis,
    // BullMQ's blocking commands must wait through a restart instead of failing after a few retries.
    maxRetriesPerRequest: null,
    retryStrategy: (attempt) => Math.min(200 * attempt, 2000),
  });
}
