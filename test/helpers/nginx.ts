/**
 * nginx in front of a mirror, from the shipped deploy/nginx/regmirror.conf: the file is used as it
 * is, with only its three site-specific lines rewritten (the mirror's address, the listen address,
 * the blob directory) and wrapped in a main config of its own (pid, temp paths, logs in a temp dir).
 * Started as `nginx -p <dir> -c <conf> -g 'daemon off;'` on a free loopback port, in its own process
 * group with a watchdog (harness spawnDaemon); used by test/integration/nginx-accel.test.ts and the bench.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupDir, freePort, httpStatus, isRoot, makeTempDir, spawnDaemon, toolPath, waitForDaemon } from '../e2e/harness/tools.js';

export const NGINX_CONF = new URL('../../deploy/nginx/regmirror.conf', import.meta.url);
/** The internal location of deploy/nginx/regmirror.conf: the mirror's `serve.accelRedirect`. */
export const ACCEL_PREFIX = '/_regmirror/blobs';

export interface NginxFront {
  url: string;
  host: string;
  /** The master's pid. */
  pid: number;
  /** nginx's access log lines so far (`$request $status $body_bytes_sent $upstream_addr`). */
  accessLog(): string[];
  logs(): string;
  stop(): Promise<void>;
}

/** The shipped file with its site-specific lines pointed at this machine; throws if one is missing. */
export function regmirrorSite(text: string, o: { listen: string; mirror: string; blobsDir: string }): string {
  const swaps: Array<[RegExp, string]> = [
    [/^(\s*server\s+)regmirror:5000;/m, `$1${o.mirror};`],
    [/^(\s*listen\s+)8080;/m, `$1${o.listen};`],
    [/^(\s*alias\s+)\/var\/lib\/regmirror\/blobs\/;/m, `$1${o.blobsDir.replace(/\/?$/, '/')};`],
  ];
  let out = text;
  for (const [re, to] of swaps) {
    if (!re.test(out)) throw new Error(`deploy/nginx/regmirror.conf: no line matching ${re}`);
    out = out.replace(re, to);
  }
  return out;
}

/** `conf`: the site file (default the repository's deploy/nginx/regmirror.conf; the compiled bench passes its path). */
export async function startNginxFront(opts: { mirrorHost: string; blobsDir: string; conf?: string }): Promise<NginxFront> {
  const bin = toolPath('nginx');
  if (!bin) throw new Error('nginx is not installed (apt-get install -y nginx)');
  const dir = makeTempDir('rm-nginx');
  for (const t of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, 'tmp', t), { recursive: true });
  const site = readFileSync(opts.conf ?? NGINX_CONF, 'utf8');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    writeFileSync(join(dir, 'site.conf'), regmirrorSite(site, { listen: `127.0.0.1:${port}`, mirror: opts.mirrorHost, blobsDir: opts.blobsDir }));
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      `# written by test/helpers/nginx.ts
master_process on;
worker_processes 2;
${isRoot() ? 'user root;' : ''}
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  log_format t '$request $status $body_bytes_sent $upstream_addr';
  access_log ${dir}/access.log t;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  include ${dir}/site.conf;
}
`,
    );
    const d = spawnDaemon(bin, ['-e', `${dir}/error.log`, '-p', `${dir}/`, '-c', conf, '-g', 'daemon off;'], { watch: { dir, graceMs: 3000 } });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitForDaemon(d, async () => (await httpStatus(`${url}/_regmirror/blobs/`)) > 0, 10_000, `nginx at ${url}`);
    } catch (e) {
      await d.stop(2000);
      d.dismissWatchdog();
      const errors = `${d.logs()}${readOr(join(dir, 'error.log'))}`;
      if (attempt < 2 && /in use/.test(errors)) continue;
      await cleanupDir(dir);
      throw new Error(`${(e as Error).message}\n${errors}`);
    }
    let stopped: Promise<void> | undefined;
    return {
      url,
      host: `127.0.0.1:${port}`,
      pid: d.pid,
      accessLog: () => readOr(join(dir, 'access.log')).split('\n').filter((l) => l !== ''),
      logs: () => `${d.logs()}${readOr(join(dir, 'error.log'))}`,
      stop: () =>
        (stopped ??= (async () => {
          await d.stop(3000);
          await cleanupDir(dir);
          d.dismissWatchdog();
        })()),
    };
  }
}

function readOr(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}
