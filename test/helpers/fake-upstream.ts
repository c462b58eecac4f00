/**
 * A fake Docker Hub: a real HTTP server (node:http) speaking the OCI distribution read API the way
 * registry-1.docker.io does, so the mirror's upstream client is tested over real sockets.
 *
 * - Bearer auth (default): 401 + `WWW-Authenticate: Bearer realm=<url>/token,service="fake-hub",scope=...`;
 *   the token endpoint hands out opaque tokens remembered with their repositories and expiry.
 *   `auth: 'basic'` and `auth: 'none'` model private registries.
 * - Blob GETs answer 307 to a second server (the "CDN", 127.0.0.2) that refuses any request carrying
 *   Authorization, like Docker Hub's S3/Cloudflare backends do. Blob HEADs are answered directly.
 * - Manifests honour Accept (404 when the stored type is not accepted), carry Docker-Content-Digest,
 *   and count against an optional Docker-Hub-style pull rate limit (GET counts, HEAD does not).
 * - Every request is recorded with its final status; `faults` switches failures on and off per request.
 * - Time (token and CDN URL expiry) follows the injected `now` clock, so tests never sleep for it.
 *
 * The parts live in fake-upstream/: content, auth (token realm), registry, cdn, bodies, faults,
 * rate-limit, recorder, listeners, protocol (the wire) and types. This class wires them together.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Blob, Image } from './images.js';
import { Auth } from './fake-upstream/auth.js';
import { Cdn } from './fake-upstream/cdn.js';
import { Content } from './fake-upstream/content.js';
import { clearFaults, faultSwitches } from './fake-upstream/faults.js';
import { Listeners } from './fake-upstream/listeners.js';
import { send, type Ctx } from './fake-upstream/protocol.js';
import { Recorder } from './fake-upstream/recorder.js';
import { Registry } from './fake-upstream/registry.js';
import type { CountFilter, Faults, FakeUpstreamOptions, RecordedRequest } from './fake-upstream/types.js';
import { listenOn } from './ports.js';

export type { CountFilter, Faults, FakeUpstreamOptions, RecordedRequest, RequestKind } from './fake-upstream/types.js';

export class FakeUpstream {
  readonly url: string;
  readonly cdnUrl?: string;
  /** Every request received, in arrival order, with the status it was answered (see `count`). */
  readonly requests: RecordedRequest[];
  /** CDN requests refused because they carried an Authorization header. */
  cdnRejectedAuth = 0;
  /** Mutable pull limit (see FakeUpstreamOptions.rateLimit); set undefined to switch it off. */
  rateLimit?: { limit: number; remaining: number };
  readonly faults: Faults;

  private readonly content = new Content();
  private readonly recorder = new Recorder();
  private readonly auth: Auth;
  private readonly registry: Registry;
  private readonly cdn: Cdn;
  private readonly listeners: Listeners;

  private constructor(opts: FakeUpstreamOptions, listeners: Listeners, url: string, cdnUrl: string | undefined) {
    const now = opts.now ?? Date.now;
    this.url = url;
    if (cdnUrl) this.cdnUrl = cdnUrl;
    this.requests = this.recorder.requests;
    if (opts.rateLimit) this.rateLimit = { ...opts.rateLimit };
    this.listeners = listeners;
    this.faults = faultSwitches({
      get: () => !this.listeners.up,
      set: (v: boolean) => void (v ? this.goDown() : this.goUp()),
    });
    this.auth = new Auth({
      mode: opts.auth ?? 'bearer',
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      ttlSeconds: opts.tokenTtlSeconds ?? 300,
      url,
      now,
    });
    this.registry = new Registry({
      url,
      cdnUrl,
      content: this.content,
      auth: this.auth,
      faults: this.faults,
      rateLimit: () => this.rateLimit,
      referrers: opts.referrers ?? true,
      narrowLists: opts.narrowLists ?? 'docker',
      now,
    });
    this.cdn = new Cdn({ content: this.content, faults: this.faults, now, onRejectedAuth: () => void this.cdnRejectedAuth++ });
  }

  static async start(opts: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
    const host = opts.host ?? '127.0.0.1';
    const cdnHost = opts.cdn === false ? undefined : (typeof opts.cdn === 'object' && opts.cdn.host) || '127.0.0.2';
    // Handlers need `self`, which needs the ports; servers exist first and route through a late binding.
    // eslint-disable-next-line prefer-const -- assigned below, after the servers that close over it
    let self: FakeUpstream | undefined;
    const registry = http.createServer((req, res) => self!.dispatch(req, res, 'registry'));
    const bound = [{ server: registry, host, port: await listenOn(registry, host, 0) }];
    let cdnUrl: string | undefined;
    if (cdnHost) {
      const cdn = http.createServer((req, res) => self!.dispatch(req, res, 'cdn'));
      const port = await listenOn(cdn, cdnHost, 0);
      bound.push({ server: cdn, host: cdnHost, port });
      cdnUrl = `http://${cdnHost}:${port}`;
    }
    self = new FakeUpstream(opts, new Listeners(bound), `http://${host}:${bound[0]!.port}`, cdnUrl);
    return self;
  }

  // --- content -----------------------------------------------------------------------------

  putBlob(repo: string, blob: Blob): void {
    this.content.putBlob(repo, blob);
  }

  /** Stores a manifest or index (reachable by digest, and by `tag` if given). Throws if it is not JSON. */
  putManifest(repo: string, manifest: Blob, tag?: string): void {
    this.content.putManifest(repo, manifest, tag);
  }

  putImage(repo: string, image: Image, tag?: string): void {
    this.content.putImage(repo, image, tag);
  }

  putIndex(repo: string, index: Blob, images: Image[], tag?: string): void {
    this.content.putIndex(repo, index, images, tag);
  }

  deleteTag(repo: string, tag: string): void {
    this.content.deleteTag(repo, tag);
  }

  /** Makes every issued token invalid now, as if they had all expired. */
  expireTokens(): void {
    this.auth.expireAll();
  }

  // --- observation -------------------------------------------------------------------------

  count(filter: CountFilter = {}): number {
    return this.recorder.count(filter);
  }

  resetCounters(): void {
    this.recorder.clear();
    this.cdnRejectedAuth = 0;
  }

  /** Clears every fault switch (re-listening if `refuse` was on). */
  async resetFaults(): Promise<void> {
    clearFaults(this.faults);
    await this.goUp();
  }

  // --- listeners ---------------------------------------------------------------------------

  /** Closes both listeners and drops open connections: new connections are refused. */
  goDown(): Promise<void> {
    return this.listeners.goDown();
  }

  /** Listens again on the same host:port pairs. */
  goUp(): Promise<void> {
    return this.listeners.goUp();
  }

  close(): Promise<void> {
    return this.listeners.close();
  }

  // --- dispatch ----------------------------------------------------------------------------

  private dispatch(req: IncomingMessage, res: ServerResponse, server: 'registry' | 'cdn'): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const rec = this.recorder.record(req, url, server);
    const ctx: Ctx = { req, res, url, rec, head: req.method === 'HEAD' };
    const handle = server === 'cdn' ? this.cdn.handle(ctx) : this.registry.handle(ctx);
    handle.catch((err: unknown) => {
      if (!res.headersSent && !res.destroyed) send(ctx, 500, { 'content-type': 'text/plain' }, `fake upstream bug: ${String(err)}\n`);
      else res.destroy();
    });
  }
}
