/**
 * The users file: Apache htpasswd lines `user:$2y$…` with bcrypt hashes only (`htpasswd -B`). Checked
 * with bcryptjs (pure JavaScript: no native build, same answers on every Node). A user missing from the
 * file still costs one bcrypt comparison (at the file's usual cost), so timing does not tell who exists.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import bcrypt from 'bcryptjs';
import { HtpasswdError } from './htpasswd-error.js';

export { HtpasswdError };

const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
/** bcrypt's default cost, for a file with no users. */
const DEFAULT_COST = 10;

export class Htpasswd {
  /**
   * Compared against when the user is unknown: a hash of a random string (never matches) at the cost
   * most of the file's hashes have. `htpasswd -B` writes cost 5, and a fixed cost-10 hash took ~25×
   * as long as a real user's check: the timing told who exists.
   */
  private readonly dummy: string;

  private constructor(private readonly users: ReadonlyMap<string, string>) {
    const costs = new Map<number, number>();
    for (const hash of users.values()) {
      const cost = Number(hash.slice(4, 6));
      costs.set(cost, (costs.get(cost) ?? 0) + 1);
    }
    const common = [...costs].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0]?.[0] ?? DEFAULT_COST;
    this.dummy = bcrypt.hashSync(randomBytes(18).toString('base64'), common);
  }

  static parse(text: string, source: string): Htpasswd {
    const users = new Map<string, string>();
    for (const [i, raw] of text.split(/\r?\n/).entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const at = line.indexOf(':');
      const where = `${source}:${i + 1}`;
      if (at <= 0) throw new HtpasswdError(`${where}: not a "user:hash" line`);
      const user = line.slice(0, at);
      const hash = line.slice(at + 1);
      if (!/^[A-Za-z0-9._@-]{1,128}$/.test(user)) throw new HtpasswdError(`${where}: user name must be 1-128 of A-Z a-z 0-9 . _ @ -`);
      // The hash itself is never put in a message.
      if (!BCRYPT.test(hash)) throw new HtpasswdError(`${where}: user ${user}: only bcrypt hashes are accepted (htpasswd -B)`);
      if (users.has(user)) throw new HtpasswdError(`${where}: user ${user} appears twice`);
      users.set(user, hash);
    }
    return new Htpasswd(users);
  }

  static load(file: string): Htpasswd {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new HtpasswdError(`cannot read the htpasswd file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    return Htpasswd.parse(text, file);
  }

  get size(): number {
    return this.users.size;
  }

  /** Whether the password is the user's; bcrypt's comparison is constant-time over the hash. */
  async verify(user: string, password: string): Promise<boolean> {
    const hash = this.users.get(user);
    const ok = await bcrypt.compare(password, hash ?? this.dummy);
    return hash !== undefined && ok;
  }
}
