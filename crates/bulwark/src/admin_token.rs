//! The cluster's first admin token: made on the first start of the node that bootstraps a
//! cluster (a single node, or the lowest id among the `--member`s), or given to every member with
//! `--admin-token-file`, and registered through the replicated log once — the state remembers
//! that it was, so a revoked first token never comes back. Printed once, when registered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_ledger::access::{Actor, Control, ControlCommand, ControlResult, TokenId};
use bulwark_ledger::{BatchResults, Operation};
use bulwark_node::{NodeHandle, RequestError};

/// Where a new node keeps the admin token it made.
pub fn default_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The token this node will register, if it has one to.
pub struct Candidate {
    path: PathBuf,
    text: String,
    /// Made by this node (in its data directory): removed again if the cluster has its first
    /// token already, since it would not work.
    made_here: bool,
}

/// The token to register: `--admin-token-file`'s; else one this node made before (a start
/// that stopped before registering it); else, on the node that bootstraps, a new one.
pub fn candidate(
    given: Option<&Path>,
    data_dir: &Path,
    bootstraps: bool,
) -> anyhow::Result<Option<Candidate>> {
    if let Some(path) = given {
        let text = bulwark_token::read_file(path)
            .map_err(|e| anyhow::anyhow!("cannot read --admin-token-file: {e}"))?;
        return Ok(Some(Candidate {
            path: path.into(),
            text,
            made_here: false,
        }));
    }
    let path = default_path(data_dir);
    if path.exists() {
        let text = bulwark_token::read_file(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        return Ok(Some(Candidate {
            path,
            text,
            made_here: true,
        }));
    }
    if !bootstraps {
        return Ok(None);
    }
    let token = bulwark_token::generate();
    let line = format!("{}\n", token.text);
    bulwark_fs::write_file_atomically(&path, line.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(Some(Candidate {
        path,
        text: token.text,
        made_here: true,
    }))
}

/// Proposes the candidate as the cluster's first admin token until the cluster has one, then
/// says so: the token and how to use it when this node's proposal made it, nothing when it was
/// there already (a file this node made for nothing is removed).
pub async fn register(node: NodeHandle, candidate: Candidate, node_id: u64, http: String) {
    let (id, secret_hash) = bulwark_token::parse(&candidate.text).expect("read_file checked it");
    let id = TokenId(id);
    loop {
        let access = node.access();
        if !access.is_loaded() {
            // The state is not loaded yet: whether the cluster has its first token is unknown.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        if access.admin_bootstrapped {
            if access.tokens.contains_key(&id) {
                tracing::info!(token = %id, path = %candidate.path.display(), "the admin token is registered");
            } else {
                already_bootstrapped(&candidate);
            }
            return;
        }
        let operation = Operation::Control(Box::new(Control {
            actor: Actor::Node(node_id),
            command: ControlCommand::BootstrapAdmin { id, secret_hash },
        }));
        match node.write(operation).await {
            Ok(outcome) => match outcome.results {
                BatchResults::Control(ControlResult::Ok) => {
                    announce(&candidate, &http);
                    return;
                }
                BatchResults::Control(_) => {
                    already_bootstrapped(&candidate);
                    return;
                }
                other => unreachable!("a control command answered {other:?}"),
            },
            Err(RequestError::Stopped) => return,
            // Not the leader (the leader, or another member given the same file, registers it),
            // no leader yet, or busy: look again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn already_bootstrapped(candidate: &Candidate) {
    if candidate.made_here {
        if let Err(e) = std::fs::remove_file(&candidate.path) {
            tracing::warn!(path = %candidate.path.display(), error = %e, "cannot remove an unused admin token file");
        }
    }
    tracing::info!(
        "the cluster has its first admin token already; `bulwark token create` makes more"
    );
}

fn announce(candidate: &Candidate, http: &str) {
    let path = candidate.path.display();
    tracing::info!(path = %path, "created the cluster's admin token");
    eprintln!(
        "\n  The cluster's admin token (kept in {path}, readable by this user only):\n\n    \
         {}\n\n  Use it:\n    export BULWARK_TOKEN=$(cat {path})\n    \
         curl -H \"authorization: Bearer $BULWARK_TOKEN\" http://{http}/v1/status\n    \
         bulwark token create --name app --role write   # tokens for applications\n",
        candidate.text
    );
}
