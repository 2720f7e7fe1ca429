// The console's shell: sign-in, the token's role, the views and the address (#/view/...) that
// picks one. Each view's data comes from the JSON API (api.js) with the signed-in token.
import { $, get, token, setToken, clearToken, whenUnauthorized } from './api.js';
import * as cluster from './cluster.js';
import * as ledger from './ledger.js';
import * as admin from './admin.js';

const VIEWS = ['signin', 'cluster', 'accounts', 'transfers', 'audit', 'dlq'];
const RANK = { read: 1, write: 2, admin: 3 };
let me = null; // {token, role} of the signed-in token

function allows(role) { return me && RANK[me.role] >= RANK[role]; }

function show(view) {
  for (const v of VIEWS) $('view-' + v).hidden = v !== view;
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.dataset.view === view);
  document.body.dataset.view = view;
}

function signOut(message) {
  clearToken();
  me = null;
  cluster.stop();
  $('topbar').hidden = true;
  $('signin-error').textContent = message || '';
  show('signin');
}

// Asks the node who the token is; on success shows what its role allows.
async function signIn() {
  try {
    me = await get('/v1/whoami');
  } catch (e) {
    signOut(e.status === 401 ? 'The node does not know this token (unknown, revoked or mistyped).' : e.message);
    return;
  }
  $('whoami').textContent = `token ${me.token} · ${me.role}`;
  document.body.dataset.role = me.role;
  for (const n of document.querySelectorAll('[data-needs]')) n.hidden = !allows(n.dataset.needs);
  $('topbar').hidden = false;
  cluster.start({ admin: allows('admin') });
  route();
}

// The view of the address: #/cluster, #/accounts/<id>, #/transfers/<id>, #/audit, #/dlq.
function route() {
  if (!me) return show('signin');
  const [view, id] = location.hash.replace(/^#\/?/, '').split('/');
  switch (view) {
    case 'accounts': show('accounts'); return ledger.openAccount(id);
    case 'transfers': show('transfers'); return ledger.openTransfer(id);
    case 'audit': if (allows('admin')) { show('audit'); return admin.openAudit(); } break;
    case 'dlq': if (allows('admin')) { show('dlq'); return admin.openDeadLetters(); } break;
    case 'cluster': show('cluster'); return cluster.render();
  }
  location.hash = '#/cluster';
}

whenUnauthorized(() => signOut('The token was refused (revoked?): sign in again.'));
window.addEventListener('hashchange', route);
$('signin-form').addEventListener('submit', (event) => {
  event.preventDefault();
  setToken($('signin-token').value.trim());
  $('signin-token').value = '';
  signIn();
});
$('sign-out').addEventListener('click', () => signOut());
ledger.wire();
admin.wire();
if (token()) signIn(); else show('signin');
