/** A systemd unit file as section -> key -> values (repeated keys accumulate, in file order). */
export type UnitFile = Record<string, Record<string, string[]>>;

export function parseUnit(text: string): UnitFile {
  const out: UnitFile = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1]!;
      out[section] ??= {};
      continue;
    }
    const eq = line.indexOf('=');
    const k = line.slice(0, eq).trim();
    ((out[section] ??= {})[k] ??= []).push(line.slice(eq + 1).trim());
  }
  return out;
}
