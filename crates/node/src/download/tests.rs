//! The download worker against sources that misbehave: one that accepts and then never sends
//! is given up on once it made no progress for the stall timeout, and the next attempt is made
//! (and completes from a healthy source); a stream cut short fails its attempt, or is passed
//! over for another member within the same attempt. The sources are `CheckpointSource`s over a
//! real checkpoint stream; the import, the side files and the stall rule are the node's.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bulwark_ledger::{AccountId, Batch, NewAccount, Operation, Timestamp};
use bulwark_store::StateStore;

use super::*;

/// Short, so that a silent source is given up on quickly; the healthy stream is a few KiB from
/// memory, so no attempt of it comes near it.
const STALL: Duration = Duration::from_millis(300);

/// How long a test polls before it calls a download stuck (far beyond `STALL`).
const PATIENCE: Duration = Duration::from_secs(20);

/// The snapshot's index every test asks for; the source's checkpoint is at [`CHECKPOINT`].
const INDEX: u64 = 4;
const CHECKPOINT: u64 = 5;

/// What a source does on one `open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Accepts, then sends nothing until the test ends (as a paused or partitioned member).
    Silent,
    /// Sends the first half of the stream, then ends it.
    Cut,
    /// Sends the whole stream.
    Healthy,
}

/// A source that answers each `open` with the next behaviour of its script, and records which
/// member each `open` asked.
struct ScriptedSource {
    stream: Vec<u8>,
    script: Mutex<VecDeque<Behaviour>>,
    opened: Mutex<Vec<(u64, Behaviour)>>,
    /// Dropped at the end of a test: wakes the silent readers, so their workers finish.
    silence: Mutex<Option<mpsc::Sender<()>>>,
    wake: Mutex<mpsc::Receiver<()>>,
}

impl ScriptedSource {
    fn new(stream: Vec<u8>, script: &[Behaviour]) -> Arc<Self> {
        let (silence, wake) = mpsc::channel();
        Arc::new(ScriptedSource {
            stream,
            script: Mutex::new(script.iter().copied().collect()),
            opened: Mutex::new(Vec::new()),
            silence: Mutex::new(Some(silence)),
            wake: Mutex::new(wake),
        })
    }

    fn opened(&self) -> Vec<(u64, Behaviour)> {
        self.opened.lock().unwrap().clone()
    }

    /// Ends the silence: every silent reader fails its read.
    fn release(&self) {
        self.silence.lock().unwrap().take();
    }
}

impl CheckpointSource for ScriptedSource {
    fn open(&self, _: &ClusterConfig, member: &Member) -> Result<Box<dyn Read>, InstallFailure> {
        let behaviour = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .expect("an open beyond the script");
        self.opened.lock().unwrap().push((member.id, behaviour));
        Ok(match behaviour {
            Behaviour::Healthy => Box::new(std::io::Cursor::new(self.stream.clone())),
            Behaviour::Cut => Box::new(std::io::Cursor::new(
                self.stream[..self.stream.len() / 2].to_vec(),
            )),
            Behaviour::Silent => {
                // Blocks until `release`: nothing ever arrives.
                let _ = self.wake.lock().unwrap().recv();
                return Err(InstallFailure::other("the silent source was released"));
            }
        })
    }
}

/// The stream of a real checkpoint at [`CHECKPOINT`] holding accounts 1..=3.
fn checkpoint_stream(dir: &Path) -> Vec<u8> {
    let mut store = StateStore::open(&dir.join("source.redb")).unwrap();
    let accounts = (1..=3)
        .map(|i| NewAccount {
            id: AccountId(i),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        })
        .collect();
    let batch = Batch {
        timestamp: Timestamp(1_000),
        operation: Operation::CreateAccounts(accounts),
    };
    store.apply_batch(CHECKPOINT, &batch);
    store.checkpoint_now().unwrap();
    let mut stream = Vec::new();
    let info = store.snapshot_source().export(&mut stream).unwrap();
    assert_eq!(info.applied_index, CHECKPOINT);
    stream
}

/// This node (1) and the other members named.
fn cluster_of(others: &[u64]) -> ClusterConfig {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let member = |id| Member {
        id,
        peer_addr: addr.into(),
        http_addr: addr.into(),
    };
    ClusterConfig {
        node_id: 1,
        cluster_id: 7,
        members: std::iter::once(1)
            .chain(others.iter().copied())
            .map(member)
            .collect(),
        tick: Duration::from_millis(50),
        join: false,
        source_ip: None,
        peer_http: None,
    }
}

/// Polls as the node loop does until the download is done or failed.
fn settle(downloader: &mut Downloader, cluster: &ClusterConfig, state: &Path, from: u64) -> Poll {
    let started = Instant::now();
    loop {
        match downloader.poll(cluster, state, from, INDEX) {
            Poll::Pending => {
                assert!(
                    started.elapsed() < PATIENCE,
                    "the download is still pending after {PATIENCE:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            settled => return settled,
        }
    }
}

/// The download's outcome when it must have completed: the side file it imported into.
fn completed(poll: Poll) -> PathBuf {
    match poll {
        Poll::Done { info, incoming } => {
            assert_eq!(info.applied_index, CHECKPOINT);
            let imported = StateStore::open(&incoming).unwrap();
            assert_eq!(imported.applied_index(), CHECKPOINT);
            assert_eq!(imported.account_count(), 3);
            incoming
        }
        Poll::Failed(f) => panic!("the download failed: {}", f.message),
        Poll::Pending => unreachable!("settled"),
    }
}

fn failure(poll: Poll) -> String {
    match poll {
        Poll::Failed(f) => {
            assert!(!f.disk_full, "{}", f.message);
            f.message
        }
        Poll::Done { .. } => panic!("the download completed"),
        Poll::Pending => unreachable!("settled"),
    }
}

#[test]
fn a_source_that_never_answers_is_given_up_on_and_the_install_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let source = ScriptedSource::new(
        checkpoint_stream(dir.path()),
        &[Behaviour::Silent, Behaviour::Healthy],
    );
    let mut downloader = Downloader::new(source.clone(), STALL);
    let cluster = cluster_of(&[2]);

    let message = failure(settle(&mut downloader, &cluster, &state, 2));
    assert!(message.contains("made no progress"), "{message}");
    assert_eq!(source.opened(), [(2, Behaviour::Silent)]);
    // The abandoned attempt's side file is gone already (its worker still hangs).
    let first = state.with_extension("redb.incoming.1");
    assert!(!first.exists(), "{} left behind", first.display());

    // The node loop polls again after its retry delay: a new attempt, which completes.
    let incoming = completed(settle(&mut downloader, &cluster, &state, 2));
    assert_eq!(incoming, state.with_extension("redb.incoming.2"));
    assert_eq!(
        source.opened(),
        [(2, Behaviour::Silent), (2, Behaviour::Healthy)]
    );
    source.release();
}

#[test]
fn a_cut_stream_fails_its_attempt_and_the_next_attempt_completes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let source = ScriptedSource::new(
        checkpoint_stream(dir.path()),
        &[Behaviour::Cut, Behaviour::Healthy],
    );
    let mut downloader = Downloader::new(source.clone(), STALL);
    let cluster = cluster_of(&[2]);

    let message = failure(settle(&mut downloader, &cluster, &state, 2));
    assert!(
        message.contains("node 2: ") && message.contains("read snapshot frame"),
        "{message}"
    );
    assert!(!state.with_extension("redb.incoming.1").exists());

    completed(settle(&mut downloader, &cluster, &state, 2));
    assert_eq!(
        source.opened(),
        [(2, Behaviour::Cut), (2, Behaviour::Healthy)]
    );
}

#[test]
fn a_cut_stream_is_passed_over_for_another_member_in_the_same_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.redb");
    let source = ScriptedSource::new(
        checkpoint_stream(dir.path()),
        &[Behaviour::Cut, Behaviour::Healthy],
    );
    let mut downloader = Downloader::new(source.clone(), STALL);
    // The snapshot names node 3; node 2 is the other member.
    let cluster = cluster_of(&[2, 3]);

    let incoming = completed(settle(&mut downloader, &cluster, &state, 3));
    assert_eq!(incoming, state.with_extension("redb.incoming.1"));
    assert_eq!(
        source.opened(),
        [(3, Behaviour::Cut), (2, Behaviour::Healthy)]
    );
}
