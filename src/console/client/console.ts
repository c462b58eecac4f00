/**
 * The console's client (compiled by `npm run build` to dist/console/client/console.js, served as
 * /ui/console.js): keeps the live parts of the server-rendered page current and runs the actions.
 *
 * - Live figures, downloads, prefetch jobs, upstreams and charts come from /admin/live/events
 *   (server-sent events); when the browser has no EventSource or the stream keeps failing, it polls
 *   /admin/live instead.
 * - Pin, unpin and purge call the admin API (/admin/pins, /admin/purge); purge asks first in a modal
 *   <dialog> (keyboard: focus starts on Cancel, Escape cancels). After an action the repositories and
 *   images sections are re-rendered by the server (/ui/fragments/cache).
 * Text from the server is set with textContent (never parsed as HTML) except the fragment, which the
 * server escaped.
 */
export {};

// The JSON shapes of src/console/types.ts (DownloadInfo, UpstreamInfo, LiveSnapshot) as this script
// receives them: declared again because the client compiles on its own (DOM types, no server modules).
// A change there is a change here.
interface Download { digest: string; origin: string; received: number; size: number | undefined }
interface PrefetchImage { image: string; state: string; error?: string }
interface PrefetchJob { id: string; state: string; images: PrefetchImage[]; totalBytes: number; bytes: number }
interface Upstream {
  name: string;
  url: string;
  health: 'up' | 'down' | 'unknown';
  availability: 'online' | 'offline';
  retryAfter: number | undefined;
  rateLimitRemaining: number | undefined;
  rateLimitLimit: number | undefined;
}
interface Chart { d: string }
interface Live {
  at: number;
  figures: { cacheBytes: number; limitBytes: number | undefined; hits: number; misses: number; bytesSaved: number; hitRatio: number | undefined };
  downloads: Download[];
  prefetch: PrefetchJob[];
  upstreams: Upstream[];
  charts: Record<'hitRatio' | 'bytesSaved' | 'cacheBytes', Chart>;
}

// The same rule as src/cli/format.ts formatBytes (the page renders sizes on the server with that one): a
// copy, because this file is served to the browser as one self-contained script with no imports.
const UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
function formatBytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  if (Math.abs(n) < 1024) return `${Math.round(n)} B`;
  let v = n / 1024;
  let i = 0;
  while (Math.abs(Math.round(v * 10) / 10) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${UNITS[i]}`;
}
const percent = (r: number | undefined) => (r === undefined ? '–' : `${(r * 100).toFixed(1)} %`);
const shortDigest = (d: string) => d.replace(/^(sha256:)?(.{12}).*$/, '$2');

/** An element with attributes and children (strings become text nodes: never parsed as HTML). */
function el(tag: string, attrs: Record<string, string> = {}, ...children: Array<Node | string>): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}
const byId = (id: string) => document.getElementById(id);

function setFigure(name: string, text: string): void {
  for (const e of document.querySelectorAll<HTMLElement>(`[data-f="${name}"]`)) e.textContent = text;
}

function progress(max: number, value: number, label: string): HTMLProgressElement {
  const p = document.createElement('progress');
  p.max = max;
  p.value = value;
  p.setAttribute('aria-label', label);
  return p;
}

function renderDownloads(list: Download[]): void {
  const ul = byId('download-list');
  if (!ul) return;
  ul.replaceChildren(
    ...list.map((d) =>
      el(
        'li',
        { 'data-digest': d.digest },
        el('span', { class: 'what' }, el('strong', {}, d.origin), ' ', el('code', {}, shortDigest(d.digest))),
        progress(d.size ?? 1, d.size === undefined ? 0 : d.received, `${d.origin} ${shortDigest(d.digest)}`),
        el('span', { class: 'bytes', 'data-received': String(d.received) }, `${formatBytes(d.received)} of ${formatBytes(d.size)}`),
      ),
    ),
  );
  byId('downloads-empty')?.toggleAttribute('hidden', list.length > 0);
}

function renderPrefetch(jobs: PrefetchJob[]): void {
  const ul = byId('prefetch-list');
  if (!ul) return;
  ul.replaceChildren(
    ...jobs.map((j) =>
      el(
        'li',
        { 'data-job': j.id },
        el('span', { class: 'what' }, el('strong', {}, j.images.map((i) => i.image).join(', ')), ' ', el('span', { class: `badge ${j.state === 'failed' ? 'bad' : j.state === 'done' ? 'good' : ''}` }, j.state)),
        progress(j.totalBytes || 1, j.state === 'done' ? j.totalBytes || 1 : j.bytes, `prefetch ${j.id}`),
        el('span', { class: 'bytes' }, `${formatBytes(j.bytes)} of ${formatBytes(j.totalBytes)}, ${j.images.filter((i) => i.state === 'done').length}/${j.images.length} images`),
        ...j.images.filter((i) => i.error).map((i) => el('span', { class: 'error small' }, `${i.image}: ${i.error ?? ''}`)),
      ),
    ),
  );
  byId('prefetch-empty')?.toggleAttribute('hidden', jobs.length > 0);
}

function renderUpstreams(ups: Upstream[]): void {
  const body = byId('upstream-rows');
  if (!body) return;
  body.replaceChildren(
    ...ups.map((u) => {
      const bad = u.availability === 'offline' || u.health === 'down';
      const state = u.availability === 'offline' ? `offline (probe in ${u.retryAfter ?? '?'} s)` : u.health === 'unknown' ? 'online, not asked yet' : u.health === 'up' ? 'online' : 'failing';
      const limit = u.rateLimitRemaining === undefined ? el('span', { class: 'muted' }, 'not reported') : `${u.rateLimitRemaining}${u.rateLimitLimit !== undefined ? ` of ${u.rateLimitLimit}` : ''} pulls left`;
      return el(
        'tr',
        {},
        el('td', { 'data-label': 'Upstream' }, el('strong', {}, u.name), el('br'), el('span', { class: 'muted small' }, u.url)),
        el('td', { 'data-label': 'State' }, el('span', { class: `badge ${bad ? 'bad' : u.health === 'up' ? 'good' : ''}` }, state)),
        el('td', { 'data-label': 'Rate limit' }, limit),
      );
    }),
  );
}

function apply(live: Live): void {
  const f = live.figures;
  setFigure('cacheBytes', formatBytes(f.cacheBytes));
  setFigure('limitBytes', f.limitBytes === undefined ? 'no limit' : formatBytes(f.limitBytes));
  setFigure('hitRatio', percent(f.hitRatio));
  setFigure('hits', String(f.hits));
  setFigure('misses', String(f.misses));
  setFigure('bytesSaved', formatBytes(f.bytesSaved));
  const use = byId('cache-use') as HTMLProgressElement | null;
  if (use) {
    use.hidden = f.limitBytes === undefined;
    use.max = f.limitBytes ?? 1;
    use.value = f.limitBytes === undefined ? 0 : Math.min(f.cacheBytes, f.limitBytes);
  }
  for (const [name, c] of Object.entries(live.charts)) byId(`chart-${name}`)?.querySelector('.line')?.setAttribute('d', c.d);
  renderUpstreams(live.upstreams);
  renderDownloads(live.downloads);
  renderPrefetch(live.prefetch);
  const updated = byId('updated');
  if (updated) updated.textContent = `as of ${new Date(live.at).toISOString().slice(11, 19)} UTC`;
}

function setState(text: string): void {
  const s = byId('live-state');
  if (s) s.textContent = text;
}

// ---- Live figures: server-sent events, polling when they are not to be had ------------------------

let polling: number | undefined;

async function pollOnce(): Promise<void> {
  try {
    const r = await fetch('/admin/live', { headers: { accept: 'application/json' } });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    apply((await r.json()) as Live);
    if (polling !== undefined) setState('live (polling)');
  } catch {
    setState('disconnected: retrying');
  }
}

function startPolling(): void {
  if (polling !== undefined) return;
  setState('live (polling)');
  void pollOnce();
  polling = window.setInterval(() => void pollOnce(), 2000);
}

function connect(): void {
  if (typeof EventSource === 'undefined') return startPolling();
  const es = new EventSource('/admin/live/events');
  let received = false;
  let failures = 0;
  es.addEventListener('live', (e) => {
    received = true;
    failures = 0;
    setState('live');
    apply(JSON.parse((e as MessageEvent<string>).data) as Live);
  });
  es.addEventListener('error', () => {
    failures++;
    // A stream that never delivered, or keeps dropping (a proxy that buffers or cuts it): poll instead.
    if (es.readyState === EventSource.CLOSED || !received || failures >= 5) {
      es.close();
      startPolling();
    } else setState('reconnecting…');
  });
}

// ---- Actions ------------------------------------------------------------------------------------

function say(text: string, bad = false): void {
  const m = byId('message');
  if (!m) return;
  m.textContent = text;
  m.classList.toggle('bad', bad);
  m.hidden = false;
  m.setAttribute('tabindex', '-1');
  m.focus();
}

async function call(method: string, path: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await fetch(path, { method, headers: { 'content-type': 'application/json', accept: 'application/json' }, body: JSON.stringify(body) });
  const json = (await r.json().catch(() => ({}))) as { errors?: Array<{ message?: string }> } & Record<string, unknown>;
  if (!r.ok) throw new Error(json.errors?.[0]?.message ?? `HTTP ${r.status}`);
  return json;
}

// ---- Filter: rows of the repositories and images tables whose text (or digest) holds the query ----

function applyFilter(): void {
  const q = ((byId('filter') as HTMLInputElement | null)?.value ?? '').trim().toLowerCase();
  for (const tr of document.querySelectorAll<HTMLTableRowElement>('#cache-lists tbody tr')) {
    tr.hidden = q !== '' && !`${tr.textContent ?? ''} ${tr.dataset.ref ?? ''}`.toLowerCase().includes(q);
  }
}

function setUpFilter(): void {
  const input = byId('filter');
  if (!input) return;
  byId('filter-box')!.hidden = false;
  input.addEventListener('input', applyFilter);
  applyFilter();
}

async function refreshLists(): Promise<void> {
  const r = await fetch(`/ui/fragments/cache${location.search}`, { headers: { accept: 'text/html' } });
  if (!r.ok) throw new Error(`HTTP ${r.status}`);
  const lists = byId('cache-lists');
  // The server escaped every value in this fragment (as in the page itself).
  if (lists) lists.innerHTML = await r.text();
  applyFilter();
  if (polling !== undefined) await pollOnce();
}

/** Asks in the modal dialog; resolves true for the confirming button. */
function confirmDialog(title: string, text: string, ok: string): Promise<boolean> {
  const dialog = byId('confirm') as HTMLDialogElement | null;
  if (!dialog || typeof dialog.showModal !== 'function') return Promise.resolve(window.confirm(text));
  byId('confirm-title')!.textContent = title;
  byId('confirm-text')!.textContent = text;
  byId('confirm-ok')!.textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

async function act(button: HTMLButtonElement): Promise<void> {
  const d = button.dataset;
  const label = d.label ?? '';
  if (d.action === 'pin') {
    await call('POST', '/admin/pins', { pattern: d.pattern });
    await refreshLists();
    say(`Pinned ${label}: it is never evicted.`);
  } else if (d.action === 'unpin') {
    const patterns = JSON.parse(d.patterns ?? '[]') as string[];
    let pins: string[] = [];
    for (const pattern of patterns) pins = (await call('DELETE', '/admin/pins', { pattern })).pins as string[];
    await refreshLists();
    const kept = patterns.filter((p) => pins.includes(p));
    say(kept.length > 0 ? `${label} stays pinned by the configuration (cache.pin: ${kept.join(', ')}).` : `Unpinned ${label}.`, kept.length > 0);
  } else if (d.action === 'purge') {
    const ok = await confirmDialog('Purge image?', `Remove ${label} (${shortDigest(d.digest ?? '')}) from the cache? Layers no other image uses are deleted; the next pull fetches them again.`, 'Purge');
    if (!ok) {
      button.focus();
      return;
    }
    const r = await call('POST', '/admin/purge', { repository: d.repository, digest: d.digest });
    await refreshLists();
    say(`Purged ${label}: ${String(r.blobs)} blobs, ${formatBytes(r.bytes as number)} freed.`);
  }
}

document.addEventListener('click', (e) => {
  const button = (e.target as Element | null)?.closest<HTMLButtonElement>('button[data-action]');
  if (!button || button.disabled) return;
  button.disabled = true;
  act(button)
    .catch((err: unknown) => say(`${button.dataset.action ?? 'Action'} failed: ${err instanceof Error ? err.message : String(err)}`, true))
    .finally(() => {
      if (button.isConnected) button.disabled = false;
    });
});

setUpFilter();
connect();
