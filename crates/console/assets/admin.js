// What only an admin token sees: the replicated audit trail (GET /v1/audit), the membership
// changes in it, and the dead-letter queue (GET /v1/outbox/dead).
import { $, get, qs, el, time } from './api.js';

const PAGE = 50;

function detail(d) {
  if (d === null || d === undefined) return '';
  if (typeof d !== 'object') return String(d);
  return Object.entries(d).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
}

// The membership changes of the audit trail, read on from where the last call stopped.
let seen = { after: null, changes: [] };
export async function membershipChanges() {
  for (let pages = 0; pages < 20; pages++) {
    const page = await get('/v1/audit' + qs({ after: seen.after, limit: 1000 }));
    for (const r of page.records) {
      if (r.action === 'membership_changed') {
        seen.changes.push({ when: time(r.timestamp), change: detail(r.detail.change), result: r.result, actor: r.actor });
      }
      seen.after = `${r.timestamp}:${r.index}`;
    }
    if (!page.next_after) break;
  }
  seen.changes = seen.changes.slice(-50);
  return seen.changes;
}

// A view paged by `next_after` cursors: `load(after)` answers {rows, next}.
function pager(prefix, load) {
  let cursors = [null], at = 0, next = null;
  async function show() {
    const tbody = $(prefix);
    try {
      const page = await load(cursors[at]);
      next = page.next;
      tbody.replaceChildren(...(page.rows.length ? page.rows : [el('tr', {}, el('td', { colspan: 8, class: 'muted' }, 'nothing here'))]));
    } catch (e) {
      next = null;
      tbody.replaceChildren(el('tr', {}, el('td', { colspan: 8, class: 'error' }, e.message)));
    }
    $(prefix + '-next').disabled = !next;
  }
  $(prefix + '-first').addEventListener('click', () => { cursors = [null]; at = 0; show(); });
  $(prefix + '-next').addEventListener('click', () => { cursors[at + 1] = next; at += 1; show(); });
  return () => { cursors = [null]; at = 0; return show(); };
}

let audit = null, dead = null;

export function wire() {
  audit = pager('audit', async (after) => {
    const page = await get('/v1/audit' + qs({ after, limit: PAGE }));
    return {
      next: page.next_after,
      rows: page.records.map(r => el('tr', { 'data-action': r.action },
        el('td', {}, time(r.timestamp)), el('td', { class: 'num' }, r.index), el('td', { class: 'mono' }, r.actor ?? ''),
        el('td', {}, r.action), el('td', {}, detail(r.detail)), el('td', {}, r.result))),
    };
  });
  dead = pager('dlq', async (after) => {
    const page = await get('/v1/outbox/dead' + qs({ after, limit: PAGE }));
    return {
      next: page.next_after,
      rows: page.payments.map(p => el('tr', { 'data-payment-id': p.payment_id },
        el('td', {}, el('a', { href: `#/transfers/${p.payment_id}` }, p.payment_id)),
        el('td', {}, el('a', { href: `#/accounts/${p.debit_account_id}` }, p.debit_account_id)),
        el('td', { class: 'num' }, p.amount), el('td', { class: 'mono' }, p.processor_account_id),
        el('td', {}, time(p.dead_at)), el('td', {}, `${p.reason}${p.detail ? ': ' + p.detail : ''}`),
        el('td', { class: 'num' }, p.retries))),
    };
  });
}

export function openAudit() { return audit(); }
export function openDeadLetters() { return dead(); }
