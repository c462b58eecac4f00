import { describe, expect, it } from 'vitest';
import { signedPayloadDigest } from '../../src/registry/schema1.js';
import { digestOf } from '../helpers/digest.js';
import { makeImage, makeLayer, makeSignedSchema1 } from '../helpers/images.js';

const layer = makeLayer([{ path: 'a', content: 'a' }]);
const signed = makeSignedSchema1({ name: 'library/old', tag: 'latest', layers: [layer] });

/** The signed bytes with the first signature's protected header replaced by `header`. */
const withHeader = (header: unknown) => {
  const doc = JSON.parse(signed.bytes.toString('utf8')) as { signatures: Array<{ protected: string }> };
  const prot = doc.signatures[0]!.protected;
  return Buffer.from(signed.bytes.toString('utf8').replace(prot, Buffer.from(JSON.stringify(header)).toString('base64url')));
};

describe('signedPayloadDigest (schema 1, signed)', () => {
  it('is the digest of the payload the signatures were cut from, not of the bytes', () => {
    expect(signedPayloadDigest(signed.bytes, 'sha256')).toBe(digestOf(signed.payload));
    expect(signedPayloadDigest(signed.bytes, 'sha256')).not.toBe(digestOf(signed.bytes));
    expect(signedPayloadDigest(signed.bytes, 'sha512')).toMatch(/^sha512:[0-9a-f]{128}$/);
  });

  it('is undefined for anything else: other manifests, unsigned schema 1, not JSON', () => {
    expect(signedPayloadDigest(makeImage({ layers: [layer] }).manifest.bytes, 'sha256')).toBeUndefined();
    expect(signedPayloadDigest(signed.payload, 'sha256')).toBeUndefined();
    expect(signedPayloadDigest(Buffer.from('{"schemaVersion":1,"signatures":[]}'), 'sha256')).toBeUndefined();
    expect(signedPayloadDigest(Buffer.from('not json'), 'sha256')).toBeUndefined();
  });

  it('is undefined when a protected header does not describe the bytes or the signatures disagree', () => {
    for (const h of [{ formatLength: 10 ** 9, formatTail: 'fQ' }, { formatLength: -1, formatTail: 'fQ' }, { formatLength: 1.5, formatTail: 'fQ' }, { formatTail: 'fQ' }, { formatLength: 3 }, 'x']) {
      expect(signedPayloadDigest(withHeader(h), 'sha256'), JSON.stringify(h)).toBeUndefined();
    }
    const doc = JSON.parse(signed.bytes.toString('utf8')) as { signatures: Array<{ protected: string }> };
    const other = Buffer.from(JSON.stringify({ formatLength: 5, formatTail: 'fQ' })).toString('base64url');
    const two = { ...doc, signatures: [doc.signatures[0], { ...doc.signatures[0], protected: other }] };
    expect(signedPayloadDigest(Buffer.from(JSON.stringify(two, null, 3)), 'sha256')).toBeUndefined();
  });
});
