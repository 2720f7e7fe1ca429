//! `bulwark top` against a real node: frames that show the node's members and roles, refreshed
//! `--count` times; a node it cannot reach is an error, not an empty screen.

mod common;

use common::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_members_frame_after_frame() {
    let node = Node::start(&[]).await;
    let base = node.base_url();
    let args = ["top", "--addr", &base, "--count", "2", "--interval", "0.2"];
    let (code, out, err) = common::cli(&args).await;
    assert_eq!(code, 0, "top: {out}\n{err}");
    assert_eq!(out.matches("bulwark top").count(), 2, "two frames: {out}");
    let members: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("1 ") && l.contains("leader"))
        .collect();
    assert_eq!(
        members.len(),
        2,
        "the one member, leading, in each frame: {out}"
    );
    // The second frame has a previous one to take rates from.
    assert!(out.contains("applying -"), "{out}");
    assert!(out.contains("/s"), "a rate in the second frame: {out}");

    let (code, out, err) =
        common::cli(&["top", "--addr", "http://127.0.0.1:9", "--count", "1"]).await;
    assert_ne!(code, 0, "an unreachable node is an error: {out}");
    assert!(err.contains("error"), "{err}");
}
