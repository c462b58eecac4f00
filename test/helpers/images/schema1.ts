/**
 * A signed Docker schema 1 manifest as libtrust lays it out: a pretty-printed payload whose closing
 * brace is cut off, the `signatures` spliced in, the tail put back; each signature's protected header
 * says where the cut was (`formatLength`) and what was cut (`formatTail`). The signature itself is not
 * real (nothing on the pull path checks it). Its digest is the payload's, as registries name it, so
 * unlike every other Blob here `digest` is not the sha256 of `bytes`.
 */
import { digestOf } from '../digest.js';
import type { Blob } from './blob.js';

export const SCHEMA1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';

export function makeSignedSchema1(opts: { name: string; tag: string; layers: Blob[] }): Blob & { payload: Buffer } {
  const doc = {
    schemaVersion: 1,
    name: opts.name,
    tag: opts.tag,
    architecture: 'amd64',
    fsLayers: opts.layers.map((l) => ({ blobSum: l.digest })),
    history: opts.layers.map((_, i) => ({ v1Compatibility: JSON.stringify({ id: `${i}`.repeat(64).slice(0, 64) }) })),
  };
  const payload = Buffer.from(JSON.stringify(doc, null, 3), 'utf8');
  // libtrust cuts before the final closing brace and its preceding newline.
  const formatLength = payload.lastIndexOf('\n}');
  const tail = payload.subarray(formatLength);
  const protectedHeader = Buffer.from(JSON.stringify({ formatLength, formatTail: tail.toString('base64url'), time: '2016-01-01T00:00:00Z' })).toString('base64url');
  const signatures = `,\n   "signatures": [\n      {\n         "header": {\n            "alg": "ES256"\n         },\n         "signature": "bm90LWEtcmVhbC1zaWduYXR1cmU",\n         "protected": "${protectedHeader}"\n      }\n   ]`;
  const bytes = Buffer.concat([payload.subarray(0, formatLength), Buffer.from(signatures), tail]);
  return { digest: digestOf(payload), size: bytes.length, mediaType: SCHEMA1_SIGNED, bytes, payload };
}
