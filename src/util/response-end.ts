/**
 * How a body that writes itself into a response ends (storage's FileBody, transfer's
 * DownloadReader): `out` is ended when all went well and destroyed on a failure, so the client sees
 * a cut transfer rather than a short body; a response that closes first ends the body, also one that
 * closed before the body began (the client left during the lookup: its 'close' has passed). It
 * settles once, and `done` runs once, at that moment.
 */
import type { Writable } from 'node:stream';

export interface ResponseEnd {
  /** Whether it has settled: nothing more may be written. */
  readonly over: boolean;
  /** Ends `out` (no error) or destroys it (an error); later calls do nothing. */
  readonly settle: (err?: Error) => void;
}

export function watchResponse(out: Writable, done: () => void): ResponseEnd {
  let over = false;
  const settle = (err?: Error) => {
    if (over) return;
    over = true;
    out.off('close', early);
    if (err) out.destroy(err);
    else out.end();
    done();
  };
  const early = () => settle(new Error('the response closed before the body was written'));
  if (out.destroyed || out.writableEnded) early();
  else out.once('close', early);
  return {
    get over() {
      return over;
    },
    settle,
  };
}
