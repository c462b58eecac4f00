import { describe, expect, it } from 'vitest';
import { digestOf } from '../helpers/digest.js';
import { AcceptParser, accepts, ALL_MANIFEST_TYPES, MediaTypes, parseAccept, parseManifest, upstreamAccept } from '../../src/registry/media-types.js';

const sha = (s: string) => digestOf(s);
const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));

describe('AcceptParser', () => {
  it('parses as parseAccept does, and hands the same set back for a header seen before', () => {
    const p = new AcceptParser();
    const header = `${MediaTypes.ociIndex}, ${MediaTypes.dockerManifest};q=0.5`;
    const first = p.parse(header);
    expect(first).toEqual(parseAccept(header));
    expect(p.parse(header)).toBe(first);
    expect(p.parse('*/*')).toBeUndefined();
    expect(p.parse('*/*')).toBeUndefined();
    expect(p.parse(undefined)).toBeUndefined();
  });

  it('is bounded: past `max` distinct headers it starts over, and a long header is parsed each time', () => {
    const p = new AcceptParser(3);
    const sets = ['a/1', 'a/2', 'a/3'].map((h) => p.parse(h));
    expect(p.parse('a/1')).toBe(sets[0]);
    expect(p.parse('a/4')).toEqual(new Set(['a/4'])); // the fourth: the memory starts over
    const again = p.parse('a/1');
    expect(again).toEqual(sets[0]);
    expect(again).not.toBe(sets[0]);
    const long = `${'x/y, '.repeat(300)}a/b`;
    expect(p.parse(long)).toEqual(new Set(['x/y', 'a/b']));
    expect(p.parse(long)).not.toBe(p.parse(long));
  });
});

describe('parseAccept', () => {
  it('no header means anything', () => {
    expect(parseAccept(undefined)).toBeUndefined();
    expect(parseAccept('')).toBeUndefined();
  });

  it('a wildcard anywhere means anything', () => {
    expect(parseAccept('*/*')).toBeUndefined();
    expect(parseAccept('application/*')).toBeUndefined();
    expect(parseAccept(`${MediaTypes.ociManifest}, */*;q=0.1`)).toBeUndefined();
  });

  it('collects several values, from one header or joined ones, dropping parameters', () => {
    const a = parseAccept(`${MediaTypes.ociIndex};q=1.0, ${MediaTypes.dockerManifest} ; q=0.5,${MediaTypes.ociManifest}`);
    expect(a).toEqual(new Set([MediaTypes.ociIndex, MediaTypes.dockerManifest, MediaTypes.ociManifest]));
  });

  it('lower-cases media types and ignores empty items', () => {
    expect(parseAccept('Application/VND.OCI.Image.Manifest.v1+JSON, ,')).toEqual(new Set([MediaTypes.ociManifest]));
    expect(parseAccept(' , ; q=1')).toBeUndefined();
  });

  it('accepts() and upstreamAccept() follow the parsed set', () => {
    const only = parseAccept(MediaTypes.dockerManifest);
    expect(accepts(only, MediaTypes.dockerManifest)).toBe(true);
    expect(accepts(only, MediaTypes.ociIndex)).toBe(false);
    expect(accepts(undefined, MediaTypes.ociIndex)).toBe(true);
    expect(upstreamAccept(only)).toEqual([MediaTypes.dockerManifest]);
    expect(upstreamAccept(undefined)).toEqual(ALL_MANIFEST_TYPES);
    expect(ALL_MANIFEST_TYPES).toEqual(expect.arrayContaining([MediaTypes.ociIndex, MediaTypes.ociManifest, MediaTypes.dockerList, MediaTypes.dockerManifest]));
  });
});

describe('parseManifest', () => {
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha('config'), size: 100 };
  const layers = [
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('l1'), size: 10 },
    { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('l2'), size: 20 },
  ];

  it('an image manifest references its config and layers, in order', () => {
    const m = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers };
    expect(parseManifest(bytes(m))).toEqual({ mediaType: MediaTypes.ociManifest, references: [sha('config'), sha('l1'), sha('l2')], vouched: [sha('config'), sha('l1'), sha('l2')], children: [] });
  });

  it('an index references its child manifests', () => {
    const m = {
      schemaVersion: 2,
      mediaType: MediaTypes.dockerList,
      manifests: [
        { mediaType: MediaTypes.dockerManifest, digest: sha('amd64'), size: 1, platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: MediaTypes.dockerManifest, digest: sha('arm64'), size: 1, platform: { architecture: 'arm64', os: 'linux' } },
      ],
    };
    expect(parseManifest(bytes(m))).toEqual({
      mediaType: MediaTypes.dockerList,
      references: [sha('amd64'), sha('arm64')],
      // A registry may take a sparse index: its children are not vouched to be in the repository.
      vouched: [],
      children: [
        { digest: sha('amd64'), mediaType: MediaTypes.dockerManifest },
        { digest: sha('arm64'), mediaType: MediaTypes.dockerManifest },
      ],
    });
  });

  it('a child whose descriptor has no plausible media type is referenced but not recorded as a manifest', () => {
    const m = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [{ digest: sha('a'), mediaType: '../../etc' }, { digest: sha('b') }] };
    expect(parseManifest(bytes(m))).toMatchObject({ references: [sha('a'), sha('b')], children: [] });
  });

  it('a foreign or non-distributable layer is referenced but not vouched for (a registry never checks it is there)', () => {
    const foreign = { mediaType: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', digest: sha('f1'), size: 1, urls: ['https://example.com/f1'] };
    const withUrls = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha('f2'), size: 1, urls: ['https://example.com/f2'] };
    const nondist = { mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', digest: sha('f3'), size: 1 };
    const m = { schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config, layers: [layers[0], foreign, withUrls, nondist] };
    expect(parseManifest(bytes(m))).toMatchObject({ references: [sha('config'), sha('l1'), sha('f1'), sha('f2'), sha('f3')], vouched: [sha('config'), sha('l1')] });
  });

  it('the declared mediaType wins over the Content-Type', () => {
    const m = { schemaVersion: 2, mediaType: MediaTypes.dockerManifest, config, layers: [] };
    expect(parseManifest(bytes(m), MediaTypes.ociManifest)!.mediaType).toBe(MediaTypes.dockerManifest);
  });

  it('infers the media type from the shape when mediaType is absent', () => {
    expect(parseManifest(bytes({ schemaVersion: 2, manifests: [{ digest: sha('x') }] }))).toEqual({ mediaType: MediaTypes.ociIndex, references: [sha('x')], vouched: [], children: [] });
    expect(parseManifest(bytes({ schemaVersion: 2, config, layers }))!.mediaType).toBe(MediaTypes.ociManifest);
    // An empty index is still an index.
    expect(parseManifest(bytes({ schemaVersion: 2, manifests: [] }))).toEqual({ mediaType: MediaTypes.ociIndex, references: [], vouched: [], children: [] });
  });

  it('schema 1 manifests reference their fsLayers and are signed unless the Content-Type says otherwise', () => {
    const v1 = { schemaVersion: 1, name: 'library/alpine', tag: 'old', fsLayers: [{ blobSum: sha('a') }, { blobSum: sha('b') }] };
    expect(parseManifest(bytes(v1))).toEqual({ mediaType: MediaTypes.dockerV1Signed, references: [sha('a'), sha('b')], vouched: [sha('a'), sha('b')], children: [] });
    expect(parseManifest(bytes(v1), MediaTypes.dockerV1)!.mediaType).toBe(MediaTypes.dockerV1);
  });

  it('falls back to the Content-Type, then to application/octet-stream', () => {
    expect(parseManifest(bytes({ schemaVersion: 2 }), 'application/vnd.example+json')!.mediaType).toBe('application/vnd.example+json');
    expect(parseManifest(bytes({ schemaVersion: 2 }))!.mediaType).toBe('application/octet-stream');
  });

  it('drops references that are not digests', () => {
    const m = {
      mediaType: MediaTypes.ociManifest,
      config: { digest: 'not-a-digest' },
      layers: [{ digest: sha('ok') }, { digest: 42 }, null, {}, { digest: '../../etc/passwd' }],
    };
    expect(parseManifest(bytes(m))!.references).toEqual([sha('ok')]);
  });

  it('ignores layers and manifests that are not lists', () => {
    const m = { mediaType: MediaTypes.ociManifest, config, layers: 'nope', manifests: { digest: sha('x') } };
    expect(parseManifest(bytes(m))!.references).toEqual([sha('config')]);
  });

  it('non-JSON, and JSON that is not an object, are undefined', () => {
    expect(parseManifest(Buffer.from('not json at all'))).toBeUndefined();
    expect(parseManifest(Buffer.from('{"truncated": '))).toBeUndefined();
    expect(parseManifest(Buffer.from(''))).toBeUndefined();
    expect(parseManifest(Buffer.from('null'))).toBeUndefined();
    expect(parseManifest(Buffer.from('42'))).toBeUndefined();
    expect(parseManifest(Buffer.from('"a string"'))).toBeUndefined();
  });

  it('accepts a Uint8Array as well as a Buffer', () => {
    const m = { schemaVersion: 2, mediaType: MediaTypes.ociManifest, config, layers };
    expect(parseManifest(new Uint8Array(bytes(m)))!.references).toHaveLength(3);
  });
});
