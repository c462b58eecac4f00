/**
 * The Node ceiling peer of the bench: the least a node:http server can do to serve a blob file —
 * every GET answered 200 with the file piped from `fs.createReadStream` (default read size) into
 * the response. What regmirror's warm blob path is measured against: the rate a Node server
 * reaches the usual way, not a target of another language. The mirror reads a stored blob into two
 * buffers it reuses (src/storage/file-body.ts) where this allocates every chunk, so it may beat it.
 *
 *   node bench/out/bench/ceiling.js FILE PORT
 */
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';

const [file, portArg] = process.argv.slice(2);
if (!file || !portArg) {
  process.stderr.write('usage: node ceiling.js FILE PORT\n');
  process.exit(2);
}
const size = statSync(file).size;
const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
  if (req.method === 'HEAD') return void res.end();
  createReadStream(file).pipe(res);
});
server.listen(Number(portArg), '127.0.0.1', () => process.stdout.write(`listening on ${portArg}\n`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
