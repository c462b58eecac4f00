/**
 * A real nginx load balancer for tests: round robin over the given backends, on a free loopback
 * port, from a config generated into a temp directory (the same proxy settings as
 * deploy/nginx/fleet.conf: no buffering, long reads, HTTP/1.1 keep-alive to the replicas).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/ports.js';
import { httpGet } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';

export interface Nginx {
  url: string;
  /** Lines of its access log so far (`$upstream_addr $request`). */
  accessLog(): Promise<string[]>;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export async function startNginx(backends: string[]): Promise<Nginx> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-nginx-'));
  const port = await freePort();
  const root = typeof process.getuid === 'function' && process.getuid() === 0;
  const conf = `${root ? 'user root root;\n' : ''}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 512; }
http {
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  log_format fleet '$upstream_addr $request $status';
  access_log ${dir}/access.log fleet;
  upstream regmirror {
${backends.map((b) => `    server ${b.replace(/^https?:\/\//, '')};`).join('\n')}
    keepalive 16;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://regmirror;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`;
  await writeFile(join(dir, 'nginx.conf'), conf);
  let output = '';
  const p = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log')], { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(p);
  p.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  void exited.then(() => live.delete(p));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (p.exitCode !== null) throw new Error(`nginx exited: ${output}${await readFile(join(dir, 'error.log'), 'utf8').catch(() => '')}`);
      return (await httpGet(`${url}/v2/`, { timeoutMs: 1000 })).status === 200;
    },
    10_000,
    () => `nginx on ${url} to answer /v2/ (${output})`,
  );
  return {
    url,
    accessLog: async () => (await readFile(join(dir, 'access.log'), 'utf8').catch(() => '')).split('\n').filter(Boolean),
    async stop() {
      if (p.exitCode === null) {
        p.kill('SIGTERM');
        const t = setTimeout(() => p.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
