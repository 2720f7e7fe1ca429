//! The peer transport's certificates for `bulwark start`, and `bulwark cert`, which makes them
//! for real deployments (a cluster CA, then one certificate per node).

use std::path::{Path, PathBuf};

use bulwark_ids::NodeId;
use bulwark_node::identity::Identity;
use bulwark_tls::PeerTls;

use crate::server::StartArgs;

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Create a cluster CA (`ca.crt`, `ca.key`) in DIR. Keep `ca.key` safe: whoever holds it can
    /// make certificates every node trusts.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
    },
    /// Issue node NODE_ID's certificate with the CA in CA_DIR, into OUT (the node's
    /// `<data-dir>/tls`, or its `--tls-dir`). Issuing again replaces it: that is how a node's
    /// certificate is rotated (restart the node to use the new one).
    Issue {
        #[arg(long = "ca")]
        ca_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        cluster_id: u64,
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: CertCommand) -> std::process::ExitCode {
    let result = match &cmd {
        CertCommand::Init { dir, cluster_id } => {
            bulwark_tls::create_ca(dir, *cluster_id).map(|()| {
                println!(
                    "created the CA of cluster {cluster_id} in {}",
                    dir.display()
                );
            })
        }
        CertCommand::Issue {
            ca_dir,
            cluster_id,
            node_id,
            out,
        } => bulwark_tls::issue_node(ca_dir, *cluster_id, NodeId(*node_id), out).map(|()| {
            println!(
                "issued node {node_id}'s certificate ({}) into {}",
                bulwark_tls::peer_name(*cluster_id, NodeId(*node_id)),
                out.display()
            );
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Where a node's certificates live: `--tls-dir`, else `<data-dir>/tls`.
pub fn tls_dir(args: &StartArgs) -> PathBuf {
    args.tls_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("tls"))
}

/// This node's peer TLS. A node started alone, without certificates, is a cluster of its own
/// and becomes its own CA (the CA key stays in its TLS directory, to issue the certificates of
/// nodes added later). A member needs a certificate from its cluster's CA: without one it is
/// refused, with the command that makes one.
pub fn peer_tls(args: &StartArgs, identity: &Identity) -> anyhow::Result<PeerTls> {
    let dir = tls_dir(args);
    let node = NodeId(identity.node_id);
    if !bulwark_tls::has_node_cert(&dir) {
        if !args.members.is_empty() || args.join {
            anyhow::bail!("{}", missing_certificate(&dir, identity));
        }
        bulwark_tls::provision_node(&dir, identity.cluster_id, node, &dir)
            .map_err(|e| anyhow::anyhow!("cannot create this node's certificates: {e}"))?;
        tracing::info!(dir = %dir.display(), "created a cluster CA and this node's certificate (nodes added later need one from this CA: `bulwark cert issue --ca {}`)", dir.display());
    }
    PeerTls::load(&dir, identity.cluster_id, node)
        .map_err(|e| anyhow::anyhow!("cannot load this node's certificates: {e}"))
}

fn missing_certificate(dir: &Path, identity: &Identity) -> String {
    format!(
        "no peer certificate in {dir}: a cluster member needs one from its cluster's CA. Make \
         one with `bulwark cert issue --ca CA_DIR --cluster-id {cluster} --node-id {node} --out \
         {dir}` (a new cluster's CA: `bulwark cert init --dir CA_DIR --cluster-id {cluster}`; a \
         cluster grown from a single node: CA_DIR is that node's <data-dir>/tls)",
        dir = dir.display(),
        cluster = identity.cluster_id,
        node = identity.node_id,
    )
}
