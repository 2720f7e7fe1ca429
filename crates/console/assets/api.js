// The JSON API as the console asks it: the signed-in token as a Bearer header, kept in this
// tab's sessionStorage only. A 401 signs out (the token is gone or revoked).
const KEY = 'bulwark-token';

export function token() { return sessionStorage.getItem(KEY); }
export function setToken(t) { sessionStorage.setItem(KEY, t); }
export function clearToken() { sessionStorage.removeItem(KEY); }

// Set by app.js: what to do when the node refuses the token.
let onUnauthorized = () => {};
export function whenUnauthorized(f) { onUnauthorized = f; }

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// GET `path`; answers the parsed JSON (or text for `/metrics`), throws ApiError otherwise.
export async function get(path, { text = false } = {}) {
  let response;
  try {
    response = await fetch(path, { headers: { authorization: `Bearer ${token() || ''}` }, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `this node does not answer (${e.message})`);
  }
  if (response.ok) return text ? response.text() : response.json();
  let body = {};
  try { body = await response.json(); } catch (_) { /* not JSON: keep the status */ }
  const error = new ApiError(response.status, body.error || 'http_' + response.status, body.message || response.statusText);
  if (response.status === 401) onUnauthorized(error);
  throw error;
}

// The query string of `params`, leaving out what is unset.
export function qs(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? '?' + s : '';
}

// A ledger timestamp (nanoseconds since the epoch, a decimal string) as a readable UTC time.
export function time(ns) {
  if (ns === undefined || ns === null) return '';
  const ms = Number(BigInt(ns) / 1000000n);
  return new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
}

// A small DOM builder: el('td', {class: 'num'}, 'text', child, ...).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === 'class') node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c ?? ''));
  return node;
}

export function $(id) { return document.getElementById(id); }
