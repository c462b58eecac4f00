/**
 * A real S3 for tests: one single-node Ceph (monitor, in-memory OSD, radosgw) per vitest run, shared
 * by every suite that asks for it, started by the first one that does (test/servers/ceph-up.sh, ~7 s
 * here) and stopped by the globalSetup's teardown. A run that asks for no S3 starts no Ceph.
 *
 *   const s3 = await s3Server();          // { endpoint, region, accessKeyId, secretAccessKey, forcePathStyle }
 *   const bucket = await s3.newBucket();  // a fresh bucket per suite or per test
 *   ...                                   // s3.client(): an S3Client on it; s3.removeBucket(bucket) empties and drops it
 *
 * How workers share it: globalSetup makes a directory for the run (`inject('testRunDir')`). The
 * worker that creates `<dir>/ceph.lock` first starts Ceph under `<dir>/ceph`; the others wait for its
 * `env` file (or for `ceph.failed`, which holds why it did not start). The daemons record pid files
 * there; a watchdog stops them if the vitest process dies without its teardown.
 * REGMIRROR_TEST_S3_ENV=<env file of a running test/servers/ceph-up.sh> uses that Ceph instead.
 */
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AbortMultipartUploadCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import { inject } from 'vitest';
import { s3ClientConfig } from '../../src/storage/s3-client.js';
import { freePort } from './ports.js';
import { requireTools } from './tools.js';
import { waitFor } from './wait.js';

declare module 'vitest' {
  export interface ProvidedContext {
    /** A directory for this vitest run (servers shared across workers keep their state here). */
    testRunDir: string;
    /** The pid of the vitest process (daemons shared by the run stop when it is gone). */
    testRunPid: number;
  }
}

export const CEPH_SCRIPT = fileURLToPath(new URL('../servers/ceph-up.sh', import.meta.url));
const CEPH_TOOLS = ['ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph', 'monmaptool', 'ceph-authtool', 'curl'];

export interface S3Server {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  forcePathStyle: boolean;
  /** How long Ceph took to answer S3 (measured by the worker that started it). */
  startMs: number;
  /** A new, empty bucket with a unique name. */
  newBucket(): Promise<string>;
  /** Deletes every object and multipart upload in the bucket, then the bucket. */
  removeBucket(bucket: string): Promise<void>;
  /** Deletes every object and multipart upload whose key starts with `prefix`. */
  clear(bucket: string, prefix: string): Promise<void>;
  /** An S3 client for this server (the caller destroys it, or lets the worker's exit do it). */
  client(opts?: { accessKeyId: string; secretAccessKey: string }): S3Client;
  /** A new S3 user whose objects may take at most `maxBytes` in all (radosgw enforces it at once: QuotaExceeded). */
  quotaUser(maxBytes: number): Promise<{ accessKeyId: string; secretAccessKey: string }>;
}

const hasTool = (t: string) => spawnSync('sh', ['-c', `command -v ${t}`], { encoding: 'utf8' }).status === 0;

/** Undefined when Ceph can run here; else why the suite is skipped (in CI: throws, nothing may skip). */
export function cephSkipReason(suite: string): string | undefined {
  return requireTools(suite, Object.fromEntries(CEPH_TOOLS.map((t) => [t, hasTool(t)])));
}

let shared: Promise<S3Server> | undefined;

/** The run's Ceph, started on first use. */
export function s3Server(): Promise<S3Server> {
  shared ??= connect();
  return shared;
}

async function connect(): Promise<S3Server> {
  const runDir = inject('testRunDir');
  if (!runDir) throw new Error('s3Server(): no test run directory; vitest.config.ts must keep test/helpers/global-setup.ts');
  const lab = join(runDir, 'ceph');
  // A developer running suites again and again may point them at a Ceph already running (its env file).
  const envFile = process.env.REGMIRROR_TEST_S3_ENV ?? join(lab, 'env');
  const failedFile = join(runDir, 'ceph.failed');
  let owner = false;
  try {
    if (!process.env.REGMIRROR_TEST_S3_ENV) await mkdir(join(runDir, 'ceph.lock'));
    owner = !process.env.REGMIRROR_TEST_S3_ENV;
  } catch {
    // another worker is starting it
  }
  if (owner) await start(lab, inject('testRunPid'), failedFile);
  await waitFor(
    async () => {
      if (existsSync(failedFile)) throw new Error(`Ceph did not start: ${await readFile(failedFile, 'utf8')}`);
      return existsSync(envFile);
    },
    180_000,
    'the shared Ceph to answer S3',
    100,
  );
  const env = Object.fromEntries(
    (await readFile(envFile, 'utf8'))
      .split('\n')
      .filter((l) => l.includes('='))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
  );
  const startMs = Number(await readFile(join(runDir, 'ceph.start-ms'), 'utf8').catch(() => 'NaN'));
  const server: Omit<S3Server, 'newBucket' | 'removeBucket' | 'client' | 'clear' | 'quotaUser'> = {
    endpoint: env.S3_ENDPOINT!,
    region: env.S3_REGION!,
    accessKeyId: env.S3_ACCESS_KEY!,
    secretAccessKey: env.S3_SECRET_KEY!,
    forcePathStyle: env.S3_FORCE_PATH_STYLE === 'true',
    startMs,
  };
  // The mirror's own client configuration (src/storage/s3-client.ts), so a store under test sends what the mirror sends.
  const client = (keys?: { accessKeyId: string; secretAccessKey: string }) =>
    new S3Client(
      s3ClientConfig({
        endpoint: server.endpoint,
        region: server.region,
        forcePathStyle: server.forcePathStyle,
        credentials: keys ?? { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      }),
    );
  const admin = client();
  let n = 0;
  const clear = async (bucket: string, prefix: string) => {
    for (;;) {
      const uploads = await admin.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
      for (const u of uploads.Uploads ?? []) await admin.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
      const objects = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
      const keys = (objects.Contents ?? []).map((o) => ({ Key: o.Key! }));
      if (keys.length > 0) await admin.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
      if (!uploads.IsTruncated && !objects.IsTruncated) break;
    }
  };
  return {
    ...server,
    client,
    async newBucket() {
      const name = `t${process.pid}-${++n}-${randomBytes(4).toString('hex')}`;
      await admin.send(new CreateBucketCommand({ Bucket: name }));
      return name;
    },
    clear,
    async quotaUser(maxBytes) {
      const uid = `quota-${process.pid}-${++n}`;
      const keys = { accessKeyId: `${uid}-ak`, secretAccessKey: `${uid}-sk` };
      // radosgw-admin talks to the cluster through the ceph.conf beside the env file.
      const env = { ...process.env, CEPH_CONF: join(dirname(envFile), 'ceph', 'ceph.conf') };
      const admin = (args: string[]) => {
        const r = spawnSync('radosgw-admin', args, { env, encoding: 'utf8', timeout: 30_000 });
        if (r.status !== 0) throw new Error(`radosgw-admin ${args.join(' ')}: ${r.stderr}`);
      };
      admin(['user', 'create', `--uid=${uid}`, `--display-name=${uid}`, `--access-key=${keys.accessKeyId}`, `--secret=${keys.secretAccessKey}`]);
      admin(['quota', 'set', `--uid=${uid}`, '--quota-scope=user', `--max-size=${maxBytes}`]);
      admin(['quota', 'enable', `--uid=${uid}`, '--quota-scope=user']);
      return keys;
    },
    async removeBucket(bucket) {
      await clear(bucket, '');
      await admin.send(new DeleteBucketCommand({ Bucket: bucket }));
    },
  };
}

/** Runs the start script; on failure leaves `failedFile` saying why, for every waiting worker. */
async function start(lab: string, ownerPid: number, failedFile: string): Promise<void> {
  const started = Date.now();
  // Free ports for the monitor and radosgw; the OSD's messenger takes ports from a range below the
  // ephemeral ones (Ceph skips any in use). Never the shared lab script's fixed ports.
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const msMin = 10_000 + Math.floor(Math.random() * 20_000);
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn('bash', [CEPH_SCRIPT, 'start'], {
      env: { ...process.env, LAB: lab, MON_PORT: String(monPort), RGW_PORT: String(rgwPort), MS_PORT_MIN: String(msMin), MS_PORT_MAX: String(msMin + 40), OWNER_PID: String(ownerPid) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    p.stdout.on('data', (d: Buffer) => output.push(d.toString()));
    p.stderr.on('data', (d: Buffer) => output.push(d.toString()));
    p.once('error', (e) => {
      output.push(String(e));
      resolve(null);
    });
    p.once('exit', (c) => resolve(c));
  });
  if (code !== 0) {
    await writeFile(failedFile, `ceph-up.sh exited ${code}:\n${output.join('').slice(-4000)}`);
    return;
  }
  const ms = Date.now() - started;
  await writeFile(join(lab, '..', 'ceph.start-ms'), String(ms));
  process.stdout.write(`ceph: single-node Ceph (memstore OSD, radosgw) answering S3 at ${/S3_ENDPOINT=(\S+)/.exec(output.join(''))?.[1] ?? '?'} after ${ms} ms\n`);
}
