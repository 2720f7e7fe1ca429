//! The real `bulwark` processes of a chaos run: start, kill -9, pause, resume, restart, and the
//! small per-node filesystem that the disk-full fault fills.
//!
//! Each node's data directory is its own tmpfs when the disk nemesis is on, so that filling it
//! fills only that node's disk (and never the machine's).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bulwark_tmpfs::Tmpfs;

/// How every node of a run is started.
#[derive(Clone, Copy, Debug)]
pub struct NodeOptions {
    pub cluster_id: u64,
    /// A tmpfs of its own per node (for the disk fault).
    pub own_disk: bool,
    /// `--checkpoint-transfers`: small, so that every run checkpoints, compacts its log and
    /// catches followers up by snapshot many times.
    pub checkpoint_transfers: usize,
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
        format!(
            "{}={}={}",
            self.id, self.peer_advertised, self.http_advertised
        )
    }
}

/// One `bulwark start` process, restartable on the same data directory.
pub struct NodeProcess {
    pub addrs: NodeAddrs,
    pub data_dir: PathBuf,
    log_path: PathBuf,
    args: Vec<String>,
    bin: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// The node's own disk, when the disk fault is on (unmounted after the process is gone).
    disk: Option<Tmpfs>,
    starts: u32,
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
        let mut args = vec![
            "start".to_string(),
            "--data-dir".into(),
            data_dir.join("data").display().to_string(),
            "--node-id".into(),
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
        Ok(NodeProcess {
            log_path: run_dir.join(format!("node-{}.log", addrs.id)),
            addrs,
            data_dir,
            args,
            bin: bin.to_path_buf(),
            child: None,
            paused: false,
            disk,
            starts: 0,
        })
    }

    pub fn id(&self) -> u64 {
        self.addrs.id
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Starts the process; its stderr (the `tracing` log) is appended to `node-ID.log`.
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.child.is_none(),
            "node {} is already running",
            self.id()
        );
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        self.starts += 1;
        writeln!(
            log,
            "=== chaos: start #{} of node {}",
            self.starts,
            self.id()
        )?;
        let child = Command::new(&self.bin)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// kill -9: no shutdown of any kind, whatever was not fsynced may be lost.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process freezes mid-step, sockets open, clocks running on.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGSTOP);
            self.paused = true;
        }
    }

    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            signal(child.id(), libc::SIGCONT);
        }
        self.paused = false;
    }

    /// SIGTERM and wait (then kill -9 if it does not stop in time).
    pub fn stop(&mut self) {
        self.resume();
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }

    /// Whether the process died on its own (a crash the harness did not cause), with its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
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

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // The process goes first; the disk (a field) is unmounted after this.
        self.resume();
        self.kill9();
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid of our own child and a valid signal number has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
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

/// `N` distinct free TCP ports on `ip` (all bound at once, then released).
pub fn free_addrs_on<const N: usize>(ip: IpAddr) -> anyhow::Result<[SocketAddr; N]> {
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind((ip, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("cannot bind {ip}: {e}"))?;
    let mut addrs = [SocketAddr::new(ip, 0); N];
    for (addr, listener) in addrs.iter_mut().zip(&listeners) {
        *addr = listener.local_addr()?;
    }
    Ok(addrs)
}
