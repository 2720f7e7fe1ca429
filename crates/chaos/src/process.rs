//! The real `bulwark` processes of a chaos run (start, kill -9, pause, resume, restart: the
//! process handling is `bulwark_harness`'s), each on its own loopback IP, and the small per-node
//! filesystem that the disk-full fault fills.
//!
//! Each node's directory is its own tmpfs when the disk nemesis is on, so that filling it fills
//! only that node's disk (and never the machine's). With a power nemesis (or the slow disk) the
//! node's data lives on a lazy filesystem (`bulwark-lazyfs`) over that directory: a power cut then
//! loses what the node did not fsync, as a real one would.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulwark_fs::test_faults::{self, Skip};
use bulwark_harness::{Logs, Member};
use bulwark_lazyfs::{CutReport, LazyFs};
use bulwark_tmpfs::Tmpfs;

/// How every node of a run is started.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub cluster_id: u64,
    /// A tmpfs of its own per node (for the disk fault).
    pub own_disk: bool,
    /// The data on a lazy filesystem of its own per node (power cuts, torn writes, a slow disk).
    pub lazy_disk: bool,
    /// A wall clock the harness can move (the clock fault; a `test-faults` build only).
    pub settable_clock: bool,
    /// A durability step every node skips (`--unsafe-skip-fsync`; a `test-faults` build only):
    /// to show that a run then fails.
    pub unsafe_skip_fsync: Option<Skip>,
    /// `--checkpoint-transfers`: small, so that every run checkpoints, compacts its log and
    /// catches followers up by snapshot many times.
    pub checkpoint_transfers: usize,
    /// More `start` options for every node (the relay's, in a run with payments).
    pub extra_args: Vec<String>,
}

/// How one node is reached and started.
///
/// Each node listens on its own loopback IP ([`node_ip`]) and its connections to other nodes
/// leave from that IP (a member binds them to the IP its HTTP API listens on): that is how the
/// proxy tells which node opened an HTTP connection. The other nodes know it only by the proxy's
/// addresses.
#[derive(Clone, Debug)]
pub struct NodeAddrs {
    pub id: u64,
    /// Where its HTTP API really listens (the workload and the harness talk to it directly, from
    /// 127.0.0.1, which the proxy never blocks).
    pub http: SocketAddr,
    /// What the other nodes use for its HTTP API (forwarded writes, snapshot fetches): the proxy in
    /// front of `http`.
    pub http_advertised: SocketAddr,
    /// Where its peer transport really listens.
    pub peer_listen: SocketAddr,
    /// What the other nodes dial: the proxy in front of `peer_listen`.
    pub peer_advertised: SocketAddr,
}

impl NodeAddrs {
    /// The `--member` value other nodes are given for this node: the proxy's addresses only.
    pub fn member_spec(&self) -> String {
        let advertised = Member {
            id: self.id,
            peer: self.peer_advertised,
            http: self.http_advertised,
        };
        advertised.arg()
    }
}

/// One `bulwark start` process (a [`bulwark_harness::NodeProcess`]), restartable on the same
/// data directory, on its own disk when the disk fault is on.
pub struct NodeProcess {
    pub addrs: NodeAddrs,
    /// The node's own directory (its tmpfs mount point); its data lives in `data` below it.
    pub data_dir: PathBuf,
    /// Declared before `lazy` and `disk`: the process is gone before its disks are unmounted.
    process: bulwark_harness::NodeProcess,
    /// The lazy filesystem the data lives on, when a power fault is on (over `disk`, if any).
    lazy: Option<LazyFs>,
    /// The node's own disk, when the disk fault is on (unmounted after the process is gone).
    disk: Option<Tmpfs>,
    /// The file holding the offset of its wall clock in ms, when the clock fault is on.
    clock_file: Option<PathBuf>,
}

/// Size of each node's tmpfs when the disk nemesis is on: room for a long run's log and state.
pub const NODE_DISK_BYTES: u64 = 1 << 30;

impl NodeProcess {
    /// Prepares (but does not start) a node. `members` are the `--member` specs of every node it
    /// is started with; `join` starts it as a newcomer waiting to be added.
    pub fn new(
        bin: &Path,
        run_dir: &Path,
        addrs: NodeAddrs,
        members: &[String],
        join: bool,
        options: NodeOptions,
    ) -> anyhow::Result<NodeProcess> {
        let data_dir = run_dir.join(format!("node-{}", addrs.id));
        std::fs::create_dir_all(&data_dir)?;
        let disk = if options.own_disk {
            Some(Tmpfs::mount_at(&data_dir, NODE_DISK_BYTES).map_err(|e| {
                anyhow::anyhow!("{e}: run as root, or leave `disk` out of --nemesis")
            })?)
        } else {
            None
        };
        let lazy = if options.lazy_disk {
            Some(mount_lazy(&data_dir)?)
        } else {
            None
        };
        let data = match &lazy {
            Some(fs) => fs.mountpoint().join("data"),
            None => data_dir.join("data"),
        };
        let mut args = vec![
            "--node-id".to_string(),
            addrs.id.to_string(),
            "--cluster-id".into(),
            options.cluster_id.to_string(),
            "--checkpoint-transfers".into(),
            options.checkpoint_transfers.to_string(),
            "--peer-listen".into(),
            addrs.peer_listen.to_string(),
            "--http-listen".into(),
            addrs.http.to_string(),
        ];
        for m in members {
            args.push("--member".into());
            args.push(m.clone());
        }
        if join {
            args.push("--join".into());
        }
        args.extend(options.extra_args.iter().cloned());
        let logs = Logs::Append {
            path: run_dir.join(format!("node-{}.log", addrs.id)),
            banner: Some(format!("chaos: node {}", addrs.id)),
        };
        let mut process = bulwark_harness::NodeProcess::new(bin, data, args, logs)
            .with_cluster_ca(run_dir.join("ca"))
            .with_admin_token(&run_dir.join("admin.token"))
            .with_env("RUST_LOG", "info");
        let clock_file = options
            .settable_clock
            .then(|| run_dir.join(format!("node-{}.clock-offset-ms", addrs.id)));
        if let Some(path) = &clock_file {
            anyhow::ensure!(test_faults::ENABLED, "{TEST_BUILD_ONLY}");
            process = process.with_env(
                test_faults::CLOCK_OFFSET_FILE_ENV,
                &path.display().to_string(),
            );
        }
        if let Some(skip) = options.unsafe_skip_fsync {
            anyhow::ensure!(test_faults::ENABLED, "{TEST_BUILD_ONLY}");
            process = process.with_env(test_faults::SKIP_FSYNC_ENV, skip.name());
        }
        Ok(NodeProcess {
            addrs,
            data_dir,
            process,
            lazy,
            disk,
            clock_file,
        })
    }

    pub fn id(&self) -> u64 {
        self.addrs.id
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    pub fn is_paused(&self) -> bool {
        self.process.is_paused()
    }

    /// Starts the process; its stderr (the `tracing` log) is appended to `node-ID.log`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_running(), "node {} is already running", self.id());
        self.process
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start node {}: {e}", self.id()))
    }

    /// kill -9: no shutdown of any kind, whatever was not fsynced may be lost.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// SIGSTOP: the process freezes mid-step, sockets open, clocks running on.
    pub fn pause(&mut self) {
        self.process.pause();
    }

    pub fn resume(&mut self) {
        self.process.resume();
    }

    /// SIGTERM and wait (then kill -9 if it does not stop in time).
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(20));
    }

    /// Whether the process died on its own (a crash the harness did not cause), with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }

    fn filler_path(&self) -> PathBuf {
        self.data_dir.join("filler")
    }

    /// Fills the node's disk to the last byte. Returns the bytes written.
    pub fn fill_disk(&self) -> anyhow::Result<u64> {
        let disk = self
            .disk
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {} has no disk of its own to fill", self.id()))?;
        Ok(bulwark_tmpfs::fill(disk.path())?.1)
    }

    /// Gives the space back.
    pub fn free_disk(&self) -> anyhow::Result<()> {
        match std::fs::remove_file(self.filler_path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }

    /// A power cut: kill -9, then everything the node did not fsync is lost (a torn cut, with
    /// `torn_seed`, keeps a page-aligned prefix of the last unsynced writes). The node stays down.
    pub fn power_cut(&mut self, torn_seed: Option<u64>) -> anyhow::Result<CutReport> {
        let id = self.id();
        let lazy = self
            .lazy
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {id} has no lazy filesystem to cut"))?;
        // The process is reaped before the cut: nothing it wrote can land after it.
        self.process.kill9();
        let control = lazy.controller();
        Ok(match torn_seed {
            Some(seed) => control.power_cut_torn(seed),
            None => control.power_cut(),
        })
    }

    /// A slow disk: every fsync of the node's data first sleeps `delay` (zero: off).
    pub fn set_fsync_delay(&self, delay: Duration) -> anyhow::Result<()> {
        let lazy = self
            .lazy
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("node {} has no lazy filesystem to slow", self.id()))?;
        lazy.controller().set_fsync_delay(delay);
        Ok(())
    }

    /// Moves the node's wall clock `offset_ms` away from the machine's (0: back to it).
    pub fn set_clock_offset(&self, offset_ms: i64) -> anyhow::Result<()> {
        let path = self.clock_file.as_ref().ok_or_else(|| {
            anyhow::anyhow!("node {} was started without a settable clock", self.id())
        })?;
        // Renamed into place: the node never reads half a number. Not a durable file.
        let temp = path.with_extension("tmp");
        std::fs::write(&temp, offset_ms.to_string())?;
        std::fs::rename(&temp, path)?;
        Ok(())
    }
}

/// Why a fault that needs a test build cannot run.
const TEST_BUILD_ONLY: &str = "the clock fault and --unsafe-skip-fsync need a test build of \
     bulwark (`cargo build --release --features test-faults`)";

/// Mounts a lazy filesystem for a node's data: backed by `node_dir/backing` (on the node's own
/// tmpfs when it has one, so that the disk fault still fills it), at `node_dir/mnt`.
fn mount_lazy(node_dir: &Path) -> anyhow::Result<LazyFs> {
    let backing = node_dir.join("backing");
    let mountpoint = node_dir.join("mnt");
    std::fs::create_dir_all(&backing)?;
    std::fs::create_dir_all(&mountpoint)?;
    LazyFs::mount(&backing, &mountpoint).map_err(|e| {
        anyhow::anyhow!(
            "cannot mount a lazy filesystem on {}: {e} (run as root with /dev/fuse, or leave \
             power, power-all, torn and slow-disk out of --nemesis)",
            mountpoint.display()
        )
    })
}

/// Node `id`'s own loopback IP, 127.0.0.(10 + id): Linux routes all of 127.0.0.0/8 to `lo`, so it
/// can be bound without any setup.
pub fn node_ip(id: u64) -> anyhow::Result<IpAddr> {
    let last = u8::try_from(id + 10)
        .ok()
        .filter(|b| *b < 255)
        .ok_or_else(|| anyhow::anyhow!("node id {id} has no loopback IP of its own"))?;
    Ok(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}
