//! `bulwark cluster local --api-tls`: every member serves its client API over TLS with a
//! certificate from the cluster's CA, and the CLI's cluster commands reach it over https with
//! `--ca` (and refuse plain HTTP, a missing token, a refused change with their exit codes).

mod common;

use std::time::{Duration, Instant};

use common::{cli_with_token, free_port_range, strip_ansi, wait_exit};

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_local_serves_the_api_over_tls() {
    let data = tempfile::tempdir().expect("tempdir");
    let root = data.path().join("cluster");
    let base = free_port_range(6);
    let (http_port, peer_port) = (base, base + 3);
    let out_path = data.path().join("local.out");
    let mut local = common::cluster_local(&root, http_port, peer_port, &["--api-tls"], &out_path);
    let output = || strip_ansi(&std::fs::read_to_string(&out_path).unwrap_or_default());

    let token_path = root.join("admin.token");
    let deadline = Instant::now() + PATIENCE;
    while !token_path.exists() {
        assert!(Instant::now() < deadline, "no {}", token_path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = bulwark_token::read_file(&token_path).expect("the admin token");
    let ca = root.join("ca").join("ca.crt");
    let ca = ca.to_str().expect("a UTF-8 path");
    let https = |i: u16| format!("https://127.0.0.1:{}", http_port + i);

    // Every member answers over https (through a certificate naming 127.0.0.1); once one
    // names a leader, the cluster is up.
    let leader_line = loop {
        let (code, stdout, _) = cli_with_token(
            &["cluster", "status", "--addr", &https(1), "--ca", ca],
            Some(&token),
        )
        .await;
        if code == 0 && !stdout.contains("leader 0") && !stdout.contains("leader null") {
            break stdout.lines().next().unwrap_or_default().to_string();
        }
        if let Some(status) = local.0.as_mut().unwrap().try_wait().expect("try_wait") {
            panic!("cluster local exited with {status}:\n{}", output());
        }
        assert!(
            Instant::now() < deadline,
            "no leader within {PATIENCE:?}:\n{}",
            output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(leader_line.starts_with("node 2 "), "{leader_line}");
    assert!(
        output().contains(&format!("https://127.0.0.1:{http_port}")),
        "cluster local prints https addresses:\n{}",
        output()
    );

    // Plain HTTP to a TLS listener gets no answer; no token is a 401 (exit 3); a refused
    // membership change is a 409 (exit 3), over https.
    let (code, _, stderr) = cli_with_token(
        &[
            "cluster",
            "status",
            "--addr",
            &format!("http://127.0.0.1:{http_port}"),
        ],
        Some(&token),
    )
    .await;
    assert_eq!(code, 4, "plain HTTP to a TLS listener: {stderr}");
    let (code, _, stderr) = cli_with_token(
        &["cluster", "status", "--addr", &https(0), "--ca", ca],
        None,
    )
    .await;
    assert_eq!(code, 3, "no token: {stderr}");
    assert!(stderr.contains("401 unauthorized"), "{stderr}");
    let (code, _, stderr) = cli_with_token(
        &[
            "cluster",
            "remove",
            "--ids",
            "9",
            "--addr",
            &https(2),
            "--ca",
            ca,
        ],
        Some(&token),
    )
    .await;
    assert_eq!(code, 3, "removing a stranger: {stderr}");
    assert!(stderr.contains("409"), "{stderr}");

    // SIGTERM (what a supervisor sends) stops every node too, not only cluster local itself.
    let mut child = local.0.take().expect("running");
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_exit(&mut child, PATIENCE).expect("cluster local stops on SIGTERM");
    assert!(
        status.success(),
        "cluster local exited {status}:\n{}",
        output()
    );
    for port in (http_port..http_port + 3).chain(peer_port..peer_port + 3) {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still taken after cluster local stopped on SIGTERM:\n{}",
            output()
        );
    }
}
