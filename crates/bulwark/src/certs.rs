//! The peer transport's certificates for `bulwark start`, and `bulwark cert`, which makes them
//! for real deployments (a cluster CA, then one certificate per node).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    /// Issue node NODE_ID's peer certificate, and/or the client API's certificate (`--api-san`),
    /// with the CA in CA_DIR, into OUT (the node's `<data-dir>/tls`, or its `--tls-dir`).
    /// Issuing again replaces it: that is how a certificate is rotated (restart the node to use
    /// the new one).
    Issue {
        #[arg(long = "ca")]
        ca_dir: PathBuf,
        /// The cluster's id [default: the one the CA's certificate names].
        #[arg(long)]
        cluster_id: Option<u64>,
        #[arg(long, required_unless_present = "api_san")]
        node_id: Option<u64>,
        /// A name of the client API's certificate (`api.crt`): an IP address or DNS name
        /// clients use to reach this node. Repeat for each.
        #[arg(long = "api-san")]
        api_san: Vec<String>,
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
            api_san,
            out,
        } => issue(ca_dir, *cluster_id, *node_id, api_san, out),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

fn issue(
    ca_dir: &Path,
    cluster_id: Option<u64>,
    node_id: Option<u64>,
    api_names: &[String],
    out: &Path,
) -> Result<(), bulwark_tls::TlsError> {
    let cluster_id = match cluster_id {
        Some(id) => {
            bulwark_tls::check_ca_cluster(ca_dir, id)?;
            id
        }
        None => bulwark_tls::ca_cluster_id(ca_dir)?,
    };
    if let Some(node_id) = node_id {
        bulwark_tls::issue_node(ca_dir, cluster_id, NodeId(node_id), out)?;
        println!(
            "issued node {node_id}'s certificate ({}) into {}",
            bulwark_tls::peer_name(cluster_id, NodeId(node_id)),
            out.display()
        );
    }
    if !api_names.is_empty() {
        bulwark_tls::issue_api(ca_dir, cluster_id, api_names, out)?;
        println!(
            "issued the client API's certificate for {} into {} (clients trust {})",
            api_names.join(", "),
            out.display(),
            ca_dir.join(bulwark_tls::CA_CERT).display()
        );
    }
    Ok(())
}

/// Where a node's certificates live: `--tls-dir`, else `<data-dir>/tls`.
/// The cluster a joining node's certificates were issued for (`bulwark cert issue` put the
/// CA's certificate beside them), so that `--cluster-id` need not repeat it: `None` without
/// `--join`, or without certificates yet.
pub fn issued_cluster(args: &StartArgs) -> Option<u64> {
    let dir = tls_dir(args);
    (args.join && dir.join(bulwark_tls::CA_CERT).exists())
        .then(|| bulwark_tls::ca_cluster_id(&dir).ok())
        .flatten()
}

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

/// The client API's TLS. Beyond loopback it is required: from `api.crt`/`api.key` in the TLS
/// directory, issued here by a node that is its own CA, else the start is refused with the
/// command that makes them; `--insecure` serves plain HTTP instead, with a warning at every
/// start. On loopback it is on only with `--api-tls` (plain HTTP by default, as a laptop's
/// `curl http://127.0.0.1:7070` expects).
pub fn api_tls(
    args: &StartArgs,
    identity: &Identity,
    listen: SocketAddr,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let beyond_loopback = !listen.ip().is_loopback();
    if !beyond_loopback && !args.api_tls {
        return Ok(None);
    }
    if beyond_loopback && args.insecure && !args.api_tls {
        tracing::warn!(%listen, "INSECURE: the client API listens beyond loopback in plain HTTP (--insecure): anyone on the network can read and change its traffic. Issue api.crt with `bulwark cert issue --api-san` and start without --insecure");
        return Ok(None);
    }
    let dir = tls_dir(args);
    if !bulwark_tls::has_api_cert(&dir) {
        let own_ca =
            args.members.is_empty() && !args.join && dir.join(bulwark_tls::CA_KEY).exists();
        if !own_ca {
            anyhow::bail!("{}", missing_api_certificate(&dir, identity, listen));
        }
        let names = api_names(listen);
        bulwark_tls::issue_api(&dir, identity.cluster_id, &names, &dir)
            .map_err(|e| anyhow::anyhow!("cannot issue the client API's certificate: {e}"))?;
        tracing::info!(names = ?names, dir = %dir.display(), "issued the client API's certificate with this node's CA (more names: `bulwark cert issue --ca {} --api-san NAME --out {}`)", dir.display(), dir.display());
    }
    let config = bulwark_tls::api_server_config(&dir)
        .map_err(|e| anyhow::anyhow!("cannot load the client API's certificate: {e}"))?;
    let ca = dir.join(bulwark_tls::CA_CERT);
    tracing::info!(ca = %ca.display(), "the client API is served over TLS; clients verify it with this CA certificate (`bulwark --ca`, `curl --cacert`)");
    eprintln!(
        "client API over TLS: give clients the CA certificate {}",
        ca.display()
    );
    Ok(Some(config))
}

/// The names a node that is its own CA puts in its API certificate: the IP it listens on (all
/// of loopback's when it listens on every address), `localhost`, and the host's name.
fn api_names(listen: SocketAddr) -> Vec<String> {
    let mut names = Vec::new();
    if listen.ip().is_unspecified() {
        names.extend(["127.0.0.1".to_string(), "::1".to_string()]);
    } else {
        names.push(listen.ip().to_string());
    }
    names.push("localhost".to_string());
    if let Some(host) = host_name().filter(|h| !names.contains(h)) {
        names.push(host);
    }
    names
}

fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..end]).ok()?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then(|| name.to_string())
}

fn missing_api_certificate(dir: &Path, identity: &Identity, listen: SocketAddr) -> String {
    let why = if listen.ip().is_loopback() {
        format!("--api-tls serves the client API on {listen} over TLS")
    } else {
        format!("the client API listens on {listen}, beyond loopback, and is served only over TLS there")
    };
    let otherwise = if listen.ip().is_loopback() {
        "or start without --api-tls to serve plain HTTP on loopback"
    } else {
        "or start with --insecure to serve plain HTTP (a private test network only)"
    };
    format!(
        "no client API certificate in {dir}: {why}. Make one with `bulwark cert issue --ca \
         CA_DIR --cluster-id {cluster} --api-san ADDRESS --out {dir}` (repeat --api-san for \
         every IP address or DNS name clients use), {otherwise}",
        dir = dir.display(),
        cluster = identity.cluster_id,
    )
}
