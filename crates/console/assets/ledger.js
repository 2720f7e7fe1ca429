// Accounts and transfers: an account's balances (GET /v1/accounts/{id}), its transfers
// (GET /v1/accounts/{id}/transfers, paged by timestamp, either order) and balance history
// (GET /v1/accounts/{id}/balances, for accounts created with `history`), and a transfer's page
// (GET /v1/transfers/{id}) with its pending status.
import { $, get, qs, el, time } from './api.js';
import { draw } from './chart.js';

const PAGE = 20;
const BALANCES = ['debits_pending', 'debits_posted', 'credits_pending', 'credits_posted'];
let account = null; // the id on show
let history = { cursors: [null], at: 0, next: null };
let balances = { cursors: [null], at: 0, next: null };

export function wire() {
  $('account-search').addEventListener('submit', (e) => { e.preventDefault(); location.hash = `#/accounts/${$('account-search-id').value.trim()}`; });
  $('transfer-search').addEventListener('submit', (e) => { e.preventDefault(); location.hash = `#/transfers/${$('transfer-search-id').value.trim()}`; });
  $('history-order').addEventListener('change', () => { history = { cursors: [null], at: 0 }; loadHistory(); });
  $('history-first').addEventListener('click', () => { history = { cursors: [null], at: 0 }; loadHistory(); });
  $('history-next').addEventListener('click', () => { history.cursors[history.at + 1] = history.next; history.at += 1; loadHistory(); });
  $('balances-first').addEventListener('click', () => { balances = { cursors: [null], at: 0 }; loadBalances(); });
  $('balances-next').addEventListener('click', () => { balances.cursors[balances.at + 1] = balances.next; balances.at += 1; loadBalances(); });
}

function failed(tbody, columns, e) {
  tbody.replaceChildren(el('tr', {}, el('td', { colspan: columns, class: 'error' }, e.message)));
}

export async function openAccount(id) {
  $('account').hidden = true;
  if (!id) return;
  $('account-search-id').value = id;
  account = id;
  let a;
  try {
    a = await get(`/v1/accounts/${encodeURIComponent(id)}`);
  } catch (e) {
    $('account').hidden = false;
    $('account-id').textContent = `${id}: ${e.status === 404 ? 'no such account' : e.message}`;
    for (const b of BALANCES) $('balance-' + b.replace('_', '-')).textContent = '';
    return;
  }
  $('account').hidden = false;
  $('account-id').textContent = a.id;
  $('account').dataset.accountId = a.id;
  $('account-ledger').textContent = a.ledger;
  $('account-code').textContent = a.code;
  $('account-flags').textContent = a.flags.join(', ') || 'none';
  $('account-timestamp').textContent = time(a.timestamp);
  for (const b of BALANCES) $('balance-' + b.replace('_', '-')).textContent = a[b];
  history = { cursors: [null], at: 0 };
  balances = { cursors: [null], at: 0 };
  await Promise.all([loadHistory(), loadBalances()]);
}

async function loadHistory() {
  const newest = $('history-order').value === 'newest';
  const cursor = history.cursors[history.at];
  const params = { limit: PAGE, reversed: newest ? 'true' : undefined, [newest ? 'before' : 'after']: cursor };
  try {
    const page = await get(`/v1/accounts/${encodeURIComponent(account)}/transfers` + qs(params));
    history.next = newest ? page.next_before : page.next_after;
    const rows = page.transfers.map(t => el('tr', { 'data-transfer-id': t.id },
      el('td', {}, el('a', { href: `#/transfers/${t.id}` }, t.id)), el('td', {}, time(t.timestamp)),
      el('td', {}, el('a', { href: `#/accounts/${t.debit_account_id}` }, t.debit_account_id)),
      el('td', {}, el('a', { href: `#/accounts/${t.credit_account_id}` }, t.credit_account_id)),
      el('td', { class: 'num' }, t.amount), el('td', {}, t.flags.join(', ')), el('td', { class: 'num' }, t.code)));
    $('history').replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 7, class: 'muted' }, 'no transfers'))]));
  } catch (e) {
    history.next = null;
    failed($('history'), 7, e);
  }
  $('history-next').disabled = !history.next;
  $('history-page').textContent = `page ${history.at + 1}`;
}

async function loadBalances() {
  const params = { limit: PAGE, after: balances.cursors[balances.at] };
  $('balances-note').textContent = '';
  try {
    const page = await get(`/v1/accounts/${encodeURIComponent(account)}/balances` + qs(params));
    balances.next = page.next_after;
    const rows = page.balances.map(b => el('tr', {}, el('td', {}, time(b.timestamp)),
      ...BALANCES.map(k => el('td', { class: 'num' }, b[k]))));
    $('balance-history').replaceChildren(...rows);
    chart(page.balances);
  } catch (e) {
    balances.next = null;
    $('balance-history').replaceChildren();
    $('chart-balance').replaceChildren();
    $('balances-note').textContent = e.code === 'history_not_kept'
      ? 'This account was created without the history flag: only its current balances are kept.'
      : e.message;
  }
  $('balances-next').disabled = !balances.next;
  $('balances-page').textContent = `page ${balances.at + 1}`;
}

// The page's posted credits and debits, one step per change (amounts as floats: a picture).
function chart(page) {
  if (page.length < 2) { $('chart-balance').replaceChildren(); return; }
  const last = page.length - 1;
  draw($('chart-balance'), [
    { name: 'credits posted', points: page.map((b, i) => [i, Number(b.credits_posted)]) },
    { name: 'debits posted', points: page.map((b, i) => [i, Number(b.debits_posted)]) },
  ], { span: last, now: last, left: 'first change of the page', right: `change ${page.length}` });
}

export async function openTransfer(id) {
  $('transfer').hidden = true;
  if (!id) return;
  $('transfer-search-id').value = id;
  $('transfer').hidden = false;
  $('transfer').dataset.transferId = id;
  let t;
  try {
    t = await get(`/v1/transfers/${encodeURIComponent(id)}`);
  } catch (e) {
    $('transfer-id').textContent = `${id}: ${e.status === 404 ? 'no such transfer' : e.message}`;
    $('transfer-fields').replaceChildren();
    return;
  }
  $('transfer-id').textContent = t.id;
  const link = (v) => el('a', { href: `#/accounts/${v}` }, v);
  const fields = [
    ['Debit account', link(t.debit_account_id)], ['Credit account', link(t.credit_account_id)],
    ['Amount', t.amount], ['Ledger', t.ledger], ['Code', t.code], ['Flags', t.flags.join(', ') || 'none'],
    ['Pending id', t.pending_id === '0' ? '–' : el('a', { href: `#/transfers/${t.pending_id}` }, t.pending_id)],
    ['Timeout (s)', t.timeout], ['Time', time(t.timestamp)],
    ['Pending status', t.pending_status ?? '–'],
    ['User data 128', t.user_data_128 ?? '0'], ['User data 64', t.user_data_64 ?? '0'], ['User data 32', t.user_data_32 ?? '0'],
  ];
  $('transfer-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { 'data-field': k.toLowerCase().replace(/ /g, '-') }, v)]));
}
