"""The page of ``wgpy web``: one HTML document and one script, written by hand, served as
they are (no build step, no framework). The script reads ``/api/state`` every two seconds and
builds the tables with ``textContent`` only, so a peer name from a config can never become
markup; the explain form asks ``/api/explain``. A token given in the page's address
(``?token=``) is passed on to every request the page makes."""

from __future__ import annotations

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wgpy web</title>
<link rel="icon" href="favicon.svg" type="image/svg+xml">
<style>
body { font-family: system-ui, sans-serif; margin: 1rem 2rem; color: #222; }
h1 { font-size: 1.4rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left;
  vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .key { font-family: ui-monospace, monospace; font-size: 0.8rem; }
#status { color: #666; font-size: 0.85rem; }
#status.error { color: #b00020; }
form { display: flex; gap: 0.5rem; flex-wrap: wrap; align-items: end; }
label { display: flex; flex-direction: column; font-size: 0.85rem; }
#explain-result { background: #f6f6f6; padding: 0.6rem; white-space: pre-wrap;
  min-height: 2rem; }
.verdict-sent, .verdict-delivered { color: #1b7f1b; font-weight: bold; }
.verdict-dropped, .verdict-not-sent { color: #b00020; font-weight: bold; }
#map { max-width: 100%; border: 1px solid #ddd; }
</style>
</head>
<body>
<h1>wgpy: <span id="target">…</span></h1>
<div id="status">loading…</div>

<h2>Peers</h2>
<table id="peers">
<thead><tr><th>peer</th><th>endpoint</th><th>allowed ips</th><th>handshake</th>
<th>received</th><th>sent</th><th>rx/s</th><th>tx/s</th></tr></thead>
<tbody></tbody>
</table>

<h2>Drops</h2>
<table id="drops">
<thead><tr><th>peer</th><th>reason</th><th>count</th><th>per second</th>
<th>addresses</th></tr></thead>
<tbody></tbody>
</table>
<p id="drops-note"></p>

<h2>Explain</h2>
<form id="explain" action="/api/explain" method="get">
<label>direction
<select name="direction" id="direction">
<option value="to">to ADDRESS (which peer gets it)</option>
<option value="from">from ADDRESS via PEER (is it accepted)</option>
</select></label>
<label>address <input name="address" id="address" required placeholder="10.0.0.2"></label>
<label>via peer <input name="peer" id="peer" list="peer-names"
  placeholder="name or public key"></label>
<datalist id="peer-names"></datalist>
<button type="submit" id="explain-submit">explain</button>
</form>
<pre id="explain-result"></pre>

<h2>AllowedIPs map</h2>
<p><img id="map" alt="AllowedIPs map"></p>
<div id="network" hidden>
<h2>Network (wgpy net map)</h2>
<p><img id="net" alt="the network: hosts and every pair's reachability"></p>
</div>
<script src="app.js"></script>
</body>
</html>
"""

#: the page's icon: a tunnel (two ends joined by a pipe), small enough to read
FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<rect width="32" height="32" rx="6" fill="#88171a"/>
<circle cx="8" cy="16" r="5" fill="#fff"/>
<circle cx="24" cy="16" r="5" fill="#fff"/>
<rect x="8" y="13" width="16" height="6" fill="#fff"/>
</svg>
"""

SCRIPT = """'use strict';
const token = new URLSearchParams(window.location.search).get('token');
function withToken(path) {
  return token === null ? path : path + (path.includes('?') ? '&' : '?') +
    'token=' + encodeURIComponent(token);
}
function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text === null || text === undefined ? '' : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + ' ' + units[i];
}
function age(s) {
  if (s === null || s === undefined) return 'never';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  return Math.floor(s / 3600) + ' h ago';
}
function addresses(entry) {
  const parts = [];
  const fmt = (e) => e.address + ' ×' + e.count;
  if (entry.sources.length) parts.push('from ' + entry.sources.map(fmt).join(', '));
  if (entry.destinations.length) parts.push('to ' + entry.destinations.map(fmt).join(', '));
  if (entry.explained_by === 'destination') parts.reverse();
  return parts.join('; ');
}
function render(state) {
  document.getElementById('target').textContent = state.target + ' (' + state.kind + ')';
  const peers = document.querySelector('#peers tbody');
  peers.replaceChildren();
  const names = document.getElementById('peer-names');
  names.replaceChildren();
  for (const p of state.peers) {
    const row = document.createElement('tr');
    row.className = 'peer';
    const who = cell(row, p.label);
    const key = document.createElement('div');
    key.className = 'key';
    key.textContent = p.public_key;
    who.appendChild(key);
    cell(row, p.endpoint || '(none)');
    cell(row, p.allowed_ips.join(', '));
    cell(row, state.kind === 'config' ? '-' : age(p.latest_handshake_age));
    cell(row, bytes(p.rx_bytes), 'num');
    cell(row, bytes(p.tx_bytes), 'num');
    cell(row, p.rx_rate === null ? '-' : bytes(p.rx_rate) + '/s', 'num');
    cell(row, p.tx_rate === null ? '-' : bytes(p.tx_rate) + '/s', 'num');
    peers.appendChild(row);
    const option = document.createElement('option');
    option.value = p.name || p.public_key;
    names.appendChild(option);
  }
  const drops = document.querySelector('#drops tbody');
  drops.replaceChildren();
  const note = document.getElementById('drops-note');
  if (state.drops === null) {
    note.textContent = state.kind === 'config'
      ? 'a config file has no counters: serve a live interface for drops'
      : 'no drop counters (not wgpyd; for a kernel interface run wgpy watch)';
  } else {
    const lower = state.kernel !== null && state.kernel.lower_bound;
    note.textContent = state.drops.length ? '' : 'no drops';
    if (lower) {
      note.textContent += ' counts are lower bounds (≥): the kernel rate-limits its messages';
    }
    for (const d of state.drops) {
      const row = document.createElement('tr');
      row.className = 'drop';
      cell(row, d.label);
      cell(row, d.reason);
      cell(row, (lower ? '≥' : '') + d.count, 'num');
      cell(row, d.rate === null ? '-' : d.rate.toFixed(1), 'num');
      cell(row, addresses(d));
      drops.appendChild(row);
    }
  }
}
async function refresh() {
  const status = document.getElementById('status');
  try {
    const response = await fetch(withToken('api/state'));
    const state = await response.json();
    if (!response.ok) throw new Error(state.error || response.statusText);
    render(state);
    status.textContent = 'updated ' + new Date().toLocaleTimeString();
    status.className = '';
  } catch (error) {
    status.textContent = 'cannot read: ' + error.message;
    status.className = 'error';
  }
}
document.getElementById('explain').addEventListener('submit', async (event) => {
  event.preventDefault();
  const out = document.getElementById('explain-result');
  const query = new URLSearchParams(new FormData(event.target));
  out.textContent = '…';
  out.className = '';
  try {
    const response = await fetch(withToken('api/explain?' + query.toString()));
    const result = await response.json();
    if (!response.ok) {
      out.textContent = result.error || response.statusText;
      out.className = 'verdict-dropped';
      return;
    }
    out.textContent = result.text;
    out.dataset.verdict = result.verdict;
    out.className = 'verdict-' + result.verdict.replace(' ', '-');
  } catch (error) {
    out.textContent = 'cannot ask: ' + error.message;
  }
});
document.getElementById('map').src = withToken('map.svg');
let networkShown = false;
async function showNetwork() {
  if (networkShown) return;
  try {
    const response = await fetch(withToken('api/state'));
    const state = await response.json();
    if (!state.network) return;
    networkShown = true;
    document.getElementById('net').src = withToken('net.svg');
    document.getElementById('network').hidden = false;
  } catch (error) {
    /* the peers table says what went wrong */
  }
}
showNetwork();
refresh();
setInterval(refresh, 2000);
"""
