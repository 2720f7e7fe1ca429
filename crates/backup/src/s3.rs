//! S3, or a server speaking its protocol, as a target: `s3://bucket/optional/prefix`.
//!
//! Its settings come from the environment only, never the command line (where `ps` shows them):
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (optional), `AWS_REGION`
//! (default `us-east-1`) and `AWS_ENDPOINT_URL` (an S3-compatible server: requests then name the
//! bucket in the path, and an `http://` endpoint is allowed). What the environment lacks is taken
//! from the file `BULWARK_S3_CREDENTIALS_FILE` names, if any: `NAME=value` lines with the same
//! names, `#` comments.
//!
//! Whole or nothing: an object of at most one part is one PUT; a larger one is a multipart
//! upload, shown only when completed, and aborted on any failure (its parts dropped). A process
//! killed mid-upload leaves invisible parts behind: a bucket lifecycle rule that aborts incomplete
//! multipart uploads after a day reclaims them.
//!
//! The [`Target`] trait is synchronous; the requests run on a small runtime of the target's own,
//! the calling thread (the archiver's, or a `spawn_blocking` one of the CLI) only waiting.

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::Future;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutPayload,
};
use tokio::task::JoinHandle;

use crate::target::{check_name, Listed, Target, TargetError};

/// How a spec names an S3 target.
pub const SCHEME: &str = "s3://";
/// The environment variable naming a file of settings (`NAME=value` lines).
pub const CREDENTIALS_FILE_VAR: &str = "BULWARK_S3_CREDENTIALS_FILE";
/// The settings read, from the environment or that file.
const SETTINGS: [&str; 5] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
];

/// A multipart upload's first parts (S3: at least 5 MiB each but the last); the size doubles
/// every 1000 parts up to [`MAX_PART_BYTES`], so S3's 10,000 parts reach ~490 GiB.
const PART_BYTES: usize = 8 << 20;
const MAX_PART_BYTES: usize = 64 << 20;
const MAX_PARTS: usize = 10_000;
/// Parts uploading at once, besides the one being read from the caller.
const PARTS_IN_FLIGHT: usize = 2;
/// What [`S3Target::open`] fetches a request at a time (and reads one more ahead).
const RANGE_BYTES: u64 = 8 << 20;
/// One request's time limit, its body included (a part or a range: at most [`MAX_PART_BYTES`]).
/// object_store retries a failed request (10 times, with backoff, within 3 minutes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The size of part number `index` (from 0).
fn part_bytes(index: usize) -> usize {
    (PART_BYTES << (index / 1000).min(3)).min(MAX_PART_BYTES)
}

/// Objects in a bucket, below a prefix.
pub struct S3Target {
    store: Arc<AmazonS3>,
    /// Every key starts with this and a `/` (empty: the bucket's root); no `/` at either end.
    prefix: String,
    describe: String,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("target", &self.describe)
            .finish_non_exhaustive()
    }
}

impl S3Target {
    /// The target `spec` (`s3://bucket/optional/prefix`) names, with the settings of the
    /// environment and of the file [`CREDENTIALS_FILE_VAR`] names (the environment first).
    pub fn open(spec: &str) -> Result<S3Target, TargetError> {
        let file = match std::env::var_os(CREDENTIALS_FILE_VAR) {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|e| TargetError::Setup {
                    target: spec.into(),
                    why: format!("{CREDENTIALS_FILE_VAR} {}: {e}", path.to_string_lossy()),
                })?;
                parse_settings(&text).map_err(|why| TargetError::Setup {
                    target: spec.into(),
                    why: format!("{CREDENTIALS_FILE_VAR} {}: {why}", path.to_string_lossy()),
                })?
            }
            None => HashMap::new(),
        };
        S3Target::open_with(spec, |name| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| file.get(name).cloned())
        })
    }

    /// The target `spec` names, with the settings `setting` answers (by the names of the
    /// environment variables).
    pub fn open_with(
        spec: &str,
        setting: impl Fn(&str) -> Option<String>,
    ) -> Result<S3Target, TargetError> {
        let setup = |why: String| TargetError::Setup {
            target: spec.into(),
            why,
        };
        let (bucket, prefix) = parse_spec(spec).map_err(|why| setup(why.into()))?;
        let describe = match prefix.is_empty() {
            true => format!("{SCHEME}{bucket}"),
            false => format!("{SCHEME}{bucket}/{prefix}"),
        };
        let required = |name: &str| {
            setting(name).ok_or_else(|| {
                setup(format!(
                    "{name} is not set (in the environment, or the file {CREDENTIALS_FILE_VAR} names)"
                ))
            })
        };
        let mut builder = AmazonS3Builder::new()
            .with_client_options(ClientOptions::new().with_timeout(REQUEST_TIMEOUT))
            .with_bucket_name(bucket)
            .with_region(setting("AWS_REGION").unwrap_or_else(|| "us-east-1".into()))
            .with_access_key_id(required("AWS_ACCESS_KEY_ID")?)
            .with_secret_access_key(required("AWS_SECRET_ACCESS_KEY")?);
        if let Some(token) = setting("AWS_SESSION_TOKEN") {
            builder = builder.with_token(token);
        }
        builder = match setting("AWS_ENDPOINT_URL") {
            // An S3-compatible server: most take the bucket in the path only.
            Some(endpoint) => builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint.trim_end_matches('/'))
                .with_virtual_hosted_style_request(false),
            // AWS: the bucket in the host name (as AWS asks), but for a name with a dot, which
            // the certificate of `*.s3.<region>.amazonaws.com` does not cover.
            None => builder.with_virtual_hosted_style_request(!bucket.contains('.')),
        };
        let store = builder
            .build()
            .map_err(|e| setup(format!("cannot set up the S3 client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(4)
            .thread_name("s3-target")
            .enable_all()
            .build()
            .map_err(|e| setup(format!("cannot start the S3 client's runtime: {e}")))?;
        Ok(S3Target {
            store: Arc::new(store),
            prefix: prefix.into(),
            describe,
            runtime: Arc::new(Runtime(Some(runtime))),
        })
    }

    fn key(&self, name: &str) -> String {
        match self.prefix.is_empty() {
            true => name.into(),
            false => format!("{}/{name}", self.prefix),
        }
    }

    /// The key of object `name`, checked.
    fn path(&self, name: &str) -> Result<Path, TargetError> {
        check_name(name)?;
        Path::parse(self.key(name)).map_err(|_| TargetError::BadName {
            name: name.into(),
            why: "a control character",
        })
    }

    /// An object_store error as a target's, naming the object; a missing object is `NotFound`
    /// where `what` reads one (a write answered 404 means no bucket, said as it came).
    fn error(
        &self,
        what: &'static str,
        name: &str,
    ) -> impl FnOnce(object_store::Error) -> TargetError {
        let target = self.describe.clone();
        let name = name.to_string();
        move |e| match e {
            object_store::Error::NotFound { .. } if matches!(what, "read" | "open" | "delete") => {
                TargetError::NotFound { target, name }
            }
            e => TargetError::Io {
                target,
                what,
                name,
                source: std::io::Error::other(e),
            },
        }
    }

    fn io_error(&self, what: &'static str, name: &str, source: std::io::Error) -> TargetError {
        TargetError::Io {
            target: self.describe.clone(),
            what,
            name: name.into(),
            source,
        }
    }

    fn head(&self, name: &str, what: &'static str) -> Result<(Path, ObjectMeta), TargetError> {
        let path = self.path(name)?;
        let store = self.store.clone();
        let at = path.clone();
        let meta = self
            .runtime
            .run(async move { store.head(&at).await })
            .map_err(self.error(what, name))?;
        Ok((path, meta))
    }

    /// Part number `index` of what `reader` yields to store as `name` (shorter only at the
    /// end; empty past it).
    fn read_part(
        &self,
        name: &str,
        reader: &mut dyn Read,
        index: usize,
    ) -> Result<Vec<u8>, TargetError> {
        let size = part_bytes(index);
        let mut part = Vec::with_capacity(size);
        Read::take(reader, size as u64)
            .read_to_end(&mut part)
            .map_err(|e| {
                let e = std::io::Error::new(e.kind(), format!("reading the source: {e}"));
                self.io_error("write", name, e)
            })?;
        Ok(part)
    }

    fn reader(&self, name: &str, what: &'static str) -> Result<S3Reader, TargetError> {
        let (path, meta) = self.head(name, what)?;
        let size = meta.size;
        // One range in the channel and one being fetched: a read ahead, memory bounded.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let store = self.store.clone();
        self.runtime.spawn(async move {
            let mut start = 0;
            while start < size {
                let end = size.min(start + RANGE_BYTES);
                let options = GetOptions {
                    range: Some(GetRange::Bounded(start..end)),
                    // The same object throughout: one replaced meanwhile fails the read.
                    if_match: meta.e_tag.clone(),
                    ..Default::default()
                };
                let got = async { store.get_opts(&path, options).await?.bytes().await }.await;
                let got = got.map_err(Fetch::Store).and_then(|bytes| {
                    match bytes.len() as u64 == end - start {
                        true => Ok(bytes),
                        false => Err(Fetch::Short {
                            start,
                            asked: end - start,
                            got: bytes.len() as u64,
                        }),
                    }
                });
                let failed = got.is_err();
                if tx.send(got).await.is_err() || failed {
                    return;
                }
                start = end;
            }
        });
        Ok(S3Reader {
            runtime: self.runtime.clone(),
            target: self.describe.clone(),
            name: name.into(),
            what,
            rx: Some(rx),
            current: Bytes::new(),
            size,
            received: 0,
            failed: None,
        })
    }
}

/// `s3://bucket/optional/prefix` as the bucket and the prefix (no `/` at either end).
fn parse_spec(spec: &str) -> Result<(&str, &str), &'static str> {
    let rest = spec
        .strip_prefix(SCHEME)
        .ok_or("an S3 target is named s3://bucket/optional/prefix")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty()
        || !bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("the bucket's name is empty or has characters other than letters, digits, `.`, `-` and `_` (s3://bucket/optional/prefix)");
    }
    let prefix = prefix.trim_end_matches('/');
    if !prefix.is_empty() {
        if prefix
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err("the prefix has an empty, `.` or `..` part");
        }
        Path::parse(prefix).map_err(|_| "the prefix has a control character")?;
    }
    Ok((bucket, prefix))
}

/// The settings in a file of `NAME=value` lines (blank lines and `#` comments skipped).
fn parse_settings(text: &str) -> Result<HashMap<String, String>, String> {
    let mut settings = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {} is not NAME=value", number + 1));
        };
        let name = name.trim();
        if !SETTINGS.contains(&name) {
            return Err(format!(
                "line {}: {name:?} is none of {}",
                number + 1,
                SETTINGS.join(", ")
            ));
        }
        settings.insert(name.to_string(), value.trim().to_string());
    }
    Ok(settings)
}

impl Target for S3Target {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<(), TargetError> {
        self.put_reader(name, &mut &bytes[..]).map(drop)
    }

    fn put_reader(&self, name: &str, reader: &mut dyn Read) -> Result<u64, TargetError> {
        let path = self.path(name)?;
        let first = self.read_part(name, reader, 0)?;
        let second = match first.len() == part_bytes(0) {
            true => self.read_part(name, reader, 1)?,
            false => Vec::new(),
        };
        if second.is_empty() {
            // One part: one PUT, which S3 shows whole or not at all.
            let bytes = first.len() as u64;
            let store = self.store.clone();
            self.runtime
                .run(async move { store.put(&path, PutPayload::from(first)).await })
                .map_err(self.error("write", name))?;
            return Ok(bytes);
        }
        let store = self.store.clone();
        let at = path.clone();
        let upload = self
            .runtime
            .run(async move { store.put_multipart(&at).await })
            .map_err(self.error("start a multipart upload of", name))?;
        let mut upload = Upload {
            target: self,
            name,
            upload: Some(upload),
            parts: 0,
            in_flight: VecDeque::new(),
        };
        let written = upload.write_all([first, second], reader);
        if written.is_err() {
            upload.abort();
        }
        written
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        let mut reader = self.reader(name, "read")?;
        let mut out = Vec::with_capacity(usize::try_from(reader.size).unwrap_or(0));
        while let Some(bytes) = reader.next_range()? {
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send>, TargetError> {
        Ok(Box::new(self.reader(name, "open")?))
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, TargetError> {
        // List below the last whole part of the prefix (S3 lists by whole parts), then filter.
        let dir = prefix.rfind('/').map_or("", |at| &prefix[..at]);
        let location = match (self.prefix.is_empty(), dir.is_empty()) {
            (true, true) => None,
            (false, true) => Some(self.prefix.clone()),
            (_, false) => Some(self.key(dir)),
        };
        let location = location
            .map(|at| {
                Path::parse(at).map_err(|_| TargetError::BadName {
                    name: prefix.into(),
                    why: "an empty, `.` or `..` part or a control character",
                })
            })
            .transpose()?;
        let store = self.store.clone();
        let found: Vec<ObjectMeta> = self
            .runtime
            .run(async move { store.list(location.as_ref()).try_collect().await })
            .map_err(self.error("list", prefix))?;
        let below = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        let mut out: Vec<Listed> = found
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.as_ref().strip_prefix(below.as_str())?;
                name.starts_with(prefix).then(|| Listed {
                    name: name.to_string(),
                    bytes: meta.size,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<(), TargetError> {
        // S3 answers a DELETE of nothing as done: ask first, to say NotFound as a directory does.
        let (path, _) = self.head(name, "delete")?;
        let store = self.store.clone();
        self.runtime
            .run(async move { store.delete(&path).await })
            .map_err(self.error("delete", name))
    }
}

/// A multipart upload under way: nothing of it is visible until completed.
struct Upload<'a> {
    target: &'a S3Target,
    name: &'a str,
    /// Taken while a request of its own runs (complete, abort).
    upload: Option<Box<dyn MultipartUpload>>,
    parts: usize,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
}

impl Upload<'_> {
    /// Uploads `first` parts and then the rest of `reader` (read with `read`, by part index)
    /// and completes the upload; answers the bytes stored.
    fn write_all<const N: usize>(
        &mut self,
        first: [Vec<u8>; N],
        reader: &mut dyn Read,
    ) -> Result<u64, TargetError> {
        let mut written = 0;
        for part in first {
            written += part.len() as u64;
            self.send(part)?;
        }
        loop {
            let part = self.target.read_part(self.name, reader, self.parts)?;
            if part.is_empty() {
                break;
            }
            written += part.len() as u64;
            self.send(part)?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        let mut upload = self
            .upload
            .take()
            .expect("the upload is here between requests");
        let (upload, done) = self.target.runtime.run(async move {
            let done = upload.complete().await;
            (upload, done)
        });
        self.upload = Some(upload);
        done.map_err(
            self.target
                .error("complete the multipart upload of", self.name),
        )?;
        Ok(written)
    }

    fn send(&mut self, part: Vec<u8>) -> Result<(), TargetError> {
        while self.in_flight.len() >= PARTS_IN_FLIGHT {
            self.wait_oldest()?;
        }
        if self.parts == MAX_PARTS {
            return Err(self.target.io_error(
                "write",
                self.name,
                std::io::Error::other(format!("larger than S3's {MAX_PARTS} parts hold")),
            ));
        }
        let upload = self
            .upload
            .as_mut()
            .expect("the upload is here between requests");
        let request = upload.put_part(PutPayload::from(part));
        self.in_flight.push_back(self.target.runtime.spawn(request));
        self.parts += 1;
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), TargetError> {
        let Some(request) = self.in_flight.pop_front() else {
            return Ok(());
        };
        match self.target.runtime.run(request) {
            Ok(done) => done.map_err(self.target.error("upload a part of", self.name)),
            Err(e) => Err(self.target.io_error(
                "upload a part of",
                self.name,
                std::io::Error::other(format!("the request's task failed: {e}")),
            )),
        }
    }

    /// Drops the parts: the parts still uploading first (S3 may keep a part that finishes
    /// after the abort), then the upload. A failure is logged: the object stays unseen, the
    /// parts wait for the bucket's lifecycle rule.
    fn abort(&mut self) {
        for request in &self.in_flight {
            request.abort();
        }
        for request in std::mem::take(&mut self.in_flight) {
            let _ = self.target.runtime.run(request);
        }
        let Some(mut upload) = self.upload.take() else {
            return;
        };
        if let Err(e) = self.target.runtime.run(async move { upload.abort().await }) {
            tracing::warn!(
                target = %self.target.describe,
                object = self.name,
                error = %e,
                "could not abort a failed multipart upload (its parts are not visible as an object)"
            );
        }
    }
}

/// Why a range of an object could not be fetched.
enum Fetch {
    Store(object_store::Error),
    Short { start: u64, asked: u64, got: u64 },
}

/// An object read a range at a time, one range ahead.
struct S3Reader {
    runtime: Arc<Runtime>,
    target: String,
    name: String,
    what: &'static str,
    /// None once the last range was taken.
    rx: Option<tokio::sync::mpsc::Receiver<Result<Bytes, Fetch>>>,
    current: Bytes,
    size: u64,
    received: u64,
    /// Once a fetch failed, every read fails alike (never an early end).
    failed: Option<String>,
}

impl S3Reader {
    fn fail(&mut self, why: String) -> TargetError {
        self.failed = Some(why.clone());
        self.rx = None;
        TargetError::Io {
            target: self.target.clone(),
            what: self.what,
            name: self.name.clone(),
            source: std::io::Error::other(why),
        }
    }

    /// The next range of the object; None at its end.
    fn next_range(&mut self) -> Result<Option<Bytes>, TargetError> {
        if let Some(why) = self.failed.clone() {
            return Err(self.fail(why));
        }
        let Some(mut rx) = self.rx.take() else {
            return Ok(None);
        };
        let (rx, next) = self.runtime.run(async move {
            let next = rx.recv().await;
            (rx, next)
        });
        match next {
            Some(Ok(bytes)) => {
                self.received += bytes.len() as u64;
                self.rx = Some(rx);
                Ok(Some(bytes))
            }
            Some(Err(Fetch::Store(e))) => Err(self.fail(e.to_string())),
            Some(Err(Fetch::Short { start, asked, got })) => Err(self.fail(format!(
                "asked for {asked} bytes at {start}, got {got} (the object changed?)"
            ))),
            None if self.received == self.size => Ok(None),
            None => Err(self.fail(format!(
                "the download stopped at {} of {} bytes",
                self.received, self.size
            ))),
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.next_range() {
                Ok(Some(bytes)) => self.current = bytes,
                Ok(None) => return Ok(0),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The runtime the requests run on.
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("the runtime lives until dropped")
            .handle()
    }

    fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.handle().spawn(task)
    }

    /// Runs `task` on the runtime and waits for it. The calling thread only waits (a channel,
    /// not `block_on`), so it may be any thread: a plain one, a `spawn_blocking` one of another
    /// runtime, even (blocking it, as a directory target would) an async one; never one of this
    /// runtime's, which no caller has.
    fn run<T: Send + 'static>(&self, task: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(async move {
            let _ = tx.send(task.await);
        });
        rx.recv().expect("an S3 request's task panicked")
    }
}

impl Drop for Runtime {
    /// Without waiting for its threads: waiting panics on an async thread, where a target may
    /// be dropped. Nothing is left running: every call waited for its requests.
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(parse_spec("s3://b"), Ok(("b", "")));
        assert_eq!(parse_spec("s3://b/"), Ok(("b", "")));
        assert_eq!(parse_spec("s3://my-bucket/a/b/"), Ok(("my-bucket", "a/b")));
        assert!(parse_spec("s3://").is_err());
        assert!(parse_spec("s3:///p").is_err());
        assert_eq!(parse_spec("s3://b/p.tmp"), Ok(("b", "p.tmp")));
        assert!(parse_spec("s3://b/a//c").is_err());
        assert!(parse_spec("s3://b//c").is_err());
        assert!(parse_spec("s3://b/../c").is_err());
        assert!(parse_spec("s3://b?x/c").is_err());
    }

    #[test]
    fn settings_files_are_name_value_lines() {
        let settings = parse_settings(
            "# test\n\nAWS_ACCESS_KEY_ID = id\nAWS_SECRET_ACCESS_KEY=s=e=cret\n AWS_REGION=eu-west-1 \n",
        )
        .unwrap();
        assert_eq!(settings["AWS_ACCESS_KEY_ID"], "id");
        assert_eq!(settings["AWS_SECRET_ACCESS_KEY"], "s=e=cret");
        assert_eq!(settings["AWS_REGION"], "eu-west-1");
        assert_eq!(settings.len(), 3);
        assert!(parse_settings("AWS_ACCESS_KEY_ID\n").is_err());
        assert!(
            parse_settings("AWS_SECRET_KEY=x\n").is_err(),
            "a misspelt name"
        );
    }

    #[test]
    fn opening_names_a_missing_setting_and_never_a_secret() {
        let settings = HashMap::from([("AWS_ACCESS_KEY_ID", "id"), ("AWS_REGION", "r")]);
        let e = S3Target::open_with("s3://b/p", |n| settings.get(n).map(|v| v.to_string()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("s3://b/p: AWS_SECRET_ACCESS_KEY is not set"),
            "{e}"
        );
        let settings = HashMap::from([
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "very-secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1/"),
        ]);
        let target =
            S3Target::open_with("s3://b/p/", |n| settings.get(n).map(|v| v.to_string())).unwrap();
        assert_eq!(target.describe(), "s3://b/p");
        assert!(!format!("{target:?}").contains("very-secret"));
        assert!(matches!(
            target.get("x/../y"),
            Err(TargetError::BadName { .. })
        ));
    }

    #[test]
    fn parts_grow_to_fit_large_objects() {
        assert_eq!(part_bytes(0), 8 << 20);
        assert_eq!(part_bytes(999), 8 << 20);
        assert_eq!(part_bytes(1000), 16 << 20);
        assert_eq!(part_bytes(3000), 64 << 20);
        assert_eq!(part_bytes(9999), 64 << 20);
        let total: u64 = (0..MAX_PARTS).map(|i| part_bytes(i) as u64).sum();
        assert!(total > 480 << 30, "{total}");
    }
}
