'use strict';
/**
 * The download thread, started by offload/download-thread.ts. It makes blob GETs with its own
 * HTTP/1.1 client (http1.cjs) and writes a 200/206 body straight into the download's temp file,
 * hashing it on the way, so a cold download's bytes never cross the main thread: its socket reads,
 * the hash and the writes cost the event loop nothing (bench/RESULTS.md, workload 5). The main
 * thread keeps every decision (auth, redirects, statuses, resumes, verification); this file only
 * moves bytes.
 *
 * Plain JavaScript, not TypeScript: a worker needs a file Node runs as is, also under the tests.
 *
 * Messages in (from download-thread.ts):
 *   {op:'sink', sid, fd, position, algorithm} a temp file open for writing at `position` (hashing starts there)
 *   {op:'get', rid, sid, origin, path, headers, headersTimeout, bodyTimeout}
 *   {op:'go', rid, skip, at, limit}          write the parked 200/206 body into its sink (at `at`), less `skip`
 *                                            bytes, none past file position `limit` (if set: the request
 *                                            fails with code REGMIRROR_SINK_LIMIT instead)
 *   {op:'cancel', rid}                       abort the request
 *   {op:'close', sid}                        the sink is done: report its bytes and digest, forget it
 * Messages out:
 *   {op:'head', rid, status, headers, text}  the answer (a non-2xx body, up to 64 KiB, in `text`)
 *   {op:'progress', sid, position}           bytes [0, position) of the file are written
 *   {op:'end', rid}                          the body is complete and written
 *   {op:'error', rid, error}                 the request failed ({name, code, message})
 *   {op:'closed', sid, position, hex}
 */
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { writeSync } = require('node:fs');
const { Http1Client } = require('./http1.cjs');

/**
 * Bytes gathered before one write: fewer syscalls than one per socket read when reads are small (a
 * slow upstream, TLS records of 16 KiB). A read at least this large is written as it is.
 */
const BATCH = 512 * 1024;
/**
 * Progress is told at most once per this many bytes while data keeps coming (each message costs
 * both threads; 1,000 of them were 6 % of the worker's time on a cold 256 MiB pull), and always
 * when the timer writes a partial batch, at a body's end, and before a failure is reported.
 */
const PROGRESS_EVERY = 2 * 1024 * 1024;
/** A partial batch is written after this long, so readers at the live edge of a slow download see it. */
const BATCH_DELAY_MS = 10;
const MAX_ERROR_BODY = 64 * 1024;

// Reads go into the client's one buffer and batches into one per sink: a body allocates nothing per
// read (undici's fresh 64 KiB buffers grew this thread's malloc arena until V8 collected them, and
// forced young collections every 4 MiB kept it small; none are needed now).
/**
 * BATCH-sized buffers no sink or parked request holds, for the next one. A fresh buffer per download
 * (and a copy of the bytes that came with a parked head) is garbage this thread's isolate only
 * collects once ~64 MiB of it has gathered: little else allocates here, so nothing else triggers a
 * collection. Under 500 clients with cold ~100 KiB blobs, that was 65 MiB of the process's peak
 * (heaptrack). Taken and given back synchronously, around writeSync: no write still reads one.
 */
const spare = [];
/** Spares kept: more concurrent downloads than this allocate, and their extra buffers are let go. */
const MAX_SPARE = 16;
const takeBuffer = () => spare.pop() ?? Buffer.allocUnsafe(BATCH);
const giveBack = (buf) => {
  if (buf.length === BATCH && spare.length < MAX_SPARE) spare.push(buf);
};
const client = new Http1Client({ connectTimeout: workerData.agent.connect.timeout, keepAliveTimeout: workerData.agent.keepAliveTimeout, connections: workerData.agent.connections });
/**
 * sid -> { fd, position (written), told (position last told), hash, batch (a Buffer of BATCH, taken
 * from the spares at the first small read and given back at the body's end or the sink's close),
 * batchBytes, timer, broken }
 */
const sinks = new Map();
/**
 * rid -> { sid, controller, phase, queued (BATCH buffers holding what came with a parked head),
 * queuedFill (bytes in the last one), ended, skip, limit (no byte goes past this file position;
 * undefined: none), captured, capturedBytes, cancelled }
 */
const requests = new Map();

parentPort.on('message', (m) => {
  switch (m.op) {
    case 'sink':
      sinks.set(m.sid, { fd: m.fd, position: m.position, hash: createHash(m.algorithm), batch: undefined, batchBytes: 0, timer: undefined, broken: false, told: m.position });
      break;
    case 'get':
      get(m);
      break;
    case 'go':
      go(m.rid, m.skip, m.at, m.limit);
      break;
    case 'cancel':
      cancel(m.rid);
      break;
    case 'close':
      close(m.sid);
      break;
  }
});

function get(m) {
  const st = { sid: m.sid, controller: undefined, phase: 'head', queued: [], queuedFill: 0, ended: false, skip: 0, limit: undefined, captured: [], capturedBytes: 0, cancelled: false };
  requests.set(m.rid, st);
  const opts = { origin: m.origin, path: m.path, method: 'GET', headers: m.headers, headersTimeout: m.headersTimeout, bodyTimeout: m.bodyTimeout };
  try {
    client.dispatch(opts, handler(m.rid, st));
  } catch (e) {
    fail(m.rid, st, e);
  }
}

function handler(rid, st) {
  return {
    onRequestStart(controller) {
      st.controller = controller;
      if (st.cancelled) controller.abort(new Error('cancelled'));
    },
    onResponseStart(controller, status, headers) {
      if (st.cancelled) return;
      st.status = status;
      st.headers = headers;
      if (status === 200 || status === 206) {
        // Parked until the main thread has checked the answer (Content-Range, size) and says go.
        st.phase = 'parked';
        controller.pause();
        post({ op: 'head', rid, status, headers: plain(headers), text: '' });
      } else {
        st.phase = 'capture';
      }
    },
    // `chunk` is a view of the client's read buffer, valid during this call only: what is kept is copied.
    onResponseData(controller, chunk) {
      if (st.cancelled) return;
      if (st.phase === 'parked') park(st, chunk);
      else if (st.phase === 'writing') take(rid, st, chunk);
      else if (st.phase === 'capture') {
        if (st.capturedBytes + chunk.length > MAX_ERROR_BODY) {
          st.captured.push(Buffer.from(chunk.subarray(0, MAX_ERROR_BODY - st.capturedBytes)));
          answer(rid, st);
          controller.abort(new Error('error body too long'));
          return;
        }
        st.captured.push(Buffer.from(chunk));
        st.capturedBytes += chunk.length;
      }
    },
    onResponseEnd() {
      if (st.cancelled) return;
      if (st.phase === 'capture') answer(rid, st);
      else if (st.phase === 'parked') st.ended = true;
      else if (st.phase === 'writing') finish(rid, st);
    },
    onResponseError(_controller, err) {
      if (st.cancelled || st.phase === 'done') return;
      // Bytes received before the cut are good: they reach the file, so a Range resume continues
      // the file and the hash exactly where the main thread's count says.
      if (st.phase === 'writing' && !flush(rid, st, sinks.get(st.sid))) return;
      fail(rid, st, err);
    },
  };
}

/** A non-2xx answer with what its body said; the request is over. */
function answer(rid, st) {
  st.phase = 'done';
  requests.delete(rid);
  post({ op: 'head', rid, status: st.status, headers: plain(st.headers), text: Buffer.concat(st.captured).toString('utf8') });
}

function go(rid, skip, at, limit) {
  const st = requests.get(rid);
  if (!st || st.phase !== 'parked') return;
  const sink = sinks.get(st.sid);
  if (!sink || sink.position !== at) {
    // The main thread counts bytes the file does not hold, or the other way round: never guess.
    fail(rid, st, new Error(`the download thread's file is at ${sink?.position}, not at ${at}`));
    st.controller?.abort(new Error('position mismatch'));
    return;
  }
  st.phase = 'writing';
  st.skip = skip;
  st.limit = limit;
  const queued = st.queued;
  st.queued = [];
  for (const [i, buf] of queued.entries()) {
    // take() has written or copied the bytes when it returns.
    if (st.phase === 'writing') take(rid, st, i === queued.length - 1 ? buf.subarray(0, st.queuedFill) : buf);
    giveBack(buf);
  }
  if (st.phase !== 'writing') return;
  if (st.ended) finish(rid, st);
  else st.controller.resume();
}

/**
 * Keeps a copy of `chunk` (a view of the read buffer) while the head waits for the main thread's go:
 * in spare batch buffers while there are any, else in a copy of its own size (a small body must not
 * cost a fresh 512 KiB when more downloads than MAX_SPARE park at once); only the former go back.
 */
function park(st, chunk) {
  let c = chunk;
  while (c.length > 0) {
    const last = st.queued[st.queued.length - 1];
    if (last === undefined || st.queuedFill === last.length) {
      const buf = spare.pop();
      if (!buf) {
        st.queued.push(Buffer.from(c));
        st.queuedFill = c.length;
        return;
      }
      st.queued.push(buf);
      st.queuedFill = 0;
      continue;
    }
    const n = c.copy(last, st.queuedFill);
    st.queuedFill += n;
    c = c.subarray(n);
  }
}

/** Gives back a sink's batch buffer (its bytes written, or no longer wanted). */
function dropBatch(sink) {
  if (sink.batch) giveBack(sink.batch);
  sink.batch = undefined;
}

/** Gives back the buffers of a request that ends parked (cancelled, closed, failed). */
function dropQueued(st) {
  for (const buf of st.queued) giveBack(buf);
  st.queued = [];
}

/**
 * One chunk of a 2xx body: hashed now (while it is in the CPU cache), then written: copied into the
 * sink's batch, or, when it is large and nothing is batched, written as it is. Either way nothing
 * refers to `chunk` after this returns (it may be the client's read buffer).
 */
function take(rid, st, chunk) {
  let c = chunk;
  if (st.skip > 0) {
    const n = Math.min(st.skip, c.length);
    st.skip -= n;
    c = c.subarray(n);
    if (c.length === 0) return;
  }
  const sink = sinks.get(st.sid);
  if (!sink) {
    fail(rid, st, new Error('the sink was closed'));
    st.controller?.abort(new Error('sink closed'));
    return;
  }
  if (st.limit !== undefined && sink.position + sink.batchBytes + c.length > st.limit) {
    // A body going on past the blob's size or the size cap (SINK_LIMIT_CODE, upstream/errors.ts):
    // nothing past it is written; the main thread decides what that means.
    const e = Object.assign(new Error(`the body passed the limit of ${st.limit} bytes`), { code: 'REGMIRROR_SINK_LIMIT' });
    fail(rid, st, e);
    st.controller?.abort(e);
    return;
  }
  sink.hash.update(c);
  if (sink.batchBytes === 0 && c.length >= BATCH) {
    if (!writeAll(rid, st, sink, c)) return;
    if (sink.position - sink.told >= PROGRESS_EVERY) progress(st.sid, sink);
  } else {
    sink.batch ??= takeBuffer();
    while (c.length > 0) {
      const n = c.copy(sink.batch, sink.batchBytes);
      sink.batchBytes += n;
      c = c.subarray(n);
      if (sink.batchBytes === BATCH && !flush(rid, st, sink, false)) return;
    }
  }
  if (sink.timer === undefined && (sink.batchBytes > 0 || sink.position > sink.told)) {
    sink.timer = setTimeout(() => {
      sink.timer = undefined;
      if (st.phase === 'writing') flush(rid, st, sink);
    }, BATCH_DELAY_MS);
  }
}

/**
 * Writes the sink's batch and tells the main thread (unless `tell` is false and less than
 * PROGRESS_EVERY is untold); false (and the request failed) when the write failed, e.g. ENOSPC.
 */
function flush(rid, st, sink, tell = true) {
  if (!sink) {
    fail(rid, st, new Error('the sink was closed'));
    st.controller?.abort(new Error('sink closed'));
    return false;
  }
  if (sink.timer !== undefined) {
    clearTimeout(sink.timer);
    sink.timer = undefined;
  }
  if (sink.batchBytes === 0) {
    if (tell) progress(st.sid, sink);
    return true;
  }
  const total = sink.batchBytes;
  sink.batchBytes = 0;
  if (!writeAll(rid, st, sink, sink.batch.subarray(0, total))) return false;
  if (tell || sink.position - sink.told >= PROGRESS_EVERY) progress(st.sid, sink);
  return true;
}

/** Writes `bytes` at the sink's position and moves it on; false (and the request failed) when the write failed. */
function writeAll(rid, st, sink, bytes) {
  try {
    let done = 0;
    while (done < bytes.length) done += writeSync(sink.fd, bytes, done, bytes.length - done, sink.position + done);
  } catch (e) {
    sink.broken = true;
    // What earlier writes put in the file is told first: a resume then continues exactly there.
    progress(st.sid, sink);
    // What reached the file before the failure is not known exactly: the main thread re-reads
    // [0, position) and hashes it itself before anything else is decided (fill.ts, spill).
    fail(rid, st, e);
    st.controller?.abort(e);
    return false;
  }
  sink.position += bytes.length;
  return true;
}

function progress(sid, sink) {
  if (sink.position === sink.told) return;
  sink.told = sink.position;
  post({ op: 'progress', sid, position: sink.position });
}

function finish(rid, st) {
  const sink = sinks.get(st.sid);
  if (!flush(rid, st, sink)) return;
  // Empty now; a later request on this sink (a resume) takes one again.
  dropBatch(sink);
  st.phase = 'done';
  requests.delete(rid);
  post({ op: 'end', rid });
}

function cancel(rid) {
  const st = requests.get(rid);
  if (!st) return;
  // Batched bytes are written first: the file and the hash stay in step for a resume.
  if (st.phase === 'writing') flush(rid, st, sinks.get(st.sid));
  st.cancelled = true;
  dropQueued(st);
  requests.delete(rid);
  st.controller?.abort(new Error('cancelled'));
}

function close(sid) {
  const sink = sinks.get(sid);
  if (!sink) return;
  // Nothing may write into the file after this (its descriptor is closed next, and reused).
  for (const [rid, st] of requests) {
    if (st.sid !== sid) continue;
    st.cancelled = true;
    dropQueued(st);
    requests.delete(rid);
    st.controller?.abort(new Error('sink closed'));
  }
  if (sink.timer !== undefined) clearTimeout(sink.timer);
  sinks.delete(sid);
  // After a failed write the hash covers bytes the file may not hold: no digest then.
  post({ op: 'closed', sid, position: sink.position, hex: sink.broken || sink.batchBytes > 0 ? undefined : sink.hash.digest('hex') });
  dropBatch(sink);
}

function fail(rid, st, e) {
  st.phase = 'done';
  dropQueued(st);
  requests.delete(rid);
  post({ op: 'error', rid, error: { name: e?.name ?? 'Error', code: typeof e?.code === 'string' ? e.code : undefined, message: String(e?.message ?? e) } });
}

/** The answer's headers as plain data for postMessage. */
function plain(headers) {
  const out = {};
  for (const [k, v] of Object.entries(headers ?? {})) out[k] = Array.isArray(v) ? v.map(String) : String(v);
  return out;
}

function post(m) {
  parentPort.postMessage(m);
}
