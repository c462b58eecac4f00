/**
 * The console's stylesheet, served as /ui/console.css (a file of its own: the Content-Security-Policy
 * allows no inline styles). Narrow screens get stacked table rows; focus is always visible; colours
 * follow the system's light or dark scheme.
 */
export const CONSOLE_CSS = `
:root { color-scheme: light dark; --bg: #f6f7f9; --fg: #1b1f24; --muted: #5b6470; --card: #fff; --line: #d8dde3;
  --accent: #1f6feb; --good: #1a7f37; --bad: #cf222e; --pin: #8250df; --focus: #ff9f1c; }
@media (prefers-color-scheme: dark) { :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --card: #161b22; --line: #30363d;
  --accent: #4493f8; --good: #3fb950; --bad: #f85149; --pin: #ab7df8; } }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
header, main, footer { max-width: 1200px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 12px; }
h1 { font-size: 1.4rem; margin: 0.2em 0; }
h2 { font-size: 1.1rem; margin: 1.4em 0 0.5em; }
h3 { font-size: 0.95rem; margin: 0 0 0.3em; color: var(--muted); font-weight: 600; }
a { color: var(--accent); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.9em; }
.muted { color: var(--muted); font-weight: normal; }
.small { font-size: 0.85rem; }
.big { font-size: 1.5rem; margin: 0 0 0.3em; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.chart { width: 100%; height: 60px; display: block; margin: 6px 0; }
.chart .line { fill: none; stroke: var(--accent); stroke-width: 2; vector-effect: non-scaling-stroke; }
.chart .grid { fill: none; stroke: var(--line); stroke-width: 1; vector-effect: non-scaling-stroke; }
progress { width: 100%; height: 10px; accent-color: var(--accent); }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
th, td { text-align: left; padding: 7px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 0.85rem; color: var(--muted); }
tr:last-child td { border-bottom: 0; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; border: 1px solid var(--line); font-size: 0.85rem; }
.badge.good { color: var(--good); border-color: var(--good); }
.badge.bad { color: var(--bad); border-color: var(--bad); }
.badge.pin { color: var(--pin); border-color: var(--pin); }
.tag { display: inline-block; background: var(--bg); border: 1px solid var(--line); border-radius: 4px; padding: 0 5px; margin: 2px 0; font-size: 0.85rem; }
.error { color: var(--bad); display: block; }
.progress-list { list-style: none; padding: 0; margin: 0; display: grid; gap: 8px; }
.progress-list li { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; display: grid; gap: 4px; }
.empty { color: var(--muted); margin: 0.3em 0; }
button { font: inherit; padding: 6px 14px; min-height: 36px; border-radius: 6px; border: 1px solid var(--line); background: var(--card); color: var(--fg); cursor: pointer; }
button:hover { border-color: var(--accent); }
button.danger { color: var(--bad); border-color: var(--bad); }
button:disabled { opacity: 0.5; cursor: default; }
.actions { white-space: nowrap; }
.filter { margin: 1.4em 0 0; display: flex; flex-wrap: wrap; gap: 6px 10px; align-items: center; }
.filter input { font: inherit; padding: 6px 10px; min-height: 36px; border-radius: 6px; border: 1px solid var(--line); background: var(--card); color: var(--fg); flex: 1 1 220px; max-width: 420px; }
a:focus-visible, button:focus-visible, input:focus-visible, summary:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; }
.skip { position: absolute; left: -9999px; }
.skip:focus { left: 16px; top: 8px; background: var(--card); padding: 6px 10px; z-index: 10; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.message { background: var(--card); border: 1px solid var(--accent); border-radius: 8px; padding: 8px 12px; }
.message.bad { border-color: var(--bad); color: var(--bad); }
dialog { border: 1px solid var(--line); border-radius: 10px; background: var(--card); color: var(--fg); max-width: min(460px, 92vw); }
dialog::backdrop { background: rgba(0, 0, 0, 0.45); }
dialog h2 { margin-top: 0; }
dialog .buttons { display: flex; gap: 10px; justify-content: flex-end; }
footer { margin: 24px auto; }
[hidden] { display: none !important; }
@media (max-width: 700px) {
  table.stack thead { position: absolute; left: -9999px; }
  table.stack, table.stack tbody, table.stack tr, table.stack td { display: block; width: 100%; }
  table.stack tr { border-bottom: 1px solid var(--line); padding: 6px 0; }
  table.stack td { border: 0; padding: 3px 10px; }
  table.stack td::before { content: attr(data-label); display: inline-block; min-width: 7.5em; color: var(--muted); font-size: 0.85rem; }
  table.stack td.actions::before { content: none; }
  .actions { white-space: normal; }
}
`;
