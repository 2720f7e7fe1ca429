//! A data directory knows whose it is: a start whose flags contradict its identity file, or a
//! directory of another layout, is refused with a message naming both, and changes nothing.

mod common;

use std::time::Duration;

use common::{free_port, start_expecting_exit, Node};

const LIMIT: Duration = Duration::from_secs(60);

/// Every file under `dir` with its bytes, to show a refused start changed nothing.
fn contents(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "lock") {
                let bytes = std::fs::read(&path).expect("read file");
                out.push((path.display().to_string(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn assert_refused(dir: &std::path::Path, args: &[&str], words: &[&str]) {
    let before = contents(dir);
    let (status, log) = start_expecting_exit(dir, args, LIMIT);
    let status = status.unwrap_or_else(|| panic!("{args:?}: the node started:\n{log}"));
    assert_eq!(status.code(), Some(5), "{args:?}: {status}\n{log}");
    for word in words {
        assert!(
            log.contains(word),
            "{args:?}: the refusal must say `{word}`:\n{log}"
        );
    }
    assert!(!log.contains("serving"), "{log}");
    assert!(
        contents(dir) == before,
        "{args:?}: a refused start changed the directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_contradicts_the_directory_is_refused_and_changes_nothing() {
    let mut node = Node::start(&[]).await;
    let results = node
        .http
        .write(
            "/v1/accounts",
            &serde_json::json!([{"id": 1, "ledger": 1, "code": 1}]),
        )
        .await;
    assert_eq!(results, ["ok"]);
    assert!(node.sigterm().success());
    let dir = node.data_dir.clone();
    let identity = std::fs::read_to_string(dir.join("identity")).expect("an identity file");
    assert!(identity.contains("node_id=1"), "{identity}");

    // Another node id, another cluster id.
    let specs: Vec<String> = (1..=3)
        .map(|id| format!("{id}=127.0.0.1:{}=127.0.0.1:{}", free_port(), free_port()))
        .collect();
    let mut members = Vec::new();
    for spec in &specs {
        members.extend(["--member", spec.as_str()]);
    }
    let mut as_two = vec!["--node-id", "2"];
    as_two.extend(members.iter().copied());
    assert_refused(&dir, &as_two, &["--node-id 2", "belongs to node 1"]);
    assert_refused(
        &dir,
        &["--cluster-id", "9"],
        &["--cluster-id 9", "cluster 1"],
    );
    // A one-voter cluster started with flags naming others: they would bootstrap a history of
    // their own over the same indexes.
    let mut as_one = vec!["--node-id", "1"];
    as_one.extend(members.iter().copied());
    assert_refused(&dir, &as_one, &["only voter is node 1", "[2, 3]"]);
    // A lost Raft log: the node lost its vote and must be replaced, not restarted.
    let raft = dir.join("raft");
    let aside = dir.join("raft.aside");
    std::fs::rename(&raft, &aside).expect("move the log aside");
    assert_refused(&dir, &[], &["lost its log"]);
    std::fs::rename(&aside, &raft).expect("put the log back");

    // Unharmed: it starts as itself with everything.
    node.restart().await;
    assert!(node.http.account(1).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_the_old_single_node_layout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("wal")).expect("wal/");
    std::fs::write(
        dir.path().join("wal").join("00000000000000000001.wal"),
        b"BWAL",
    )
    .expect("a segment");
    assert_refused(dir.path(), &[], &["wal/", "layout 1"]);
    // A Raft log or state store without an identity: refused too, not taken over.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.redb"), b"not ours").expect("a state file");
    assert_refused(dir.path(), &[], &["no `identity` file"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_whose_directory_was_wiped_does_not_come_back_as_that_voter() {
    let mut cluster = common::Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(60)).await;
    let accounts = serde_json::json!([{"id": 1, "ledger": 1, "code": 1}]);
    let http = cluster.node(leader).http.clone();
    assert_eq!(http.write("/v1/accounts", &accounts).await, ["ok"]);
    cluster.wait_converged(Duration::from_secs(60)).await;
    let lost = cluster
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("a follower");
    let node = cluster.node_mut(lost);
    node.kill9();
    let dir = node.data_dir.clone();
    std::fs::remove_dir_all(&dir).expect("wipe the directory");
    let args: Vec<&str> = node.args().iter().map(String::as_str).collect();
    let (status, log) = start_expecting_exit(&dir, &args, LIMIT);
    let status = status.unwrap_or_else(|| panic!("the wiped voter came back:\n{log}"));
    assert_eq!(status.code(), Some(5), "{status}\n{log}");
    assert!(
        log.contains("lost its log") && log.contains(&format!("node {lost}")),
        "{log}"
    );
    assert!(
        !dir.join("raft").join("hardstate").exists(),
        "the refused start bootstrapped a log"
    );
}

/// Nothing a node creates is readable by other local users: directories 0700, files 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::start(&[]).await;
    let accounts = serde_json::json!([{"id": 1, "ledger": 1, "code": 1}]);
    assert_eq!(node.http.write("/v1/accounts", &accounts).await, ["ok"]);
    let mut seen = 0;
    let mut pending = vec![node.data_dir.clone()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        }
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} paths under the data directory");
}

/// A member started without a peer certificate is refused, with the command that makes one,
/// and never joins its cluster unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_a_certificate_is_refused_with_the_command_that_makes_one() {
    let dir = tempfile::tempdir().unwrap();
    let member = format!("1=127.0.0.1:{}=127.0.0.1:{}", free_port(), free_port());
    let mut child = std::process::Command::new(common::bin())
        .args(["start", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--node-id", "1", "--member", &member])
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bulwark start");
    let status = bulwark_harness::wait_exit(&mut child, LIMIT);
    if status.is_none() {
        let _ = child.kill();
    }
    let status = status.expect("the start was not refused");
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(5), "{log}");
    assert!(
        log.contains("no peer certificate") && log.contains("bulwark cert issue --ca"),
        "{log}"
    );
    assert!(!dir
        .path()
        .join("data")
        .join("tls")
        .join("node.crt")
        .exists());
}
