// The cluster view: this node's status (GET /v1/status) every second, its metrics
// (GET /metrics) every two, the members with their lag, the leader changes this page saw, live
// charts, and for an admin the membership changes of the audit trail.
import { $, get, el } from './api.js';
import * as metrics from './metrics.js';
import { draw } from './chart.js';
import { membershipChanges } from './admin.js';

const STATUS_EVERY = 1000, METRICS_EVERY = 2000, AUDIT_EVERY = 15000, KEEP = 120000;
const WRITES = l => l.route === '/v1/transfers' || l.route === '/v1/accounts';

let timers = [];
let status = null, lastScrape = null, admin = false;
let leaders = []; // {at, term, leader}
const series = { throughput: [], latencyMean: [], latencyP99: [], fsyncMean: [], fsyncP99: [] };

export function start(options) {
  stop();
  admin = options.admin;
  const every = (f, ms) => { f(); timers.push(setInterval(f, ms)); };
  every(pollStatus, STATUS_EVERY);
  every(pollMetrics, METRICS_EVERY);
  if (admin) every(pollMembership, AUDIT_EVERY);
}

export function stop() { timers.forEach(clearInterval); timers = []; }

function banner(text) { $('banner').textContent = text || ''; $('banner').hidden = !text; }

async function pollStatus() {
  try {
    status = await get('/v1/status');
    banner('');
  } catch (e) {
    if (e.status === 401) return;
    status = null;
    banner(`Status unavailable: ${e.message}`);
  }
  noteLeader(status);
  render();
}

// Records a change of leader or term as this page sees it.
function noteLeader(s) {
  const leader = s ? s.leader_id ?? null : null;
  const term = s ? s.term : null;
  const last = leaders[leaders.length - 1];
  if (last && last.leader === leader && (leader === null || last.term === term)) return;
  leaders.push({ at: new Date(), term, leader });
  if (leaders.length > 50) leaders.shift();
}

async function pollMetrics() {
  let samples;
  try { samples = metrics.parse(await get('/metrics', { text: true })); } catch (_) { return; }
  const now = Date.now();
  if (lastScrape) {
    const seconds = (now - lastScrape.at) / 1000;
    const applied = metrics.total(samples, 'bulwark_events_applied_total') - metrics.total(lastScrape.samples, 'bulwark_events_applied_total');
    push('throughput', now, Math.max(0, applied / seconds));
    const lat = metrics.window(lastScrape.samples, samples, 'bulwark_http_request_duration_seconds', 0.99, WRITES);
    push('latencyMean', now, lat && lat.mean * 1000);
    push('latencyP99', now, lat && lat.quantile * 1000);
    const fsync = metrics.window(lastScrape.samples, samples, 'bulwark_wal_fsync_duration_seconds', 0.99);
    push('fsyncMean', now, fsync && fsync.mean * 1000);
    push('fsyncP99', now, fsync && fsync.quantile * 1000);
  }
  lastScrape = { at: now, samples };
  render();
}

function push(name, t, v) {
  const s = series[name];
  s.push([t, v ?? null]);
  while (s.length && t - s[0][0] > KEEP) s.shift();
}

let membership = [];
async function pollMembership() {
  try { membership = await membershipChanges(); } catch (_) { return; }
  render();
}

export function render() {
  if ($('view-cluster').hidden) return;
  renderStatus();
  renderMembers();
  renderHealth();
  renderLog();
  draw($('chart-throughput'), [{ name: 'events/s', points: series.throughput }]);
  draw($('chart-latency'), [{ name: 'mean', points: series.latencyMean }, { name: 'p99 ≤', points: series.latencyP99 }]);
  draw($('chart-fsync'), [{ name: 'mean', points: series.fsyncMean }, { name: 'p99 ≤', points: series.fsyncP99 }]);
}

function renderStatus() {
  const s = status || {};
  const set = (id, v) => { $(id).textContent = v ?? '–'; };
  set('node-id', s.node_id);
  set('leader-id', status ? (s.leader_id ?? 'none') : '–');
  $('leader-id').dataset.leader = status && s.leader_id != null ? String(s.leader_id) : '';
  set('term', s.term);
  set('commit-index', s.commit_index);
  set('applied-index', s.applied_index);
  set('accounts-count', s.accounts);
}

function pill(text, kind) { return el('span', { class: 'pill ' + (kind || '') }, text); }

function renderMembers() {
  const rows = (status ? status.members : []).map(m => {
    const sync = m.in_sync === true ? pill('in sync', 'good') : m.in_sync === false ? pill('behind', 'bad') : pill('unknown');
    return el('tr', { 'data-member-id': m.id, 'data-role': m.role },
      el('td', { class: 'num' }, m.id),
      el('td', {}, pill(m.role, m.role === 'leader' ? 'leader' : '')),
      el('td', { class: 'mono' }, m.http_addr ?? ''),
      el('td', { class: 'num' }, m.match_index ?? '–'),
      el('td', { class: 'num' }, m.lag ?? '–'),
      el('td', { class: 'num' }, m.lag_ms ?? '–'),
      el('td', {}, m.role === 'leader' ? '' : sync));
  });
  $('members').replaceChildren(...rows);
  const follower = status && status.role !== 'leader';
  $('members-note').textContent = follower
    ? `— as node ${status.node_id} (${status.role}) sees them; the leader knows each follower's lag`
    : '';
}

function renderHealth() {
  const s = status || {};
  const samples = lastScrape ? lastScrape.samples : [];
  const yes = (v, bad) => v === undefined ? '–' : v ? pill(bad, 'bad') : pill('no', 'good');
  $('disk-full').replaceChildren(yes(s.disk_full, 'yes: writes refused'));
  const slow = samples.find(x => x.name === 'bulwark_slow_disk');
  $('slow-disk').replaceChildren(slow ? yes(slow.value > 0, 'yes') : '–');
  $('log-size').textContent = s.log ? `${s.log.first_index}–${s.log.last_index}, ${(s.log.bytes / 1048576).toFixed(1)} MiB in ${s.log.segments} segments` : '–';
  $('checkpoint-index').textContent = s.checkpoint_index ?? '–';
  $('outbox-outbound').textContent = s.outbox ? s.outbox.outbound : '–';
  $('outbox-dead').replaceChildren(s.outbox ? (s.outbox.dead > 0 ? pill(String(s.outbox.dead), 'warn') : '0') : '–');
  const a = s.archive;
  $('archive').textContent = a ? `${a.target}: index ${a.archived_index ?? '–'}, lag ${a.lag_entries ?? '–'} entries, ${a.failures} failures${a.last_error ? ' (' + a.last_error + ')' : ''}` : 'not archiving';
  const opened = new Map(samples.filter(x => x.name === 'bulwark_relay_breaker_opened_total').map(x => [x.labels.processor, x.value]));
  const rows = samples.filter(x => x.name === 'bulwark_relay_breaker_open').map(x =>
    el('tr', { 'data-processor': x.labels.processor },
      el('td', { class: 'mono' }, x.labels.processor),
      el('td', {}, x.value > 0 ? pill('open', 'bad') : pill('closed', 'good')),
      el('td', { class: 'num' }, opened.get(x.labels.processor) ?? 0)));
  $('breakers').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 3, class: 'muted' }, 'no processor relayed to from this node'))]));
}

function renderLog() {
  const items = leaders.slice().reverse().map(c => el('li', { 'data-leader': c.leader ?? '' },
    `${c.at.toLocaleTimeString()} — `, c.leader === null ? 'no leader' : `node ${c.leader} leads`, c.term != null ? ` (term ${c.term})` : ''));
  $('leader-changes').replaceChildren(...items);
  if (!admin) return;
  const changes = membership.slice().reverse().map(r => el('li', {}, `${r.when} — ${r.change} `, el('span', { class: 'muted' }, `(${r.result}, by ${r.actor ?? 'the cluster'})`)));
  $('membership-changes').replaceChildren(...(changes.length ? changes : [el('li', { class: 'muted' }, 'none recorded')]));
}
