//! A real S3-protocol server for tests: `s3s-fs` (installed by `.ci/run`, named by
//! `BULWARK_TEST_S3_BIN`) on a free loopback port, over a temporary root whose directories are
//! its buckets; stopped when dropped.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
    child: Child,
    pub root: tempfile::TempDir,
    pub addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    /// Starts the server with a generated key, `buckets` made.
    pub fn start(bin: &Path, buckets: &[&str]) -> S3Server {
        let root = tempfile::tempdir().unwrap();
        for bucket in buckets {
            // s3s-fs keeps a bucket as a directory of its root.
            std::fs::create_dir(root.path().join(bucket)).unwrap();
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            ^ u128::from(std::process::id()) << 64;
        let access_key = format!("bulwark-test-{:x}", nonce & 0xffff_ffff);
        let secret_key = format!(
            "{:032x}",
            nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
        );
        // A port another process may take between our probe and the server's bind: try again.
        for _ in 0..5 {
            let addr = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap();
            let mut child = Command::new(bin)
                .arg("--host")
                .arg(addr.ip().to_string())
                .arg("--port")
                .arg(addr.port().to_string())
                .arg("--access-key")
                .arg(&access_key)
                .arg("--secret-key")
                .arg(&secret_key)
                .arg(root.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    eprintln!("s3s-fs on {addr} exited at once ({status}); trying another port");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return S3Server {
                        child,
                        root,
                        addr,
                        access_key,
                        secret_key,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("s3s-fs did not listen on {addr} within 20 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("s3s-fs would not start");
    }

    /// The environment an S3 target of this server is opened with.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_ENDPOINT_URL", format!("http://{}", self.addr)),
            ("AWS_REGION", "us-east-1".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `s3s-fs` binary to test against, or None (the test skipped) outside CI.
pub fn s3_server_bin() -> Option<PathBuf> {
    match std::env::var_os("BULWARK_TEST_S3_BIN") {
        Some(bin) if !bin.is_empty() => Some(bin.into()),
        _ if std::env::var_os("CI").is_some() => panic!(
            "BULWARK_TEST_S3_BIN is not set, and CI must not skip the S3 target's test: \
             .ci/run installs s3s-fs and sets it"
        ),
        _ => {
            // Past the test harness's capture of `eprintln!`, so a plain `cargo test` shows it.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: the S3 target's test (set BULWARK_TEST_S3_BIN to an s3s-fs binary: \
                 cargo install --locked --features binary s3s-fs@0.14.1)"
            );
            None
        }
    }
}
