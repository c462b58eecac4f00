/**
 * The console page, rendered on the server: complete and readable without JavaScript; the client
 * (client/console.ts) then keeps the live parts current and runs the actions. Every outside value
 * is escaped (html.ts). Elements the client updates carry ids or `data-f` (figure) attributes.
 */
import { formatAgo, formatBytes } from '../cli/format.js';
import { pinMatches } from '../lifecycle/pins.js';
import type { CacheSummary, ImageInfo, RepositoryInfo } from '../lifecycle/types.js';
import type { PrefetchSnapshot } from '../airgap/prefetch.js';
import { CHART_H, CHART_W, type Chart } from './chart.js';
import { html, type Html } from './html.js';
import type { DownloadInfo, LiveSnapshot, UpstreamInfo } from './types.js';

export const percent = (r: number | undefined): string => (r === undefined ? '–' : `${(r * 100).toFixed(1)} %`);
const shortDigest = (d: string): string => d.replace(/^(sha256:)?(.{12}).*$/, '$2');

function chartSvg(id: string, label: string, c: Chart): Html {
  return html`<svg class="chart" id="chart-${id}" viewBox="0 0 ${CHART_W} ${CHART_H}" preserveAspectRatio="none" role="img" aria-label="${label}"><path class="grid" d="M0 ${CHART_H - 0.5}H${CHART_W}"/><path class="line" d="${c.d}"/></svg>`;
}

function figures(live: LiveSnapshot, summary: CacheSummary): Html {
  const f = live.figures;
  const limit = f.limitBytes;
  return html`<section aria-labelledby="h-figures">
  <h2 id="h-figures">Cache</h2>
  <div class="cards">
    <div class="card">
      <h3>Cache use</h3>
      <p class="big"><span data-f="cacheBytes">${formatBytes(f.cacheBytes)}</span> <span class="muted">of <span data-f="limitBytes">${limit === undefined ? 'no limit' : formatBytes(limit)}</span></span></p>
      <progress id="cache-use" max="${limit ?? 1}" value="${limit === undefined ? 0 : Math.min(f.cacheBytes, limit)}" aria-label="cache use against its limit"${limit === undefined ? html` hidden` : ''}></progress>
      ${chartSvg('cacheBytes', 'cache use over time', live.charts.cacheBytes)}
      <p class="muted small">Free disk ${formatBytes(summary.freeBytes)}, ${summary.minFreeBytes === undefined ? 'no floor kept' : `floor ${formatBytes(summary.minFreeBytes)}`}</p>
    </div>
    <div class="card">
      <h3>Hit ratio</h3>
      <p class="big" data-f="hitRatio">${percent(f.hitRatio)}</p>
      ${chartSvg('hitRatio', 'hit ratio over time', live.charts.hitRatio)}
      <p class="muted small"><span data-f="hits">${f.hits}</span> hits, <span data-f="misses">${f.misses}</span> misses since start</p>
    </div>
    <div class="card">
      <h3>Bytes saved</h3>
      <p class="big" data-f="bytesSaved">${formatBytes(f.bytesSaved)}</p>
      ${chartSvg('bytesSaved', 'bytes saved over time', live.charts.bytesSaved)}
      <p class="muted small">served from the cache since start</p>
    </div>
  </div>
</section>`;
}

export function upstreamRows(ups: UpstreamInfo[]): Html {
  return html`${ups.map(
    (u) => html`<tr>
      <td data-label="Upstream"><strong>${u.name}</strong><br><span class="muted small">${u.url}</span></td>
      <td data-label="State"><span class="badge ${u.availability === 'offline' || u.health === 'down' ? 'bad' : u.health === 'up' ? 'good' : ''}">${u.availability === 'offline' ? `offline (probe in ${u.retryAfter ?? '?'} s)` : u.health === 'unknown' ? 'online, not asked yet' : u.health === 'up' ? 'online' : 'failing'}</span></td>
      <td data-label="Rate limit">${u.rateLimitRemaining === undefined ? html`<span class="muted">not reported</span>` : `${u.rateLimitRemaining}${u.rateLimitLimit !== undefined ? ` of ${u.rateLimitLimit}` : ''} pulls left`}</td>
    </tr>`,
  )}`;
}

export function downloadItems(dls: DownloadInfo[]): Html {
  return html`${dls.map(
    (d) => html`<li data-digest="${d.digest}">
      <span class="what"><strong>${d.origin}</strong> <code>${shortDigest(d.digest)}</code></span>
      <progress max="${d.size ?? 1}" value="${d.size === undefined ? 0 : d.received}" aria-label="${d.origin} ${shortDigest(d.digest)}"></progress>
      <span class="bytes" data-received="${d.received}">${formatBytes(d.received)} of ${formatBytes(d.size)}</span>
    </li>`,
  )}`;
}

export function prefetchItems(jobs: PrefetchSnapshot[]): Html {
  return html`${jobs.map(
    (j) => html`<li data-job="${j.id}">
      <span class="what"><strong>${j.images.map((i) => i.image).join(', ')}</strong> <span class="badge ${j.state === 'failed' ? 'bad' : j.state === 'done' ? 'good' : ''}">${j.state}</span></span>
      <progress max="${j.totalBytes || 1}" value="${j.state === 'done' ? j.totalBytes || 1 : j.bytes}" aria-label="prefetch ${j.id}"></progress>
      <span class="bytes">${formatBytes(j.bytes)} of ${formatBytes(j.totalBytes)}, ${j.images.filter((i) => i.state === 'done').length}/${j.images.length} images</span>
      ${j.images.filter((i) => i.error).map((i) => html`<span class="error small">${i.image}: ${i.error}</span>`)}
    </li>`,
  )}`;
}

function repositoryRows(repos: RepositoryInfo[], now: number): Html {
  return html`${repos.map(
    (r) => html`<tr>
      <td data-label="Repository"><a href="/ui?repository=${encodeURIComponent(r.name)}#images">${r.name}</a></td>
      <td data-label="Images">${r.images}</td>
      <td data-label="Tags">${r.tags.join(', ') || html`<span class="muted">none</span>`}</td>
      <td data-label="Size">${formatBytes(r.bytes)}</td>
      <td data-label="Last pulled">${formatAgo(r.lastUsed, now)}</td>
      <td data-label="Pinned">${r.pinned ? html`<span class="badge pin">pinned</span>` : 'no'}</td>
    </tr>`,
  )}`;
}

function imageRows(images: ImageInfo[], pins: string[], now: number): Html {
  return html`${images.map((i) => {
    const name = `${i.upstream}/${i.repo}`;
    const label = i.tags.length > 0 ? `${name}:${i.tags[0]}` : `${name}@${shortDigest(i.digest)}`;
    const matching = pins.filter((p) => pinMatches(p, i));
    return html`<tr data-ref="${i.ref}">
      <td data-label="Image"><strong>${name}</strong><br>${i.tags.map((t) => html`<span class="tag">${t}</span> `)}</td>
      <td data-label="Digest"><code title="${i.digest}">${shortDigest(i.digest)}</code></td>
      <td data-label="Platforms">${i.platforms.join(', ') || html`<span class="muted">single</span>`}</td>
      <td data-label="Size" class="size">${formatBytes(i.bytes)}</td>
      <td data-label="Last pulled">${formatAgo(i.lastUsed, now)}</td>
      <td data-label="Pinned" class="pinned">${i.pinned ? html`<span class="badge pin">pinned</span>` : 'no'}</td>
      <td data-label="Actions" class="actions">
        ${i.pinned
          ? html`<button type="button" data-action="unpin" data-patterns="${JSON.stringify(matching)}" data-label="${label}">Unpin</button>`
          : html`<button type="button" data-action="pin" data-pattern="${i.ref}" data-label="${label}">Pin</button>`}
        <button type="button" class="danger" data-action="purge" data-repository="${name}" data-digest="${i.digest}" data-label="${label}">Purge</button>
      </td>
    </tr>`;
  })}`;
}

/** The repositories and images sections: the page's part that GET /ui/fragments/cache re-renders after an action. */
export function cacheLists(summary: CacheSummary, repos: RepositoryInfo[], images: ImageInfo[], repository: string | undefined, now: number): Html {
  return html`<section aria-labelledby="h-repos" id="repositories">
  <h2 id="h-repos">Repositories <span class="muted small" id="counts">${summary.images} images in ${summary.repositories} repositories, ${summary.blobs} blobs</span></h2>
  ${repos.length === 0
    ? html`<p class="empty">Nothing cached yet.</p>`
    : html`<div class="scroll"><table class="stack"><thead><tr><th scope="col">Repository</th><th scope="col">Images</th><th scope="col">Tags</th><th scope="col">Size</th><th scope="col">Last pulled</th><th scope="col">Pinned</th></tr></thead>
  <tbody>${repositoryRows(repos, now)}</tbody></table></div>`}
</section>
<section aria-labelledby="h-images" id="images">
  <h2 id="h-images">Images${repository !== undefined ? html` of ${repository} <a class="small" href="/ui#images">show all</a>` : ''}</h2>
  ${images.length === 0
    ? html`<p class="empty">No images${repository !== undefined ? ' in this repository' : ''}.</p>`
    : html`<div class="scroll"><table class="stack" id="image-table"><thead><tr><th scope="col">Image</th><th scope="col">Digest</th><th scope="col">Platforms</th><th scope="col">Size</th><th scope="col">Last pulled</th><th scope="col">Pinned</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
  <tbody>${imageRows(images, summary.pins, now)}</tbody></table></div>`}
</section>`;
}

export interface PageData {
  live: LiveSnapshot;
  summary: CacheSummary;
  repos: RepositoryInfo[];
  images: ImageInfo[];
  repository: string | undefined;
  version: string;
}

export function page(d: PageData): Html {
  const { live } = d;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regmirror console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/ui/console.css">
<script type="module" src="/ui/console.js"></script>
</head>
<body>
<a class="skip" href="#images">Skip to the images</a>
<header>
  <h1>regmirror <span class="muted">console</span></h1>
  <p class="small muted">Version ${d.version} · <span id="updated">as of ${new Date(live.at).toISOString().slice(11, 19)} UTC</span> · <span id="live-state" role="status">static page</span></p>
</header>
<main>
${figures(live, d.summary)}
<section aria-labelledby="h-upstreams">
  <h2 id="h-upstreams">Upstreams</h2>
  <div class="scroll"><table class="stack"><thead><tr><th scope="col">Upstream</th><th scope="col">State</th><th scope="col">Rate limit</th></tr></thead>
  <tbody id="upstream-rows">${upstreamRows(live.upstreams)}</tbody></table></div>
</section>
<section aria-labelledby="h-downloads">
  <h2 id="h-downloads">Downloads in flight</h2>
  <ul class="progress-list" id="download-list" aria-live="off">${downloadItems(live.downloads)}</ul>
  <p class="empty" id="downloads-empty"${live.downloads.length > 0 ? html` hidden` : ''}>No downloads under way.</p>
</section>
<section aria-labelledby="h-prefetch">
  <h2 id="h-prefetch">Prefetch jobs</h2>
  <ul class="progress-list" id="prefetch-list">${prefetchItems(live.prefetch)}</ul>
  <p class="empty" id="prefetch-empty"${live.prefetch.length > 0 ? html` hidden` : ''}>No prefetch jobs (start one with <code>regmirror prefetch IMAGE…</code>).</p>
</section>
<p class="filter" id="filter-box" hidden><label for="filter">Filter repositories and images</label> <input type="search" id="filter" placeholder="name, tag, digest or platform" autocomplete="off"></p>
<div id="cache-lists">
${cacheLists(d.summary, d.repos, d.images, d.repository, live.at)}
</div>
<p id="message" role="status" class="message" hidden></p>
</main>
<footer class="small muted">Live figures refresh every second while this page is open. Pin keeps an image from eviction; purge removes it (layers another image uses stay).</footer>
<dialog id="confirm" aria-labelledby="confirm-title">
  <form method="dialog">
    <h2 id="confirm-title">Purge image?</h2>
    <p id="confirm-text"></p>
    <div class="buttons"><button value="cancel" autofocus>Cancel</button> <button value="ok" class="danger" id="confirm-ok">Purge</button></div>
  </form>
</dialog>
<noscript><p class="message">JavaScript is off: figures do not refresh and the pin and purge buttons do nothing; <code>regmirror cache</code> does the same from a shell.</p></noscript>
</body>
</html>
`;
}
