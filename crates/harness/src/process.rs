//! One `bulwark start` process on its data directory, across kills and restarts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Environment variables of `bulwark start` that must not leak from the caller's environment
/// into a node (every node gets its directory and addresses as flags).
const CLEARED_ENV: [&str; 3] = ["BULWARK_DATA_DIR", "BULWARK_LISTEN", "BULWARK_ADDR"];

/// How often a starting node is asked whether it is live.
const LIVE_POLL: Duration = Duration::from_millis(20);

/// Pause before starting again a node whose port was still taken.
const PORT_TAKEN_PAUSE: Duration = Duration::from_millis(500);

/// Where a node's stderr (its `tracing` log) goes.
pub enum Logs {
    /// Every run appends to one file; with a `banner`, each run first writes a line
    /// `=== BANNER: start #N`.
    Append {
        path: PathBuf,
        banner: Option<String>,
    },
    /// Run N writes `run-N.log` in a temporary directory of its own (removed on drop).
    PerRun(tempfile::TempDir),
}

impl Logs {
    /// One file, appended to by every run.
    pub fn append(path: impl Into<PathBuf>) -> Logs {
        Logs::Append {
            path: path.into(),
            banner: None,
        }
    }

    /// A file per run, in a new temporary directory.
    pub fn per_run() -> std::io::Result<Logs> {
        Ok(Logs::PerRun(
            tempfile::Builder::new()
                .prefix("bulwark-test-logs")
                .tempdir()?,
        ))
    }

    fn path(&self, run: usize) -> PathBuf {
        match self {
            Logs::Append { path, .. } => path.clone(),
            Logs::PerRun(dir) => dir.path().join(format!("run-{run}.log")),
        }
    }

    /// Opens the log of run `run` for the process's stderr.
    fn open(&self, run: usize) -> std::io::Result<File> {
        match self {
            Logs::Append { path, banner } => {
                let mut file = OpenOptions::new().create(true).append(true).open(path)?;
                if let Some(banner) = banner {
                    writeln!(file, "=== {banner}: start #{run}")?;
                }
                Ok(file)
            }
            Logs::PerRun(_) => File::create(self.path(run)),
        }
    }
}

/// Why a node did not come up.
#[derive(Debug)]
pub enum StartError {
    /// The program could not be run.
    Spawn(std::io::Error),
    /// It exited because one of its ports was taken ("cannot listen"); its log.
    PortTaken(String),
    /// It exited on its own before answering; its status and log.
    Exited(ExitStatus, String),
    /// It did not answer `/health/live` in time (it was killed); its log.
    NotLive(Duration, String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Spawn(e) => write!(f, "cannot run bulwark: {e}"),
            StartError::PortTaken(log) => write!(f, "its ports stayed taken:\n{log}"),
            StartError::Exited(status, log) => write!(f, "it exited ({status}):\n{log}"),
            StartError::NotLive(limit, log) => {
                write!(f, "it did not answer /health/live within {limit:?}:\n{log}")
            }
        }
    }
}

impl std::error::Error for StartError {}

/// One `bulwark start --data-dir DIR ARGS...` process, restartable on the same directory.
pub struct NodeProcess {
    bin: PathBuf,
    pub data_dir: PathBuf,
    args: Vec<String>,
    /// Extra environment of the next runs (e.g. `BULWARK_CRASH_AT`, `RUST_LOG`).
    pub env: Vec<(String, String)>,
    logs: Logs,
    kill_with_parent: bool,
    child: Option<Child>,
    paused: bool,
    /// How many times a process was started.
    runs: usize,
    /// Where the latest run's log begins in its file (an appended log holds earlier runs).
    log_start: u64,
    /// The CA that issues this node's peer certificate before its first run as a member.
    cluster_ca: Option<PathBuf>,
    /// `--admin-token-file` of every run, kept apart from `args` so that `set_args` keeps it.
    admin_token: Option<PathBuf>,
}

impl NodeProcess {
    /// A node that is not started yet. `args` are every `start` option but `--data-dir`.
    pub fn new(bin: &Path, data_dir: PathBuf, args: Vec<String>, logs: Logs) -> NodeProcess {
        NodeProcess {
            bin: bin.to_path_buf(),
            data_dir,
            args,
            env: Vec::new(),
            logs,
            kill_with_parent: false,
            child: None,
            paused: false,
            runs: 0,
            log_start: 0,
            cluster_ca: None,
            admin_token: None,
        }
    }

    /// Every run gets `--admin-token-file path`: the cluster's first admin token, the same for
    /// every member.
    pub fn with_admin_token(mut self, path: &Path) -> NodeProcess {
        self.admin_token = Some(path.to_path_buf());
        self
    }

    /// A member whose TLS directory has no certificate gets one from the CA in `dir` (created
    /// there on first use) before it starts: a local cluster's one-command setup.
    pub fn with_cluster_ca(mut self, dir: PathBuf) -> NodeProcess {
        self.cluster_ca = Some(dir);
        self
    }

    /// The value of the `start` option `name`, if given.
    fn arg_value(&self, name: &str) -> Option<&str> {
        let at = self.args.iter().position(|a| a == name)?;
        self.args.get(at + 1).map(String::as_str)
    }

    /// Issues this member's peer certificate from the cluster CA if it has none yet, and with
    /// `--api-tls` its client API certificate.
    fn provision_certificate(&self) -> std::io::Result<()> {
        let (Some(ca), Some(node)) = (&self.cluster_ca, self.arg_value("--node-id")) else {
            return Ok(());
        };
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let node: u64 = node
            .parse()
            .map_err(|_| invalid(format!("--node-id {node}")))?;
        let cluster: u64 = match self.arg_value("--cluster-id") {
            Some(c) => c
                .parse()
                .map_err(|_| invalid(format!("--cluster-id {c}")))?,
            None => 1,
        };
        let dir = match self.arg_value("--tls-dir") {
            Some(dir) => PathBuf::from(dir),
            None => self.data_dir.join("tls"),
        };
        if !bulwark_tls::has_node_cert(&dir) {
            bulwark_tls::provision_node(ca, cluster, bulwark_ids::NodeId(node), &dir)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        let api_tls = self.args.iter().any(|a| a == "--api-tls");
        if api_tls && !bulwark_tls::has_api_cert(&dir) {
            // The client API's certificate names the loopback addresses, `localhost`, and the
            // address this member's entry gives clients (`--member ID=PEER=HTTP`).
            let mut names: Vec<String> = ["127.0.0.1", "::1", "localhost"].map(String::from).into();
            let own = format!("{node}=");
            let http_host = self
                .args
                .windows(2)
                .filter(|w| w[0] == "--member" && w[1].starts_with(&own))
                .find_map(|w| w[1].rsplit_once('=')?.1.rsplit_once(':'))
                .map(|(host, _)| host.trim_matches(['[', ']']).to_string());
            names.extend(http_host.filter(|h| !names.contains(h)));
            bulwark_tls::issue_api(ca, cluster, &names, &dir)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        }
        Ok(())
    }

    /// Sets an environment variable of every run.
    pub fn with_env(mut self, key: &str, value: &str) -> NodeProcess {
        self.set_env(key, value);
        self
    }

    /// [`NodeProcess::with_env`] on a process held in place (from its next start on).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// On Linux, the process gets SIGKILL from the kernel when the thread that started it ends
    /// (`PR_SET_PDEATHSIG`): start it from a thread that lives as long as the caller.
    pub fn killed_with_parent(mut self) -> NodeProcess {
        self.kill_with_parent = true;
        self
    }

    /// The `start` options of every run.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Replaces the `start` options of the next runs.
    pub fn set_args(&mut self, args: Vec<String>) {
        self.args = args;
    }

    pub fn runs(&self) -> usize {
        self.runs
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The process id of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log file of the latest run.
    pub fn log_path(&self) -> PathBuf {
        self.logs.path(self.runs)
    }

    /// The log of run `run` (1-based), without colour codes (an appended log: all runs).
    pub fn log_of(&self, run: usize) -> String {
        strip_ansi(&std::fs::read_to_string(self.logs.path(run)).unwrap_or_default())
    }

    /// The log of the latest run, without colour codes.
    pub fn last_log(&self) -> String {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(self.log_start).map_or(0, |s| s.min(bytes.len()));
        strip_ansi(&String::from_utf8_lossy(&bytes[start..]))
    }

    /// The last `lines` lines of the latest run's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.last_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts the process without waiting for it; its stderr goes to the log.
    pub fn spawn(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "the node is already running");
        self.provision_certificate()?;
        self.runs += 1;
        let log = self.logs.open(self.runs)?;
        self.log_start = log.metadata()?.len();
        let mut command = Command::new(&self.bin);
        command
            .arg("start")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            .args(
                self.admin_token
                    .iter()
                    .flat_map(|t| [std::ffi::OsStr::new("--admin-token-file"), t.as_os_str()]),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        for key in CLEARED_ENV {
            command.env_remove(key);
        }
        #[cfg(target_os = "linux")]
        if self.kill_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        self.child = Some(spawn_retrying_busy(&mut command)?);
        self.paused = false;
        Ok(())
    }

    /// Starts the process and waits up to `limit` until `/health/live` answers at `http` (the
    /// node recovered and serves HTTP; it need not have a leader). A process that does not
    /// answer in time is killed.
    pub async fn start_live(
        &mut self,
        http: SocketAddr,
        limit: Duration,
    ) -> Result<(), StartError> {
        self.spawn().map_err(StartError::Spawn)?;
        // A fresh client: no pooled connection to a previous process survives.
        let probe = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client");
        let url = format!("http://{http}/health/live");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                let log = self.last_log();
                if log.contains("cannot listen") {
                    return Err(StartError::PortTaken(log));
                }
                return Err(StartError::Exited(status, log));
            }
            if matches!(probe.get(&url).send().await, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                return Err(StartError::NotLive(limit, self.last_log()));
            }
            tokio::time::sleep(LIVE_POLL).await;
        }
    }

    /// [`NodeProcess::start_live`], started again after a pause while a port is still taken
    /// (at most `attempts` starts).
    pub async fn start_live_retrying(
        &mut self,
        http: SocketAddr,
        limit: Duration,
        attempts: usize,
    ) -> Result<(), StartError> {
        let mut attempt = 1;
        loop {
            match self.start_live(http, limit).await {
                Err(StartError::PortTaken(_)) if attempt < attempts => {
                    attempt += 1;
                    tokio::time::sleep(PORT_TAKEN_PAUSE).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Starts the process expecting it to stop by itself: its exit status, or `None` if it was
    /// still running after `limit` (it is then killed).
    pub fn run_to_exit(&mut self, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
        self.spawn()?;
        let status = self.wait_exit(limit);
        if status.is_none() {
            self.kill9();
        }
        Ok(status)
    }

    /// The exit status of a process that ended on its own (no longer running after this).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    /// Waits up to `limit` for the process to exit; `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let status = wait_exit(self.child.as_mut()?, limit)?;
        self.child = None;
        self.paused = false;
        Some(status)
    }

    /// Waits for the process to exit, however long that takes; `None` if it was not running.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        let status = self.child.take()?.wait().ok();
        self.paused = false;
        status
    }

    /// kill -9 and reap: no shutdown of any kind, whatever was not fsynced may be lost.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// SIGSTOP: the process freezes mid-step, sockets open, clocks running on. Returns once
    /// every thread is stopped: kill(2) returns at once, and a thread inside a system call (an
    /// fdatasync on a busy disk) goes on until it returns, so a test that acts right after
    /// could meet a process still at work.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGSTOP);
            self.paused = true;
            wait_stopped(pid, std::time::Duration::from_secs(5));
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGCONT);
        }
        self.paused = false;
    }

    /// Sends SIGTERM (a graceful shutdown) without waiting; a paused process is resumed first.
    pub fn send_sigterm(&mut self) {
        self.resume();
        if let Some(pid) = self.pid() {
            signal(pid, libc::SIGTERM);
        }
    }

    /// SIGTERM, then waits up to `limit` for the exit status; a process still running then is
    /// killed (kill -9) and `None` returned.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.send_sigterm();
        let status = self.wait_exit(limit);
        if status.is_none() {
            self.kill9();
        }
        status
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.resume();
        self.kill9();
    }
}

/// Waits up to `limit` until every thread of `pid` is stopped (state `T` or `t` in
/// `/proc/PID/task/*/stat`); gives up quietly past it (the caller's checks then say what they see).
fn wait_stopped(pid: u32, limit: std::time::Duration) {
    let deadline = std::time::Instant::now() + limit;
    let stopped = || -> Option<bool> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
        for task in tasks {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            // The state follows the command name's closing parenthesis.
            let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
            if state != "T" && state != "t" {
                return Some(false);
            }
        }
        Some(true)
    };
    while std::time::Instant::now() < deadline && stopped() == Some(false) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with the pid of our own child, not reaped yet, and a valid signal number
    // has no memory effects.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits up to `limit` for `child` to exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes ANSI colour escapes from log text.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Spawns `command`, retrying for a moment while its executable is busy (ETXTBSY): a file just
/// written (a test's script, a binary cargo just linked) stays busy while another thread's fork
/// still holds its write descriptor, until that child execs.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(strip_ansi("\u{1b}[32mINFO\u{1b}[0m ok"), "INFO ok");
    }

    /// A stand-in for `bulwark`: a script that ignores its arguments and runs `body`.
    fn fake_bulwark(dir: &Path, body: &str) -> NodeProcess {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("fake-bulwark");
        std::fs::write(&bin, format!("#!/bin/sh\n{body}\n")).expect("script");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        NodeProcess::new(
            &bin,
            dir.join("data"),
            vec![],
            Logs::append(dir.join("log")),
        )
    }

    #[test]
    fn a_process_exits_is_paused_and_terminated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = fake_bulwark(dir.path(), "echo cannot listen >&2; exit 3");
        p.spawn().expect("spawn");
        let status = p.wait_exit(Duration::from_secs(10)).expect("exited");
        assert_eq!(status.code(), Some(3));
        assert!(!p.is_running());
        assert!(p.last_log().contains("cannot listen"));

        let mut p = fake_bulwark(dir.path(), "exec sleep 30");
        p.spawn().expect("spawn");
        p.pause();
        assert!(p.is_paused());
        assert!(p.wait_exit(Duration::from_millis(100)).is_none());
        let status = p
            .terminate(Duration::from_secs(10))
            .expect("stopped by SIGTERM");
        assert!(!status.success());
        assert!(!p.is_running() && !p.is_paused());
        assert_eq!(p.runs(), 1);
    }

    #[tokio::test]
    async fn a_taken_port_is_told_apart_from_other_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let http: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut p = fake_bulwark(dir.path(), "echo cannot listen >&2; exit 5");
        let err = p
            .start_live_retrying(http, Duration::from_secs(10), 2)
            .await;
        assert!(matches!(err, Err(StartError::PortTaken(_))), "{err:?}");
        assert_eq!(p.runs(), 2);
        let mut p = fake_bulwark(dir.path(), "echo exiting >&2; exit 4");
        let err = p.start_live(http, Duration::from_secs(10)).await;
        assert!(
            matches!(&err, Err(StartError::Exited(s, log)) if s.code() == Some(4) && log == "exiting\n"),
            "{err:?}"
        );
    }
}
