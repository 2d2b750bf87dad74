// An in-process S3-compatible server (s3rver) for tests and for `npm start` without S3_ENDPOINT.
// Not for production: MinIO (docker-compose) or real S3 is. Differences seen with s3rver: a
// multipart ETag lacks the `-N` suffix. Clients must use path-style addressing.
import { createServer, type Server } from 'node:http';
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import S3rver from 's3rver';

export interface EmbeddedS3Options {
  /** Directory holding the buckets' files (created if missing). */
  dir: string;
  /** 0 (the default) picks a free port; `endpoint` reports the real one. */
  port?: number;
  host?: string;
}

export interface EmbeddedS3 {
  endpoint: string;
  close(): Promise<void>;
}

export async function startEmbeddedS3(options: EmbeddedS3Options): Promise<EmbeddedS3> {
  const host = options.host ?? '127.0.0.1';
  await mkdir(options.dir, { recursive: true });
  const s3rver = new S3rver({ directory: options.dir, silent: true, vhostBuckets: false });
  await s3rver.configureBuckets();

  // Our own http.Server instead of s3rver.run(): run() never settles when listen fails
  // (EADDRINUSE), and we want close() to drop keep-alive sockets rather than wait for them.
  const server: Server = createServer(s3rver.callback());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;

  let closed: Promise<void> | undefined;
  return {
    endpoint: `http://${urlHost}:${port}`,
    close() {
      closed ??= new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
