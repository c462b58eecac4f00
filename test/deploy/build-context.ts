/**
 * The build context deploy/Dockerfile gets, staged in a directory of its own.
 *
 * BuildKit applies deploy/Dockerfile.dockerignore (an ignore file named after the Dockerfile). The
 * builder available here is the classic one (Debian's dockerd 20.10, a docker CLI without buildx),
 * which reads only a root .dockerignore and would upload the whole tree (.git and node_modules, ~140 MB).
 * So the test applies Dockerfile.dockerignore itself, with Docker's rules: patterns are paths
 * relative to the context root, `*` and `?` stay within one path part, `**` spans any number of
 * parts, a matching directory is left out with everything under it, `!` re-includes, and the last
 * matching line wins.
 */
import { cpSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** A predicate saying whether a context-relative path (no leading ./ or /) is excluded. */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const pattern = (negate ? l.slice(1) : l).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      let re = '';
      for (let i = 0; i < pattern.length; i++) {
        const c = pattern[i]!;
        if (c === '*' && pattern[i + 1] === '*') {
          // "**/" may match nothing; "**" at the end matches everything below.
          if (pattern[i + 2] === '/') {
            re += '(?:.*/)?';
            i += 2;
          } else {
            re += '.*';
            i += 1;
          }
        } else if (c === '*') re += '[^/]*';
        else if (c === '?') re += '[^/]';
        else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
      }
      return { negate, re: new RegExp(`^${re}$`) };
    });
  return (path: string) => {
    let excluded = false;
    for (const r of rules) if (r.re.test(path)) excluded = !r.negate;
    return excluded;
  };
}

/**
 * Copies `root` into `dest` minus what `ignoreFile` excludes (a directory excluded is not entered),
 * and returns the context-relative paths of the files copied.
 */
export function stageContext(root: string, ignoreFile: string, dest: string): string[] {
  const excluded = dockerignore(readFileSync(ignoreFile, 'utf8'));
  const copied: string[] = [];
  const visit = (rel: string) => {
    for (const e of readdirSync(join(root, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (excluded(p)) continue;
      if (e.isDirectory()) {
        mkdirSync(join(dest, p), { recursive: true });
        visit(p);
      } else {
        cpSync(join(root, p), join(dest, p), { verbatimSymlinks: true });
        copied.push(p);
      }
    }
  };
  mkdirSync(dest, { recursive: true });
  visit('');
  return copied.sort();
}
