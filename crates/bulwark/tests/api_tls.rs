//! The client API's TLS, on the real binary: a node listening beyond loopback without an API
//! certificate is refused with the command that makes one, starts in plain HTTP with
//! `--insecure` (and says so loudly), and serves HTTPS once `bulwark cert issue --api-san` made
//! one; plain HTTP to a TLS listener fails, HTTPS with the CA works, without it the client says
//! what it needs. A single node that is its own CA issues its own API certificate.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bulwark_harness::{Logs, NodeProcess};
use common::cli;

fn node(dir: &Path, args: &[&str]) -> NodeProcess {
    NodeProcess::new(
        Path::new(common::bin()),
        dir.join("data"),
        args.iter().map(|a| a.to_string()).collect(),
        Logs::per_run().unwrap(),
    )
    .with_admin_token(&common::test_token().0)
    .with_env("NO_COLOR", "1")
    .with_env("RUST_LOG", "info")
}

/// Waits until `bulwark account get 1` over HTTPS reaches the node and it takes the tests'
/// token (404: not created yet).
async fn wait_https(process: &mut NodeProcess, https: &str, ca: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ca = ca.to_str().unwrap();
        let (code, _, err) = cli(&["account", "get", "1", "--addr", https, "--ca", ca]).await;
        if code != 4 && !err.contains("unauthorized") {
            return;
        }
        assert!(process.exited().is_none(), "{}", process.last_log());
        assert!(Instant::now() < deadline, "never served HTTPS: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Plain HTTP to the TLS listener gets no HTTP answer.
async fn plain_http_fails(addr: SocketAddr) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let answer = client
        .get(format!("http://{addr}/health/live"))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP was answered: {answer:?}");
}

/// Creates account 1 over HTTPS, reads it back; and without the CA the client refuses.
async fn https_works(https: &str, ca: &Path) {
    let ca = ca.to_str().unwrap();
    let create = [
        "account", "create", "--id", "1", "--ledger", "1", "--code", "1", "--addr", https, "--ca",
        ca,
    ];
    let (code, out, err) = cli(&create).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["account", "get", "1", "--addr", https, "--ca", ca]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("account 1"), "{out}");
    let (code, _, err) = cli(&["account", "get", "1", "--addr", https]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--ca"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_loopback_tls_is_required_insecure_is_loud_and_an_api_certificate_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = (dir.path().join("ca"), dir.path().join("tls"));
    let ca_s = ca.to_str().unwrap();
    let tls_s = tls.to_str().unwrap();
    let (code, out, err) = cli(&["cert", "init", "--dir", ca_s]).await;
    assert_eq!(code, 0, "{out}{err}");
    let issue_node = [
        "cert",
        "issue",
        "--ca",
        ca_s,
        "--node-id",
        "1",
        "--out",
        tls_s,
    ];
    let (code, out, err) = cli(&issue_node).await;
    assert_eq!(code, 0, "{out}{err}");
    let port = common::free_port();
    let any = format!("0.0.0.0:{port}");
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let args = ["--listen", &any, "--tls-dir", tls_s];

    // No API certificate, not its own CA: refused, naming the command.
    let mut refused = node(dir.path(), &args);
    let status = refused.run_to_exit(Duration::from_secs(60)).unwrap();
    assert!(status.is_some_and(|s| !s.success()), "{status:?}");
    let log = refused.last_log();
    assert!(
        log.contains("bulwark cert issue") && log.contains("--api-san"),
        "{log}"
    );
    assert!(log.contains("--insecure"), "{log}");

    // --insecure: plain HTTP, with a warning.
    let mut insecure = node(dir.path(), &[&args[..], &["--insecure"]].concat());
    insecure
        .start_live(local, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        insecure.last_log().contains("INSECURE"),
        "{}",
        insecure.last_log()
    );
    insecure.terminate(Duration::from_secs(30));

    // An API certificate for 127.0.0.1: HTTPS only.
    let issue_api = [
        "cert",
        "issue",
        "--ca",
        ca_s,
        "--api-san",
        "127.0.0.1",
        "--out",
        tls_s,
    ];
    let (code, out, err) = cli(&issue_api).await;
    assert_eq!(code, 0, "{out}{err}");
    let mut secure = node(dir.path(), &args);
    secure.spawn().unwrap();
    let https = format!("https://{local}");
    wait_https(&mut secure, &https, &tls.join("ca.crt")).await;
    plain_http_fails(local).await;
    https_works(&https, &tls.join("ca.crt")).await;
    // A CA that did not issue it is not trusted.
    let stranger = dir.path().join("stranger");
    let (code, ..) = cli(&["cert", "init", "--dir", stranger.to_str().unwrap()]).await;
    assert_eq!(code, 0);
    let other_ca = stranger.join("ca.crt");
    let (code, _, err) = cli(&[
        "account",
        "get",
        "1",
        "--addr",
        &https,
        "--ca",
        other_ca.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 4, "{err}");
    assert!(secure.exited().is_none(), "{}", secure.last_log());
    secure.terminate(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_that_is_its_own_ca_issues_its_api_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let local = SocketAddr::from(([127, 0, 0, 1], port));
    let listen = local.to_string();
    let mut single = node(dir.path(), &["--listen", &listen, "--api-tls"]);
    single.spawn().unwrap();
    let ca = dir.path().join("data").join("tls").join("ca.crt");
    let https = format!("https://{local}");
    wait_https(&mut single, &https, &ca).await;
    assert!(single.last_log().contains(&ca.display().to_string()));
    plain_http_fails(local).await;
    https_works(&https, &ca).await;
    // Also valid for `localhost`.
    let localhost = format!("https://localhost:{port}");
    let (code, out, err) = cli(&[
        "account",
        "get",
        "1",
        "--addr",
        &localhost,
        "--ca",
        ca.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    single.terminate(Duration::from_secs(30));
}
