//! The API's view of the tokens: what the state store holds, copied out by the node loop each
//! time it changes, so that checking a request's token never waits for the loop.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use bulwark_ledger::access::{Role, TokenId};
use bulwark_store::StateStore;

/// The tokens as of the last change the loop saw.
#[derive(Debug, Default)]
pub struct AccessView {
    /// The state store's `tokens_generation` this view was taken at.
    pub generation: u64,
    /// Per token id: its role and the SHA-256 of its secret.
    pub tokens: HashMap<TokenId, (Role, [u8; 32])>,
    /// The cluster's first admin token was created (it may since have been revoked).
    pub admin_bootstrapped: bool,
}

impl AccessView {
    /// Whether the loop published the store's tokens yet: until then a node that just started
    /// knows no token, and must say it is starting rather than call a valid token invalid.
    pub fn is_loaded(&self) -> bool {
        self.generation != 0
    }
}

pub(crate) type SharedAccess = Arc<RwLock<Arc<AccessView>>>;

/// Copies the store's tokens into `shared` if they changed since it was last published.
pub(crate) fn publish(shared: &SharedAccess, store: &StateStore) {
    let generation = store.tokens_generation();
    if shared.read().expect("access view lock").generation == generation {
        return;
    }
    use bulwark_ledger::LedgerStore;
    let view = AccessView {
        generation,
        tokens: store
            .tokens()
            .map(|t| (t.id, (t.role, t.secret_hash)))
            .collect(),
        admin_bootstrapped: store.admin_bootstrapped(),
    };
    *shared.write().expect("access view lock") = Arc::new(view);
}
