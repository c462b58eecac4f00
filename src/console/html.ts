/**
 * HTML text and attribute escaping for the console's server-rendered pages. Every value that came
 * from outside the code (repository names, tags, digests, platforms, upstream URLs, error messages)
 * goes through `esc`; `Html` marks markup built here so it is not escaped twice.
 */

export class Html {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

const ENTITIES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' };

/** Escapes for text and for quoted attribute values alike. */
export function esc(v: unknown): string {
  return String(v).replace(/[&<>"'`]/g, (c) => ENTITIES[c]!);
}

type Part = string | number | Html | undefined | null | false | Part[];

function render(v: Part): string {
  if (v === undefined || v === null || v === false) return '';
  if (v instanceof Html) return v.value;
  if (Array.isArray(v)) return v.map(render).join('');
  return esc(v);
}

/** A template tag: interpolated values are escaped unless they are Html (or arrays of it). */
export function html(strings: TemplateStringsArray, ...values: Part[]): Html {
  let out = strings[0]!;
  for (let i = 0; i < values.length; i++) out += render(values[i]) + strings[i + 1]!;
  return new Html(out);
}
