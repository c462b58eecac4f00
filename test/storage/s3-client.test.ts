/**
 * The mirror's S3 client configuration on the wire (a plain HTTP server stands in for the object
 * store): a PUT sends its body at once, without `Expect: 100-continue`, and a refusal that follows
 * the body reaches the store as a full store, not as an unreachable one.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { s3ClientConfig } from '../../src/storage/s3-client.js';
import { classifyS3Error } from '../../src/storage/s3-errors.js';
import { StoreFullError } from '../../src/storage/store.js';
import { listenOn } from '../helpers/ports.js';

const MiB = 1024 * 1024;

describe('s3ClientConfig', () => {
  const seen: { headers: IncomingHttpHeaders; bodyBytes: number; continued: boolean }[] = [];
  const server = createServer((req, res) => {
    const entry = { headers: req.headers, bodyBytes: 0, continued: false };
    seen.push(entry);
    req.on('data', (c: Buffer) => (entry.bodyBytes += c.length));
    req.on('end', () => {
      // radosgw's answer to a PUT over the owner's quota.
      res.writeHead(403, { 'content-type': 'application/xml' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>QuotaExceeded</Code><Message></Message></Error>');
    });
  });
  // Node answers `Expect: 100-continue` itself unless 'checkContinue' is handled: record it, then continue.
  server.on('checkContinue', (req, res) => {
    res.writeContinue();
    server.emit('request', req, res);
    seen.at(-1)!.continued = true;
  });
  let client: S3Client;
  beforeAll(async () => {
    const port = await listenOn(server);
    client = new S3Client(s3ClientConfig({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'x', secretAccessKey: 'y' }, maxAttempts: 1 }));
  });
  afterAll(async () => {
    client.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  // The SDK asks for a 100 from 2 MiB up (its default threshold): the sizes where the setting matters.
  it.each([2 * MiB, 6 * MiB])('a PUT of %i bytes sends its body without waiting for a 100, and its refusal is a full store', async (size) => {
    seen.length = 0;
    const body = Buffer.alloc(size, 7);
    const err = await client.send(new PutObjectCommand({ Bucket: 'b', Key: 'k', Body: body, ContentLength: size, IfNoneMatch: '*' })).catch((e: unknown) => e);
    expect((err as Error).name).toBe('QuotaExceeded');
    expect(classifyS3Error(err)).toBeInstanceOf(StoreFullError);
    expect(seen).toHaveLength(1);
    expect(seen[0]!.headers.expect).toBeUndefined();
    expect(seen[0]!.continued).toBe(false);
    expect(seen[0]!.bodyBytes).toBe(size);
    expect(seen[0]!.headers['content-length']).toBe(String(size));
  });
});
