/**
 * The access policy file (YAML): groups, the networks anonymous clients may pull from, the proxies
 * whose X-Forwarded-For is believed, and rules of repository patterns allowed or denied per subject.
 *
 *   groups: { admin: [alice], ci: [ci-bot] }
 *   anonymous: { networks: [127.0.0.0/8] }
 *   trustedProxies: [10.0.0.5]
 *   rules:
 *     - subjects: [anonymous, authenticated]      # anonymous | authenticated | user:NAME | group:NAME | "*"
 *       allow: [docker.io/library/*]
 *     - subjects: [group:ci]
 *       allow: [ghcr.io/acme/**]
 *       deny: [ghcr.io/acme/secret]
 *
 * Patterns name repositories as `<upstream>/<repository>` with the pins' syntax (lifecycle/pins.ts):
 * `*` is any run within one path part, `**` any run across parts. A repository is allowed to a caller
 * when a rule naming the caller allows it and no rule naming the caller denies it; nothing else is.
 * Validation throws a PolicyError naming the bad entry (`rules[2].allow[0]`).
 */
import { BlockList, isIP } from 'node:net';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

export class PolicyError extends Error {
  constructor(readonly entry: string, message: string) {
    super(`${entry}: ${message}`);
    this.name = 'PolicyError';
  }
}

/** Who is asking: an authenticated user, or an anonymous client known by address. */
export interface Caller {
  user: string | undefined;
  /** The client address (after trusted proxies). */
  address: string;
}

interface Rule {
  subjects: string[];
  allow: RegExp[];
  deny: RegExp[];
}

/** Lower case only: routed names are (the grammar has no upper case), so `Secret` would never match. */
const PATTERN = /^[a-z0-9.:[\]-]+(\/[a-z0-9._*-]+)+$/;
const SUBJECT = /^(anonymous|authenticated|\*|user:[A-Za-z0-9._@-]{1,128}|group:[A-Za-z0-9._@-]{1,128})$/;

function toRegExp(pattern: string): RegExp {
  const esc = pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc.split('**').map((part) => part.replace(/\*/g, '[^/]*')).join('.*')}$`);
}

/** Strips the IPv4-mapped prefix Node gives IPv4 peers on a dual-stack socket. */
export function normalizeAddress(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

function blockList(entry: string, v: unknown): BlockList {
  const list = new BlockList();
  if (v === undefined || v === null) return list;
  if (!Array.isArray(v)) throw new PolicyError(entry, 'must be a list of addresses or CIDRs');
  for (const [i, item] of v.entries()) {
    const at = `${entry}[${i}]`;
    if (typeof item !== 'string') throw new PolicyError(at, 'must be an address or CIDR such as 10.0.0.0/8');
    const [addr, bits, extra] = item.split('/');
    const family = isIP(addr ?? '');
    if (extra !== undefined || family === 0) throw new PolicyError(at, `not an address or CIDR: ${item.slice(0, 100)}`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) list.addAddress(addr!, type);
    else {
      const n = /^\d{1,3}$/.test(bits) ? Number(bits) : -1;
      if (n < 0 || n > (family === 4 ? 32 : 128)) throw new PolicyError(at, `bad prefix length in ${item.slice(0, 100)}`);
      list.addSubnet(addr!, n, type);
    }
  }
  return list;
}

function strings(entry: string, v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new PolicyError(entry, 'must be a list of strings');
  return v as string[];
}

function keys(entry: string, o: Record<string, unknown>, allowed: string[]): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) throw new PolicyError(entry ? `${entry}.${k}` : k, 'unknown key');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export class Policy {
  private constructor(
    private readonly groups: ReadonlyMap<string, ReadonlySet<string>>,
    private readonly anonymousNets: BlockList,
    private readonly proxies: BlockList,
    private readonly rules: readonly Rule[],
  ) {}

  static parse(text: string, source: string): Policy {
    let doc: unknown;
    try {
      doc = parseYaml(text);
    } catch (e) {
      throw new PolicyError(source, `not valid YAML: ${(e as Error).message}`);
    }
    if (doc === null || doc === undefined) doc = {};
    if (!isObject(doc)) throw new PolicyError(source, 'the top level must be a mapping');
    keys('', doc, ['groups', 'anonymous', 'trustedProxies', 'rules']);
    const groups = new Map<string, Set<string>>();
    const g = doc.groups ?? {};
    if (!isObject(g)) throw new PolicyError('groups', 'must be a mapping of group name to user names');
    for (const [name, members] of Object.entries(g)) {
      if (!/^[A-Za-z0-9._@-]{1,128}$/.test(name)) throw new PolicyError(`groups.${name}`, 'not a valid group name');
      groups.set(name, new Set(strings(`groups.${name}`, members)));
    }
    const anon = doc.anonymous ?? {};
    if (!isObject(anon)) throw new PolicyError('anonymous', 'must be a mapping');
    keys('anonymous', anon, ['networks']);
    const anonymousNets = blockList('anonymous.networks', anon.networks);
    const proxies = blockList('trustedProxies', doc.trustedProxies);
    const rulesRaw = doc.rules ?? [];
    if (!Array.isArray(rulesRaw)) throw new PolicyError('rules', 'must be a list');
    const rules: Rule[] = rulesRaw.map((r: unknown, i) => {
      const at = `rules[${i}]`;
      if (!isObject(r)) throw new PolicyError(at, 'must be a mapping with subjects and allow/deny');
      keys(at, r, ['subjects', 'allow', 'deny']);
      const subjects = strings(`${at}.subjects`, r.subjects);
      if (subjects.length === 0) throw new PolicyError(`${at}.subjects`, 'at least one subject is needed');
      for (const [j, s] of subjects.entries()) {
        if (!SUBJECT.test(s)) throw new PolicyError(`${at}.subjects[${j}]`, `not a subject (anonymous, authenticated, *, user:NAME, group:NAME): ${s.slice(0, 100)}`);
        if (s.startsWith('group:') && !groups.has(s.slice(6))) throw new PolicyError(`${at}.subjects[${j}]`, `group ${s.slice(6)} is not defined under groups`);
      }
      const patterns = (kind: 'allow' | 'deny') =>
        strings(`${at}.${kind}`, r[kind]).map((p, j) => {
          if (p.length > 512 || !PATTERN.test(p) || p.split('/').some((x) => x === '.' || x === '..')) {
            throw new PolicyError(`${at}.${kind}[${j}]`, `not a repository pattern like docker.io/library/* or ghcr.io/acme/** (lower case, as names are): ${p.slice(0, 100)}`);
          }
          return toRegExp(p);
        });
      return { subjects, allow: patterns('allow'), deny: patterns('deny') };
    });
    return new Policy(groups, anonymousNets, proxies, rules);
  }

  static load(file: string): Policy {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new PolicyError(file, `cannot read the policy file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return Policy.parse(text, file);
  }

  /** Whether anonymous pulls are allowed from this address at all. */
  anonymousAllowedFrom(address: string): boolean {
    return check(this.anonymousNets, address);
  }

  isTrustedProxy(address: string): boolean {
    return check(this.proxies, address);
  }

  inGroup(user: string, group: string): boolean {
    return this.groups.get(group)?.has(user) ?? false;
  }

  /** Whether `caller` may pull from the repository `<upstream>/<repo>`. Anonymous callers also need an allowed network. */
  allows(caller: Caller, repository: string): boolean {
    if (caller.user === undefined && !this.anonymousAllowedFrom(caller.address)) return false;
    let allowed = false;
    for (const rule of this.rules) {
      if (!rule.subjects.some((s) => this.names(caller, s))) continue;
      if (rule.deny.some((re) => re.test(repository))) return false;
      if (!allowed && rule.allow.some((re) => re.test(repository))) allowed = true;
    }
    return allowed;
  }

  private names(caller: Caller, subject: string): boolean {
    if (subject === '*') return true;
    if (subject === 'anonymous') return caller.user === undefined;
    if (caller.user === undefined) return false;
    if (subject === 'authenticated') return true;
    if (subject.startsWith('user:')) return subject.slice(5) === caller.user;
    return this.inGroup(caller.user, subject.slice(6));
  }
}

function check(list: BlockList, address: string): boolean {
  const a = normalizeAddress(address);
  const family = isIP(a);
  if (family === 0) return false;
  return list.check(a, family === 4 ? 'ipv4' : 'ipv6');
}
