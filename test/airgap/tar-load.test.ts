/**
 * The tar code loads at first use (airgap/source.ts, export.ts). A stream that fails while it loads
 * must still end as an error of the import or export, never as an error event nobody listens to
 * (which ends the process).
 */
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { writeBundle, type ExportDeps, type ExportPlan } from '../../src/airgap/export.js';
import { BundleError } from '../../src/airgap/layout.js';
import { tarEntries } from '../../src/airgap/source.js';

describe('a stream failing before the tar code has loaded', () => {
  it('the bundle being read: a BundleError naming the cause', async () => {
    const input = new PassThrough();
    const entries = tarEntries(input);
    const first = entries.next();
    input.destroy(Object.assign(new Error('EACCES: permission denied, open bundle.tar'), { code: 'EACCES' }));
    await expect(first).rejects.toThrow(BundleError);
    await expect(first).rejects.toThrow(/EACCES/);
  });

  it('the bundle being written: the export fails with the cause', async () => {
    const out = new Writable({ write: (_c, _e, cb) => cb() });
    const plan: ExportPlan = { images: [], blobs: [], digests: [], bytes: 0 } as unknown as ExportPlan;
    const written = writeBundle(plan, {} as ExportDeps, out);
    out.destroy(new Error('ENOSPC: no space left on device, write'));
    await expect(written).rejects.toThrow(/ENOSPC/);
  });
});
