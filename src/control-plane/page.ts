/**
 * The fleet overview page: server-rendered HTML that reads without JavaScript (filters are links,
 * a node's workloads and errors are a <details> row), plus a small script that filters in place
 * and reloads the page every 15 s. Everything from the fleet is escaped.
 */
import type { NodeOverview, OverviewFilter } from './overview.js';

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);
}

const FILTERS: OverviewFilter[] = ['all', 'failing', 'stale', 'behind'];

const STYLE = `
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
.summary span{margin-right:1.2em}
nav a{margin-right:.8em;padding:.1em .5em;border-radius:3px;text-decoration:none;border:1px solid #bbb;color:#222}
nav a.on{background:#222;color:#fff}
table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{text-align:left;padding:.35em .6em;border-bottom:1px solid #ddd;vertical-align:top}
tr.node > td:first-child{border-left:6px solid #999}
tr.failing > td:first-child{border-left-color:#d62728}
tr.stale > td:first-child{border-left-color:#ff7f0e}
tr.behind > td:first-child{border-left-color:#e7ba00}
tr.ok > td:first-child{border-left-color:#2ca02c}
.state{font-weight:600;text-transform:uppercase;font-size:.85em}
.failing .state{color:#d62728}.stale .state{color:#ff7f0e}.behind .state{color:#a07c00}.ok .state{color:#2ca02c}
code{background:#f4f4f4;padding:0 .25em;border-radius:2px}
.err{color:#b00}
details summary{cursor:pointer}
table.wl{margin:.4em 0 .6em;width:auto;font-size:.92em}
table.wl td,table.wl th{border-bottom:1px solid #eee;padding:.15em .5em}
tr.node > td:first-child{min-width:16em}
details[open]{min-width:32em}
`;

const SCRIPT = `
document.querySelectorAll('nav a[data-filter]').forEach(function(a){a.addEventListener('click',function(e){
  e.preventDefault();var f=a.dataset.filter;
  document.querySelectorAll('nav a').forEach(function(b){b.classList.toggle('on',b===a)});
  document.querySelectorAll('tbody[data-node]').forEach(function(t){
    var show=f==='all'||t.dataset[f]==='1';t.hidden=!show;});
  history.replaceState(null,'',f==='all'?'?':'?filter='+f);
});});
document.querySelectorAll('tr.node').forEach(function(r){r.addEventListener('click',function(e){
  if(e.target.closest('a,summary'))return;var d=r.querySelector('details');if(d)d.open=!d.open;});});
setTimeout(function(){if(!document.querySelector('details[open]'))location.reload()},15000);
`;

function ago(iso: string | null, now: Date): string {
  if (iso === null) return 'never';
  const s = Math.max(0, Math.round((now.getTime() - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function nodeRows(n: NodeOverview, now: Date): string {
  const phases = Object.entries(n.workloadsByPhase)
    .map(([p, c]) => `${escapeHtml(p)} ${c}`)
    .join(', ');
  const failing = n.failing
    .map((f) => `<div class="err"><code>${escapeHtml(f.code)}</code> ${escapeHtml(f.id)}: ${escapeHtml(f.userMessage)}</div>`)
    .join('');
  const gen = `${n.observedGeneration ?? '-'} / ${n.publishedGeneration ?? '-'}`;
  const runtimes = Object.entries(n.conditions.runtimes)
    .map(([k, v]) => `${escapeHtml(k)}: ${escapeHtml(v)}`)
    .join('; ');
  const workloads = n.workloads
    .map(
      (w) =>
        `<tr${w.errorCode !== null ? ' class="err"' : ''}><td>${escapeHtml(w.id)}</td><td>${escapeHtml(w.type)}</td><td>${escapeHtml(w.phase)}</td>` +
        `<td>${w.errorCode !== null ? `<code>${escapeHtml(w.errorCode)}</code> ` : ''}${escapeHtml(w.message)}</td></tr>`,
    )
    .join('');
  const workloadTable = workloads === '' ? '<p>no workloads</p>' : `<table class="wl"><tr><th>workload</th><th>type</th><th>phase</th><th>message</th></tr>${workloads}</table>`;
  const detail = n.failing.map((f) => `<li><code>${escapeHtml(f.code)}</code> ${escapeHtml(f.id)} (${escapeHtml(f.phase)}): ${escapeHtml(f.message)}</li>`).join('');
  const sync = n.conditions.syncError === null ? '' : `<p class="err">sync: <code>${escapeHtml(n.conditions.syncError.code)}</code> ${escapeHtml(n.conditions.syncError.message)}</p>`;
  const cap = n.capacity === null ? '' : `<p>capacity: ${escapeHtml(Object.entries(n.capacity).map(([k, v]) => `${k}=${v}`).join(', '))}</p>`;
  return (
    `<tbody data-node="${escapeHtml(n.nodeId)}" data-failing="${n.failing.length > 0 ? 1 : 0}" data-stale="${n.stale ? 1 : 0}" data-behind="${n.behind ? 1 : 0}">` +
    `<tr class="node ${n.state}" id="node-${escapeHtml(n.nodeId)}">` +
    `<td><details><summary><strong>${escapeHtml(n.nodeId)}</strong></summary>` +
    `<p>host ${escapeHtml(n.hostname ?? '-')}, agent ${escapeHtml(n.agentVersion ?? '-')}</p>${sync}${cap}` +
    (detail === '' ? '' : `<ul>${detail}</ul>`) +
    workloadTable +
    `</details></td>` +
    `<td class="state">${escapeHtml(n.state)}</td>` +
    `<td>${escapeHtml(ago(n.lastSeenAt, now))}</td>` +
    `<td>${escapeHtml(gen)}${n.behind ? ' <strong>behind</strong>' : ''}</td>` +
    `<td>${phases || '-'}${failing}</td>` +
    `<td>${runtimes || '-'}</td></tr>` +
    `</tbody>`
  );
}

export function renderOverviewPage(all: NodeOverview[], filter: OverviewFilter, now: Date): string {
  const count = (p: (n: NodeOverview) => boolean) => all.filter(p).length;
  const shown = filter === 'all' ? all : all.filter((n) => (filter === 'failing' ? n.failing.length > 0 : filter === 'stale' ? n.stale : n.behind));
  const nav = FILTERS.map(
    (f) => `<a href="${f === 'all' ? '?' : `?filter=${f}`}" data-filter="${f}"${f === filter ? ' class="on"' : ''}>${f}</a>`,
  ).join('');
  const body = shown.length === 0 ? `<tbody><tr><td colspan="6">no nodes${filter === 'all' ? '' : ` match "${filter}"`}</td></tr></tbody>` : shown.map((n) => nodeRows(n, now)).join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>persys fleet</title><style>${STYLE}</style></head>
<body>
<h1>persys fleet</h1>
<p class="summary"><span>${all.length} nodes</span><span class="failing">${count((n) => n.failing.length > 0)} failing</span><span>${count((n) => n.stale)} stale</span><span>${count((n) => n.behind)} behind</span><span>at ${escapeHtml(now.toISOString())}</span></p>
<nav>${nav}</nav>
<table><thead><tr><th>node</th><th>state</th><th>last seen</th><th>generation observed / published</th><th>workloads</th><th>runtimes</th></tr></thead>
${body}
</table>
<script>${SCRIPT}</script>
</body></html>
`;
}
