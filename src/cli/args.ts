/**
 * The argument grammar of `regmirror cache`: a command word, its positional arguments, and flags
 * anywhere (`--flag value`, `--flag=value`, `-h`); `--` ends the flags. Which flags a command takes is
 * checked by the caller; an unknown flag, a missing value or a value given to a switch is a UsageError.
 */

/** Bad usage: shown as one line plus the usage, exit status 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    /** The command whose usage to show, or undefined for the list of commands. */
    readonly command?: string,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  /** `--name`; short aliases map to it. */
  name: string;
  short?: string;
  /** Takes a value (`--admin URL`); otherwise a switch. */
  value?: string;
  help: string;
}

export interface ParsedArgs {
  command: string | undefined;
  positionals: string[];
  /** By long name; switches are `true`. */
  flags: Map<string, string | true>;
}

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const byName = new Map<string, FlagSpec>();
  for (const s of specs) {
    byName.set(`--${s.name}`, s);
    if (s.short) byName.set(`-${s.short}`, s);
  }
  const words: string[] = [];
  const flags = new Map<string, string | true>();
  const context = () => words[0];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      words.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith('-') && a !== '-') {
      const eq = a.startsWith('--') ? a.indexOf('=') : -1;
      const key = eq >= 0 ? a.slice(0, eq) : a;
      const spec = byName.get(key);
      if (!spec) throw new UsageError(`unknown option ${key}`, context());
      if (spec.value !== undefined) {
        let v: string | undefined;
        if (eq >= 0) v = a.slice(eq + 1);
        else {
          v = argv[i + 1];
          if (v === undefined || (v.startsWith('-') && v !== '-')) throw new UsageError(`option --${spec.name} needs a value (${spec.value})`, context());
          i++;
        }
        if (v === '') throw new UsageError(`option --${spec.name} needs a value (${spec.value})`, context());
        if (flags.has(spec.name)) throw new UsageError(`option --${spec.name} given twice`, context());
        flags.set(spec.name, v);
      } else {
        if (eq >= 0) throw new UsageError(`option --${spec.name} takes no value`, context());
        flags.set(spec.name, true);
      }
      continue;
    }
    words.push(a);
  }
  return { command: words[0], positionals: words.slice(1), flags };
}
