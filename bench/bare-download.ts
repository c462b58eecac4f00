/**
 * The least work a cold pull adds to a machine beside serving: one GET of a blob from the upstream,
 * every chunk hashed (sha256) and written at its offset into a file, as regmirror's download thread
 * does, and nothing else (no verification wait, no readers, no fsync). Workload 5 runs it beside 10
 * clients of nginx serving the same blob warm: how much that slows the slowest of them is the floor
 * of "10 cold ÷ 10 warm" on this machine for any mirror, however little coalescing costs.
 *
 *   node bench/out/bench/bare-download.js URL FILE
 *
 * Prints `<bytes> <sha256:hex> <seconds>` and exits 0 on a 200; exits 1 otherwise.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, writeSync } from 'node:fs';
import { get } from 'node:http';

const [url, file] = process.argv.slice(2);
if (!url || !file) {
  process.stderr.write('usage: node bare-download.js URL FILE\n');
  process.exit(2);
}
const t0 = performance.now();
const fd = openSync(file, 'w');
const hash = createHash('sha256');
let pos = 0;
get(url, (res) => {
  if (res.statusCode !== 200) {
    process.stderr.write(`bare-download: ${url} answered ${res.statusCode}\n`);
    process.exit(1);
  }
  res.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    for (let done = 0; done < chunk.length; ) done += writeSync(fd, chunk, done, chunk.length - done, pos + done);
    pos += chunk.length;
  });
  res.on('end', () => {
    closeSync(fd);
    process.stdout.write(`${pos} sha256:${hash.digest('hex')} ${((performance.now() - t0) / 1000).toFixed(3)}\n`);
  });
  res.on('error', (e) => {
    process.stderr.write(`bare-download: ${e.message}\n`);
    process.exit(1);
  });
}).on('error', (e) => {
  process.stderr.write(`bare-download: ${e.message}\n`);
  process.exit(1);
});
