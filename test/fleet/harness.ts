/**
 * A fleet for tests: N real replica processes (test/helpers/spawn.ts, `node dist/main.js`) over one
 * shared store and one Redis, each with its peer endpoint on a free loopback port; and a client
 * that pulls images through them checking every digest and timing first and last bytes.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import { freePort } from '../helpers/ports.js';
import { spawnMirror, type SpawnedMirror, type SpawnUpstream } from '../helpers/spawn.js';

export const FLEET_SECRET = 'test-fleet-secret-0123456789';

export interface Replica {
  readonly id: string;
  readonly mirror: SpawnedMirror;
  readonly peerUrl: string;
}

export interface FleetOptions {
  n: number;
  upstreams: Record<string, SpawnUpstream>;
  redisUrl: string;
  /**
   * One data directory shared by every replica (the filesystem store as the shared store, for
   * development); unset: each replica its own (with a shared `storage` in extraConfig: S3 + Redis).
   */
  dataDir?: string;
  leaseTtlMs?: number;
  /** Extra raw config for every replica (e.g. a storage section). */
  extraConfig?: Record<string, unknown>;
  keyPrefix?: string;
}

export async function startFleet(opts: FleetOptions): Promise<Replica[]> {
  const replicas: Replica[] = [];
  // One at a time: each start sweeps the shared tmp/ (nothing runs yet), and 2 cores start them as fast.
  for (let i = 0; i < opts.n; i++) replicas.push(await startReplica(opts, `r${i}`));
  return replicas;
}

export async function startReplica(opts: FleetOptions, id: string): Promise<Replica> {
  const peerPort = await freePort();
  const peerUrl = `http://127.0.0.1:${peerPort}`;
  const mirror = await spawnMirror({
    upstreams: opts.upstreams,
    ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}),
    extraConfig: {
      fleet: {
        enabled: true,
        redisUrl: opts.redisUrl,
        replicaId: id,
        listen: `127.0.0.1:${peerPort}`,
        advertiseUrl: peerUrl,
        secret: FLEET_SECRET,
        leaseTtlMs: opts.leaseTtlMs ?? 1500,
        keyPrefix: opts.keyPrefix ?? 'regmirror:test:',
      },
      ...(opts.extraConfig ?? {}),
    },
  });
  return { id, mirror, peerUrl };
}

export interface BlobFetch {
  digest: string;
  size: number;
  /** ms (performance.now) when the response's first body byte arrived, and its last. */
  firstByteAt: number;
  endAt: number;
}

/** GET a URL and hash the body; rejects on a status other than 200 or on a digest mismatch. */
export function fetchBlob(url: string, digest: string, opts: { headers?: Record<string, string>; progress?: (bytes: number) => void } = {}): Promise<BlobFetch> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: opts.headers ?? {} }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        return reject(new Error(`GET ${url}: ${res.statusCode}`));
      }
      const hash = createHash('sha256');
      let size = 0;
      let firstByteAt = 0;
      res.on('data', (c: Buffer) => {
        if (!firstByteAt) firstByteAt = performance.now();
        size += c.length;
        hash.update(c);
        opts.progress?.(size);
      });
      res.on('end', () => {
        const got = `sha256:${hash.digest('hex')}`;
        if (got !== digest) return reject(new Error(`GET ${url}: body is ${got} (${size} bytes), wanted ${digest}`));
        resolve({ digest, size, firstByteAt, endAt: performance.now() });
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error(`GET ${url}: aborted after ${size} bytes`)));
    });
    req.on('error', reject);
    req.setTimeout(120_000, () => req.destroy(new Error(`GET ${url}: timed out`)));
  });
}

export interface ImageRef {
  repo: string;
  tag: string;
  /** Digests of the config and layers, in the manifest's order. */
  blobs: string[];
}

/** A client pull: the manifest by tag, then its config and layers, every digest checked. */
export async function pull(baseUrl: string, image: ImageRef, accept: string): Promise<BlobFetch[]> {
  const m = await fetch(`${baseUrl}/v2/${image.repo}/manifests/${image.tag}`, { headers: { accept } });
  if (m.status !== 200) throw new Error(`manifest ${image.repo}:${image.tag} from ${baseUrl}: ${m.status}`);
  const manifest = (await m.json()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  const digests = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  return Promise.all(digests.map((d) => fetchBlob(`${baseUrl}/v2/${image.repo}/blobs/${d}`, d)));
}
