/**
 * Summarises V8 .cpuprofile files (node --cpu-prof): self time aggregated by function + location,
 * and by file, top first. As a command:
 *   node bench/out/bench/profile.js FILE.cpuprofile... [--top N]
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Entry {
  key: string;
  ms: number;
  share: number;
}

export interface Summary {
  totalMs: number;
  /** wall time with no JS or GC running (the event loop waiting) */
  idleMs: number;
  byFunction: Entry[];
  /** time with the function anywhere on the stack (each sample counted once per function) */
  inclusive: Entry[];
  byFile: Entry[];
  byArea: Entry[];
}

function shortUrl(url: string, root: string): string {
  let u = url.replace(/^file:\/\//, '');
  if (root && u.startsWith(root)) u = u.slice(root.length);
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) u = u.slice(nm);
  return u || '(native)';
}

/** Which layer of the stack a frame belongs to. */
function areaOf(frame: CallFrame): string {
  const u = frame.url;
  if (!u) return frame.functionName.startsWith('(') ? frame.functionName : '(native / V8 builtins)';
  if (u.startsWith('node:')) return `node core: ${u.slice(5).split('/')[0]}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (nm) return `dep: ${nm[1]}`;
  const src = /\/dist\/(.*?)\.js$/.exec(u);
  if (src) return `regmirror: ${src[1]}`;
  return u;
}

function keyOf(cf: CallFrame, root: string): string {
  const name = cf.functionName || '(anonymous)';
  return cf.url ? `${name}  ${shortUrl(cf.url, root)}:${cf.lineNumber + 1}` : name;
}

export function summarize(files: string[], root = ''): Summary {
  const fn = new Map<string, number>();
  const file = new Map<string, number>();
  const area = new Map<string, number>();
  const incl = new Map<string, number>();
  let total = 0;
  let idle = 0;
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const f of files) {
    const p = JSON.parse(readFileSync(f, 'utf8')) as CpuProfile;
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    const self = new Map<number, number>();
    // timeDeltas[i] is the time before sample i; attribute the gap after a sample to it.
    for (let i = 0; i < p.samples.length; i++) {
      const dt = p.timeDeltas[i + 1] ?? 0;
      self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + dt);
    }
    // inclusive: per node, then up the parent chain with each function key counted once per stack
    for (const [id, us] of self) {
      const leaf = byId.get(id);
      if (!leaf || leaf.callFrame.functionName === '(idle)') continue;
      const seen = new Set<string>();
      for (let cur: number | undefined = id, depth = 0; cur !== undefined && depth < 2000; cur = parent.get(cur), depth++) {
        const cf = byId.get(cur)?.callFrame;
        if (!cf || cf.functionName === '(root)') continue;
        const k = keyOf(cf, root);
        if (seen.has(k)) continue;
        seen.add(k);
        add(incl, k, us / 1000);
      }
    }
    for (const [id, us] of self) {
      const node = byId.get(id);
      if (!node) continue;
      const ms = us / 1000;
      total += ms;
      const cf = node.callFrame;
      if (cf.functionName === '(idle)') {
        idle += ms;
        continue;
      }
      add(fn, keyOf(cf, root), ms);
      add(file, cf.url ? shortUrl(cf.url, root) : cf.functionName.startsWith('(') ? cf.functionName : '(native / V8 builtins)', ms);
      add(area, areaOf(cf), ms);
    }
  }
  const busy = total - idle;
  const list = (m: Map<string, number>): Entry[] =>
    [...m.entries()].map(([key, ms]) => ({ key, ms, share: busy > 0 ? ms / busy : 0 })).sort((a, b) => b.ms - a.ms);
  return { totalMs: total, idleMs: idle, byFunction: list(fn), inclusive: list(incl), byFile: list(file), byArea: list(area) };
}

export function formatSummary(s: Summary, top = 25): string {
  const lines: string[] = [];
  const busy = s.totalMs - s.idleMs;
  lines.push(`profiled ${(s.totalMs / 1000).toFixed(2)} s; busy (not idle) ${(busy / 1000).toFixed(2)} s = ${((busy / Math.max(1, s.totalMs)) * 100).toFixed(1)}%; shares below are of busy time`);
  const table = (title: string, es: Entry[], n: number) => {
    lines.push('', `${title}`, '   self ms   share  where');
    for (const e of es.slice(0, n)) lines.push(`${e.ms.toFixed(1).padStart(10)}  ${(e.share * 100).toFixed(1).padStart(5)}%  ${e.key}`);
  };
  table('by area', s.byArea, 15);
  table('by file', s.byFile, 15);
  table('by function (self time)', s.byFunction, top);
  table('by function (inclusive: on the stack)', s.inclusive, top);
  return lines.join('\n');
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const args = process.argv.slice(2);
  let top = 25;
  const files: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--top') top = Number(args[++i]);
    else files.push(args[i]!);
  }
  if (files.length === 0) {
    process.stderr.write('usage: node bench/out/bench/profile.js FILE.cpuprofile... [--top N]\n');
    process.exit(2);
  }
  process.stdout.write(`${formatSummary(summarize(files, process.cwd() + '/'), top)}\n`);
}
