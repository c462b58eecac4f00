/**
 * Docker's image manifest v2 schema 1, signed (`application/vnd.docker.distribution.manifest.v1+prettyjws`):
 * a legacy format some old images on Docker Hub and quay.io still have, which podman and skopeo
 * still pull. Its digest is not of the bytes served: libtrust signs a JSON payload and splices the
 * `signatures` in before its closing brace, and registries name the manifest by the digest of that
 * payload (what Docker-Content-Digest says, and what a client asks for by digest). Each signature's
 * protected header records where the payload's tail was cut (`formatLength`) and the tail itself
 * (`formatTail`, base64url), so the payload is those bytes put back together.
 */
import { createHash } from 'node:crypto';

/**
 * The digest (`<algorithm>:<hex>`) of a signed schema 1 manifest's payload; undefined when `bytes`
 * is not one (no signatures, or a protected header that does not describe these bytes).
 */
export function signedPayloadDigest(bytes: Buffer, algorithm: string): string | undefined {
  // Every manifest fetched comes through here: only one with signatures is parsed.
  if (!bytes.includes('"signatures"')) return undefined;
  let doc: { schemaVersion?: unknown; signatures?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    return undefined;
  }
  if (doc?.schemaVersion !== 1 || !Array.isArray(doc.signatures) || doc.signatures.length === 0) return undefined;
  let cut: { length: number; tail: string } | undefined;
  for (const sig of doc.signatures as Array<{ protected?: unknown }>) {
    const header = protectedHeader(sig?.protected);
    if (!header) return undefined;
    // Every signature must describe the same payload (libtrust refuses a manifest where they differ).
    if (cut && (cut.length !== header.length || cut.tail !== header.tail)) return undefined;
    cut = header;
  }
  if (!cut || cut.length > bytes.length) return undefined;
  const payload = Buffer.concat([bytes.subarray(0, cut.length), Buffer.from(cut.tail, 'base64url')]);
  return `${algorithm}:${createHash(algorithm).update(payload).digest('hex')}`;
}

function protectedHeader(value: unknown): { length: number; tail: string } | undefined {
  if (typeof value !== 'string') return undefined;
  try {
    const h = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as { formatLength?: unknown; formatTail?: unknown };
    if (!Number.isSafeInteger(h.formatLength) || (h.formatLength as number) < 0 || typeof h.formatTail !== 'string') return undefined;
    return { length: h.formatLength as number, tail: h.formatTail };
  } catch {
    return undefined;
  }
}
