/**
 * The mirror's own registry tokens: short-lived JWTs (HS256, via jose) naming the user and the
 * repositories (`<upstream>/<repo>`) it may pull. Verification checks signature, algorithm, issuer,
 * audience (the service), expiry and not-before; anything else is refused.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';

export interface TokenClaims {
  /** The user, or undefined for an anonymous token. */
  user: string | undefined;
  /** Repositories (`docker.io/library/alpine`) this token may pull. */
  repositories: string[];
  /** Expiry, seconds since the epoch (set on verified tokens). */
  exp?: number;
}

/** Seconds a token's not-before and expiry may be off by (distribution's `Leeway`). */
export const CLOCK_LEEWAY_SECONDS = 60;

export class TokenSigner {
  constructor(private readonly opts: { key: Uint8Array; service: string; ttlSeconds: number; now: () => number }) {}

  get ttlSeconds(): number {
    return this.opts.ttlSeconds;
  }

  async sign(claims: TokenClaims): Promise<string> {
    const now = Math.floor(this.opts.now() / 1000);
    return new SignJWT({ access: claims.repositories.map((name) => ({ type: 'repository', name, actions: ['pull'] })), ...(claims.user === undefined ? { anon: true } : {}) })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(this.opts.service)
      .setAudience(this.opts.service)
      .setSubject(claims.user ?? '')
      .setIssuedAt(now)
      .setNotBefore(now)
      .setExpirationTime(now + this.opts.ttlSeconds)
      .setJti(randomUUID())
      .sign(this.opts.key);
  }

  /** The claims of a valid token, or undefined (bad signature, expired, wrong issuer/audience, malformed). */
  async verify(token: string): Promise<TokenClaims | undefined> {
    if (token.length > 8192) return undefined;
    try {
      const { payload } = await jwtVerify(token, this.opts.key, {
        algorithms: ['HS256'],
        issuer: this.opts.service,
        audience: this.opts.service,
        currentDate: new Date(this.opts.now()),
        // As distribution's token check (Leeway, 60 s): replicas sharing a key, and clients, whose
        // clocks differ a little from the issuer's.
        clockTolerance: CLOCK_LEEWAY_SECONDS,
        requiredClaims: ['exp', 'sub'],
      });
      const access = Array.isArray(payload.access) ? (payload.access as unknown[]) : [];
      const repositories: string[] = [];
      for (const a of access) {
        const e = a as { type?: unknown; name?: unknown; actions?: unknown };
        if (e.type === 'repository' && typeof e.name === 'string' && Array.isArray(e.actions) && e.actions.includes('pull')) repositories.push(e.name);
      }
      const anon = payload.anon === true;
      if (!anon && (typeof payload.sub !== 'string' || payload.sub === '')) return undefined;
      return { user: anon ? undefined : payload.sub, repositories, exp: payload.exp! };
    } catch {
      return undefined;
    }
  }
}
