//! Streaming a checkpoint: to a follower catching up (internal router, members only) and to
//! `bulwark backup create` (`GET /v1/backup/snapshot`, admin), from a background thread of low
//! priority, in chunks with backpressure.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bulwark_limits::{SNAPSHOT_EXPORT_NICE, SNAPSHOT_HTTP_CHUNK};
use bulwark_node::NodeId;

use crate::{ApiError, AppState};

/// Streams a consistent snapshot of this node's last checkpoint to `peer` (a follower catching
/// up; served on the internal router only).
pub(crate) async fn snapshot(state: &AppState, peer: NodeId) -> Result<Response, ApiError> {
    // A certificate from the cluster's CA proves who a node is, not that it still belongs: a
    // removed member (or one issued a certificate but never added) gets no copy of the ledger.
    if state.node.member_peer_addr(peer).is_none() {
        tracing::warn!(
            peer = peer.0,
            "refused a snapshot to a node that is not a member"
        );
        return Err(ApiError {
            status: axum::http::StatusCode::FORBIDDEN,
            code: "not_a_member",
            message: format!(
                "node {} is not a member of this cluster: it gets no snapshot",
                peer.0
            ),
        });
    }
    stream_checkpoint(state, format!("node {}", peer.0))
}

/// `GET /v1/backup/snapshot` (admin), for `bulwark backup create`: first a checkpoint of
/// everything this node applied, so that the backup is as recent as the node, then that
/// checkpoint streamed as a follower gets it.
pub(crate) async fn backup_snapshot(
    State(state): State<Arc<AppState>>,
) -> Result<Response, ApiError> {
    let index = tokio::time::timeout(
        bulwark_limits::BACKUP_CHECKPOINT_WAIT,
        state.node.checkpoint(),
    )
    .await
    .map_err(|_| ApiError {
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        code: "checkpoint_timeout",
        message: format!(
            "no checkpoint was written within {} s (a full or slow disk?); retry later",
            bulwark_limits::BACKUP_CHECKPOINT_WAIT.as_secs()
        ),
    })??;
    tracing::info!(checkpoint = index.0, "a backup reads this checkpoint");
    stream_checkpoint(&state, "a backup".into())
}

/// Streams a consistent snapshot of this node's last checkpoint to `to` (named in the log).
fn stream_checkpoint(state: &AppState, to: String) -> Result<Response, ApiError> {
    let Some(source) = state.node.snapshot_source() else {
        return Err(ApiError::not_found(
            "no_snapshot",
            "this node has no checkpoint to send",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let export = move || {
        // Background work: the node loop and client requests come first on a busy machine.
        bulwark_node::lower_this_threads_priority(SNAPSHOT_EXPORT_NICE);
        let mut writer = ChannelWriter {
            tx,
            buffer: Vec::with_capacity(SNAPSHOT_HTTP_CHUNK),
        };
        match source.export(&mut writer) {
            Ok(info) => tracing::info!(
                to,
                applied_index = info.applied_index,
                rows = info.rows,
                "sent a snapshot"
            ),
            Err(e) => {
                tracing::warn!(to, error = %e, "sending a snapshot failed");
                let _ = writer.tx.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    };
    std::thread::Builder::new()
        .name("snapshot-export".into())
        .spawn(export)
        .map_err(|e| ApiError::internal(format!("cannot start the snapshot's thread: {e}")))?;
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok(axum::body::Body::from_stream(stream).into_response())
}

/// Hands what the snapshot exporter writes to the HTTP body in chunks, with backpressure.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= SNAPSHOT_HTTP_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(SNAPSHOT_HTTP_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the receiver hung up"))
    }
}
