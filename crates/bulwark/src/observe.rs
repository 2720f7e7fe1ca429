//! What `/metrics` shows that the node's loop does not see: the data directory's file system
//! (free bytes and size) and the not-after time of each certificate in the TLS directory. Both
//! are read again every [`REFRESH_EVERY`], so a rotated certificate or a filling disk shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bulwark_node::metrics::CertificateLabels;
use bulwark_node::Metrics;

const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The certificates watched, by their label on `bulwark_certificate_expiry_timestamp_seconds`.
const CERTIFICATES: [(&str, &str); 3] = [
    ("ca", bulwark_tls::CA_CERT),
    ("node", bulwark_tls::NODE_CERT),
    ("api", bulwark_tls::API_CERT),
];

/// Refreshes the gauges now and then every [`REFRESH_EVERY`] until the process ends.
pub fn spawn(metrics: Arc<Metrics>, data_dir: PathBuf, tls_dir: PathBuf) {
    tokio::spawn(async move {
        loop {
            let (m, d, t) = (metrics.clone(), data_dir.clone(), tls_dir.clone());
            // statvfs and file reads block: off the runtime's threads.
            let _ = tokio::task::spawn_blocking(move || refresh(&m, &d, &t)).await;
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    });
}

fn refresh(metrics: &Metrics, data_dir: &Path, tls_dir: &Path) {
    if let Some((free, size)) = bulwark_store::file_system_space(data_dir) {
        metrics.disk_free_bytes.set(free as i64);
        metrics.disk_size_bytes.set(size as i64);
    }
    for (certificate, file) in CERTIFICATES {
        // A certificate the node does not have (no api.crt on loopback) is not shown.
        if let Some(not_after) = not_after(&tls_dir.join(file)) {
            metrics
                .certificate_expiry
                .get_or_create(&CertificateLabels { certificate })
                .set(not_after);
        }
    }
}

/// The not-after time, in seconds since the Unix epoch, of the first certificate of the PEM
/// file at `path`.
fn not_after(path: &Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let certificate = pem.parse_x509().ok()?;
    Some(certificate.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_not_after_time_of_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        bulwark_tls::create_ca(dir.path(), 7).unwrap();
        let not_after = not_after(&dir.path().join(bulwark_tls::CA_CERT)).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        // The CA is made for years.
        assert!(not_after > now + 365 * 86_400, "{not_after} vs {now}");
        assert_eq!(super::not_after(&dir.path().join("missing.crt")), None);
    }
}
