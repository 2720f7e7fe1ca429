//! `bulwark-tls` owns the cluster's certificates: a cluster CA, node certificates that name their
//! node and cluster, the files they live in, and the rustls configurations of the peer transport
//! (TLS 1.3 only, both sides authenticated by the cluster CA).
//!
//! A node's certificate names it as the DNS name `node-<id>.c<cluster id in hex>.bulwark`
//! ([`peer_name`]). A dialer verifies that the node it dials holds that name for the id it meant
//! to reach; an acceptor verifies the dialer's certificate chains to the cluster CA, and then that
//! it names the node id the dialer claims (the transport drops everything from a connection whose
//! claim does not match). A certificate of another cluster names another cluster id, so it never
//! passes for one of ours even under the same CA.
//!
//! # Files (a directory, by default `<data-dir>/tls`; mode 0700, files 0600)
//! - `ca.crt`: the cluster CA's certificate (PEM), on every node;
//! - `ca.key`: the CA's private key, only where certificates are issued (`bulwark cert`, or the
//!   first start of a single node, which is its own CA);
//! - `node.crt`, `node.key`: this node's certificate and private key.
//!
//! Keys are ECDSA P-256. Every file is replaced crash-safely (`bulwark_fs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bulwark_ids::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The CA's certificate, on every node.
pub const CA_CERT: &str = "ca.crt";
/// The CA's private key, only where certificates are issued.
pub const CA_KEY: &str = "ca.key";
/// This node's certificate.
pub const NODE_CERT: &str = "node.crt";
/// This node's private key.
pub const NODE_KEY: &str = "node.key";

/// The client API's certificate (its subject alternative names: the addresses clients use).
pub const API_CERT: &str = "api.crt";
/// The client API certificate's private key.
pub const API_KEY: &str = "api.key";
/// The ALPN protocol of the framed Raft stream on the peer port (its wire version is the
/// transport's `PROTOCOL_VERSION`; a dialer of another version finds no common protocol).
pub const ALPN_RAFT: &[u8] = b"bulwark-raft/3";
/// The ALPN protocol of the internal HTTP (HTTP/2) on the peer port: snapshots and forwarded
/// writes, only between holders of the cluster's certificates.
pub const ALPN_H2: &[u8] = b"h2";

/// Years a cluster CA is valid for.
const CA_YEARS: i32 = 10;
/// Years a node certificate is valid for (rotate with `bulwark cert issue`).
const NODE_YEARS: i32 = 2;

/// Why certificates could not be created, read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a PEM {what}", path.display())]
    Pem { path: PathBuf, what: &'static str },
    #[error("{} already exists: refusing to replace a cluster CA", path.display())]
    CaExists { path: PathBuf },
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("the CA certificate is not usable: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("{} does not name {name} (node {node} of cluster {cluster_id}): {reason}", path.display())]
    WrongOwner {
        path: PathBuf,
        name: String,
        node: u64,
        cluster_id: u64,
        reason: webpki::Error,
    },
    #[error(
        "the peer's certificate does not name node {claimed} of cluster {cluster_id}: {reason}"
    )]
    PeerMismatch {
        claimed: u64,
        cluster_id: u64,
        reason: webpki::Error,
    },
    #[error("the peer presented no certificate")]
    NoPeerCertificate,
    #[error("an API certificate needs at least one name (an IP address or a DNS name)")]
    NoApiNames,
    #[error("the peer's certificate names no node of cluster {cluster_id}")]
    NoNodeName { cluster_id: u64 },
    #[error("{} is not a Bulwark cluster CA's certificate (its subject names no cluster)", path.display())]
    NotAClusterCa { path: PathBuf },
    #[error("{} is the CA of cluster {found}, not of cluster {asked}", path.display())]
    OtherCluster {
        path: PathBuf,
        found: u64,
        asked: u64,
    },
}

/// The DNS name a node's certificate holds: `node-<id>.c<cluster id in hex>.bulwark`.
pub fn peer_name(cluster_id: u64, node: NodeId) -> String {
    format!("node-{}.c{cluster_id:x}.bulwark", node.0)
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` private to its owner (0700), if it is not there yet.
fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    bulwark_fs::create_dir_all_durably(dir).map_err(|e| io_error(dir)(e.into()))
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    bulwark_fs::write_file_atomically(path, text.as_bytes())
        .map_err(|e| io_error(path)(std::io::Error::from(e)))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(io_error(path))
}

/// This year (UTC), for certificate validity; `not_before` starts a year earlier, so that a
/// node whose clock is somewhat behind still accepts a fresh certificate.
fn this_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    1970 + (secs / 31_556_952) as i32
}

/// The CA's parameters: the same for a cluster id every time, so that a CA loaded from its key
/// signs as the one that was created (same subject, same key).
fn ca_params(cluster_id: u64) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("Bulwark cluster {cluster_id:x} CA"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year() + CA_YEARS, 1, 1);
    Ok(params)
}

/// Creates a new cluster CA in `dir` (`ca.crt`, `ca.key`). Refuses to replace an existing one:
/// every certificate it issued would stop working.
pub fn create_ca(dir: &Path, cluster_id: u64) -> Result<(), TlsError> {
    create_private_dir(dir)?;
    let key_path = dir.join(CA_KEY);
    if key_path.exists() || dir.join(CA_CERT).exists() {
        return Err(TlsError::CaExists { path: key_path });
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(cluster_id)?.self_signed(&key)?;
    write_private(&key_path, &key.serialize_pem())?;
    write_private(&dir.join(CA_CERT), &cert.pem())
}

/// The cluster whose CA `ca_dir` holds, read from its certificate's subject (`Bulwark cluster
/// <id in hex> CA`, as [`create_ca`] writes it).
pub fn ca_cluster_id(ca_dir: &Path) -> Result<u64, TlsError> {
    let path = ca_dir.join(CA_CERT);
    let pem = read(&path)?;
    let der = CertificateDer::from_pem_slice(&pem).map_err(|_| TlsError::Pem {
        path: path.clone(),
        what: "certificate",
    })?;
    let not_ca = || TlsError::NotAClusterCa { path: path.clone() };
    let prefix = b"Bulwark cluster ";
    let at = der
        .windows(prefix.len())
        .position(|w| w == prefix)
        .ok_or_else(not_ca)?;
    let rest = &der[at + prefix.len()..];
    let hex_len = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if !rest[hex_len..].starts_with(b" CA") {
        return Err(not_ca());
    }
    let hex = std::str::from_utf8(&rest[..hex_len]).map_err(|_| not_ca())?;
    u64::from_str_radix(hex, 16).map_err(|_| not_ca())
}

/// Refuses a cluster id the CA in `ca_dir` is not for: certificates signed as another
/// cluster's CA are trusted by no node of either (what `bulwark cert issue --cluster-id`
/// checks).
pub fn check_ca_cluster(ca_dir: &Path, cluster_id: u64) -> Result<(), TlsError> {
    let found = ca_cluster_id(ca_dir)?;
    if found != cluster_id {
        return Err(TlsError::OtherCluster {
            path: ca_dir.join(CA_CERT),
            found,
            asked: cluster_id,
        });
    }
    Ok(())
}

/// The CA of `ca_dir`, loaded to sign with: its key, and its certificate rebuilt from the same
/// parameters (same subject, same key), plus the certificate's PEM as written.
fn load_ca(
    ca_dir: &Path,
    cluster_id: u64,
) -> Result<(rcgen::Certificate, KeyPair, Vec<u8>), TlsError> {
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_key_pem = String::from_utf8_lossy(&read(&ca_key_path)?).into_owned();
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|_| TlsError::Pem {
        path: ca_key_path,
        what: "private key",
    })?;
    let ca_cert_pem = read(&ca_dir.join(CA_CERT))?;
    let ca = ca_params(cluster_id)?.self_signed(&ca_key)?;
    Ok((ca, ca_key, ca_cert_pem))
}

/// Issues the client API's certificate with the CA in `ca_dir`, naming `names` (IP addresses
/// and DNS names: every address clients reach the node at), into `out` as `api.crt`/`api.key`,
/// with the CA's certificate beside it (clients are given that one). Replaces one already there.
pub fn issue_api(
    ca_dir: &Path,
    cluster_id: u64,
    names: &[String],
    out: &Path,
) -> Result<(), TlsError> {
    let first = names.first().ok_or(TlsError::NoApiNames)?;
    let (ca, ca_key, ca_cert_pem) = load_ca(ca_dir, cluster_id)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, first.clone());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year() + NODE_YEARS, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    create_private_dir(out)?;
    if out != ca_dir {
        write_private(&out.join(CA_CERT), &String::from_utf8_lossy(&ca_cert_pem))?;
    }
    write_private(&out.join(API_KEY), &key.serialize_pem())?;
    write_private(&out.join(API_CERT), &cert.pem())
}

/// Whether `dir` holds the client API's certificate.
pub fn has_api_cert(dir: &Path) -> bool {
    dir.join(API_CERT).exists()
}

/// The client API's TLS server configuration from `dir`'s `api.crt` and `api.key`: TLS 1.2 and
/// 1.3 (clients are not ours to choose), no client certificates (clients authenticate with
/// requests, not connections), HTTP/1.1 only.
pub fn api_server_config(dir: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = load_cert(&dir.join(API_CERT))?;
    let key_path = dir.join(API_KEY);
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|_| TlsError::Pem {
        path: key_path,
        what: "private key",
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts only the CA certificate in `ca_file` (`ca.crt`): what the
/// command-line client uses for an `https://` node.
pub fn api_client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(load_cert(ca_file)?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Issues node `node`'s certificate with the CA in `ca_dir` and writes it, its key and the CA's
/// certificate into `out` (created 0700 if missing; `out` may be `ca_dir`). A certificate
/// already in `out` is replaced: that is how a certificate is rotated.
pub fn issue_node(
    ca_dir: &Path,
    cluster_id: u64,
    node: NodeId,
    out: &Path,
) -> Result<(), TlsError> {
    let (ca, ca_key, ca_cert_pem) = load_ca(ca_dir, cluster_id)?;
    let name = peer_name(cluster_id, node);
    let mut params = CertificateParams::new(vec![name.clone()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(this_year() - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(this_year() + NODE_YEARS, 1, 1);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    create_private_dir(out)?;
    if out != ca_dir {
        write_private(&out.join(CA_CERT), &String::from_utf8_lossy(&ca_cert_pem))?;
    }
    write_private(&out.join(NODE_KEY), &key.serialize_pem())?;
    write_private(&out.join(NODE_CERT), &cert.pem())
}

/// The CA in `ca_dir`, created if it is not there yet (callers of one process never race to
/// create two), and node `node`'s certificate issued into `out`: how a cluster started by one
/// command (`bulwark cluster local`, the test and chaos harness) gets its certificates.
pub fn provision_node(
    ca_dir: &Path,
    cluster_id: u64,
    node: NodeId,
    out: &Path,
) -> Result<(), TlsError> {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    {
        let _one_at_a_time = CREATING.lock().unwrap_or_else(|e| e.into_inner());
        if !ca_dir.join(CA_KEY).exists() {
            create_ca(ca_dir, cluster_id)?;
        }
    }
    issue_node(ca_dir, cluster_id, node, out)
}

/// Whether `dir` holds a node certificate.
pub fn has_node_cert(dir: &Path) -> bool {
    dir.join(NODE_CERT).exists()
}

/// The peer transport's TLS: this node's certificate and key, the cluster CA as the only root,
/// TLS 1.3 only, client certificates required. The server offers both protocols of the peer
/// port ([`ALPN_RAFT`], [`ALPN_H2`]); each client configuration asks for one.
#[derive(Clone)]
pub struct PeerTls {
    cluster_id: u64,
    pub server: Arc<ServerConfig>,
    /// For the Raft stream ([`ALPN_RAFT`]).
    pub client: Arc<ClientConfig>,
    /// For internal HTTP ([`ALPN_H2`]).
    pub http_client: Arc<ClientConfig>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads node `node`'s certificate, key and the cluster CA from `dir`, and checks that the
    /// certificate names this node of this cluster.
    pub fn load(dir: &Path, cluster_id: u64, node: NodeId) -> Result<PeerTls, TlsError> {
        let ca = load_cert(&dir.join(CA_CERT))?;
        let cert_path = dir.join(NODE_CERT);
        let cert = load_cert(&cert_path)?;
        let key_path = dir.join(NODE_KEY);
        let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|_| TlsError::Pem {
            path: key_path,
            what: "private key",
        })?;
        check_names(&cert, cluster_id, node).map_err(|(name, reason)| TlsError::WrongOwner {
            path: cert_path,
            name,
            node: node.0,
            cluster_id,
            reason,
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca)?;
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.clone()], key.clone_key())?;
        server.alpn_protocols = vec![ALPN_RAFT.to_vec(), ALPN_H2.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![cert], key)?;
        let mut http_client = client.clone();
        client.alpn_protocols = vec![ALPN_RAFT.to_vec()];
        http_client.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(PeerTls {
            cluster_id,
            server: Arc::new(server),
            client: Arc::new(client),
            http_client: Arc::new(http_client),
        })
    }

    /// The name a dialer expects node `peer`'s certificate to hold.
    pub fn server_name(&self, peer: NodeId) -> ServerName<'static> {
        ServerName::try_from(peer_name(self.cluster_id, peer)).expect("a valid DNS name")
    }

    /// Checks that a dialer's certificate (already verified to chain to the cluster CA by the
    /// handshake) names the node it `claimed` to be.
    pub fn check_peer(
        &self,
        certs: Option<&[CertificateDer<'_>]>,
        claimed: NodeId,
    ) -> Result<(), TlsError> {
        let cert = certs
            .and_then(|c| c.first())
            .ok_or(TlsError::NoPeerCertificate)?;
        check_names(cert, self.cluster_id, claimed).map_err(|(_, reason)| TlsError::PeerMismatch {
            claimed: claimed.0,
            cluster_id: self.cluster_id,
            reason,
        })
    }
}

impl PeerTls {
    /// The node a dialer's certificate (already verified to chain to the cluster CA by the
    /// handshake) names: a connection without a hello (internal HTTP) is the node its
    /// certificate says, and only a node of this cluster.
    pub fn peer_node(&self, certs: Option<&[CertificateDer<'_>]>) -> Result<NodeId, TlsError> {
        let cert = certs
            .and_then(|c| c.first())
            .ok_or(TlsError::NoPeerCertificate)?;
        let no_name = TlsError::NoNodeName {
            cluster_id: self.cluster_id,
        };
        let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| no_name)?;
        let suffix = format!(".c{:x}.bulwark", self.cluster_id);
        let node = parsed
            .valid_dns_names()
            .filter_map(|name| name.strip_prefix("node-")?.strip_suffix(suffix.as_str()))
            .find_map(parse_node_id)
            .ok_or(TlsError::NoNodeName {
                cluster_id: self.cluster_id,
            })?;
        // The name as this node would check a claim of it: the same rule as `check_peer`.
        self.check_peer(certs, node)?;
        Ok(node)
    }
}

/// A node id as `peer_name` writes it: decimal digits, no sign or leading zero, not 0.
fn parse_node_id(text: &str) -> Option<NodeId> {
    let canonical =
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0');
    canonical.then(|| text.parse().ok().map(NodeId)).flatten()
}

fn load_cert(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(&read(path)?).map_err(|_| TlsError::Pem {
        path: path.to_path_buf(),
        what: "certificate",
    })
}

/// Whether `cert` names node `node` of cluster `cluster_id`.
fn check_names(
    cert: &CertificateDer<'_>,
    cluster_id: u64,
    node: NodeId,
) -> Result<(), (String, webpki::Error)> {
    let name = peer_name(cluster_id, node);
    let server_name = ServerName::try_from(name.as_str()).expect("a valid DNS name");
    webpki::EndEntityCert::try_from(cert)
        .and_then(|c| c.verify_is_valid_for_subject_name(&server_name))
        .map_err(|e| (name, e))
}

#[cfg(test)]
mod tests;
