//! One contract for every kind of target, checked against a directory and against S3 (a real
//! S3-protocol server, `s3s-fs`, started here on a free loopback port).
//!
//! The S3 half needs `BULWARK_TEST_S3_BIN`, the path of an `s3s-fs` binary (`.ci/run` installs
//! one); without it the test says it was skipped, and fails under CI (`CI` set), so CI can never
//! skip it silently.

use std::io::Read;
use std::path::Path;
use std::process::Command;

use bulwark_backup::open_target;
use bulwark_backup::s3::S3Target;
use bulwark_backup::target::{Listed, Target, TargetError};
use bulwark_harness::s3::{s3_server_bin, S3Server};

const MIB: usize = 1 << 20;

/// Reproducible bytes that differ with `seed` and along the object.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Yields `bytes` in pieces of odd sizes, as a network stream would; fails once `fail_at`
/// bytes are out, after looking (through `target`, and at the remains `leftovers` lists) at what
/// is there meanwhile.
struct Source<'a> {
    bytes: &'a [u8],
    at: usize,
    piece: usize,
    fail_at: Option<usize>,
    peek: Option<(&'a dyn Target, &'a str, Leftovers<'a>)>,
    /// What `get` of the object answered while the write was under way.
    seen_meanwhile: Option<Result<usize, String>>,
    /// The remains of unfinished writes then.
    leftovers_meanwhile: Vec<String>,
}

impl<'a> Source<'a> {
    fn new(bytes: &'a [u8]) -> Source<'a> {
        Source {
            bytes,
            at: 0,
            piece: 1,
            fail_at: None,
            peek: None,
            seen_meanwhile: None,
            leftovers_meanwhile: Vec::new(),
        }
    }

    fn failing_at(
        mut self,
        at: usize,
        target: &'a dyn Target,
        name: &'a str,
        leftovers: Leftovers<'a>,
    ) -> Source<'a> {
        self.fail_at = Some(at);
        self.peek = Some((target, name, leftovers));
        self
    }
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(fail_at) = self.fail_at {
            if self.at >= fail_at {
                if let Some((target, name, leftovers)) = self.peek.take() {
                    self.leftovers_meanwhile = leftovers();
                    self.seen_meanwhile = Some(match target.get(name) {
                        Ok(bytes) => Ok(bytes.len()),
                        Err(e) => Err(e.to_string()),
                    });
                }
                return Err(std::io::Error::other("the source broke off"));
            }
        }
        // 1 B, then ~64 KiB, then ~1 MiB pieces, never a multiple of a part.
        self.piece = (self.piece * 7 + 4093) % (1 << 20) + 1;
        let mut n = buf.len().min(self.piece).min(self.bytes.len() - self.at);
        if let Some(fail_at) = self.fail_at {
            n = n.min(fail_at - self.at);
        }
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn listed(names: &[(&str, usize)]) -> Vec<Listed> {
    names
        .iter()
        .map(|(name, bytes)| Listed {
            name: name.to_string(),
            bytes: *bytes as u64,
        })
        .collect()
}

fn is_not_found<T>(result: Result<T, TargetError>) -> bool {
    matches!(result, Err(TargetError::NotFound { .. }))
}

/// Reads `reader` to its end in small, uneven reads.
fn read_all(mut reader: impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0; 7777];
    loop {
        let n = reader.read(&mut buf).expect("read the opened object");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Lists the remains of unfinished writes a target keeps out of sight (a directory's temp
/// files, S3's multipart uploads under way).
type Leftovers<'a> = &'a dyn Fn() -> Vec<String>;

/// What every target must do. A large write streams (its remains are there while it is under
/// way), and none of them outlast a failed one.
fn contract(target: &dyn Target, leftovers: Leftovers) {
    let what = target.describe();

    // A missing object.
    assert!(
        is_not_found(target.get("backups/b-1/manifest.json")),
        "{what}: get of nothing"
    );
    assert!(
        is_not_found(target.open("backups/b-1/manifest.json")),
        "{what}: open of nothing"
    );
    assert!(
        is_not_found(target.delete("backups/b-1/manifest.json")),
        "{what}: delete of nothing"
    );
    assert_eq!(
        target.list("").unwrap(),
        vec![],
        "{what}: an empty target lists nothing"
    );

    // Names that name no object.
    for bad in ["", "/abs", "a//b", "a/./b", "a/../b", "ends.tmp"] {
        assert!(
            matches!(target.put(bad, b"x"), Err(TargetError::BadName { .. })),
            "{what}: put {bad:?}"
        );
        assert!(
            matches!(target.get(bad), Err(TargetError::BadName { .. })),
            "{what}: get {bad:?}"
        );
    }

    // put and get, a replacement, an empty object.
    let manifest = pattern(1000, 1);
    target
        .put("backups/b-1/manifest.json", b"an older version")
        .unwrap();
    target.put("backups/b-1/manifest.json", &manifest).unwrap();
    assert_eq!(
        target.get("backups/b-1/manifest.json").unwrap(),
        manifest,
        "{what}: replaced"
    );
    assert_eq!(
        read_all(target.open("backups/b-1/manifest.json").unwrap()),
        manifest
    );
    target.put("empty", b"").unwrap();
    assert_eq!(target.get("empty").unwrap(), b"", "{what}: an empty object");
    assert_eq!(read_all(target.open("empty").unwrap()), b"");

    // A large stream (a multipart upload in S3), read back whole and by ranges.
    let large = pattern(20 * MIB + 12345, 2);
    let stored = target
        .put_reader("backups/b-10/data", &mut Source::new(&large))
        .unwrap();
    assert_eq!(
        stored,
        large.len() as u64,
        "{what}: put_reader answers the bytes stored"
    );
    assert!(
        target.get("backups/b-10/data").unwrap() == large,
        "{what}: get of a large object"
    );
    assert!(
        read_all(target.open("backups/b-10/data").unwrap()) == large,
        "{what}: open of a large object"
    );
    // A reader dropped early lets go.
    let mut half = target.open("backups/b-10/data").unwrap();
    let mut first = vec![0; MIB];
    half.read_exact(&mut first).unwrap();
    assert_eq!(first, large[..MIB]);
    drop(half);
    // Exactly one part's worth, and a small stream.
    let one_part = pattern(8 * MIB, 3);
    let stored = target
        .put_reader("backups/b-2/part", &mut Source::new(&one_part))
        .unwrap();
    assert_eq!(stored, one_part.len() as u64);
    assert!(
        target.get("backups/b-2/part").unwrap() == one_part,
        "{what}: one part"
    );
    let small = pattern(3000, 4);
    target
        .put_reader(
            "archive/7/00000000000000000001-00000000000000000009",
            &mut Source::new(&small),
        )
        .unwrap();

    // Listing: by prefix (not only whole parts of names), in name order, with sizes.
    let all = [
        ("archive/7/00000000000000000001-00000000000000000009", 3000),
        ("backups/b-1/manifest.json", manifest.len()),
        ("backups/b-10/data", large.len()),
        ("backups/b-2/part", one_part.len()),
        ("empty", 0),
    ];
    assert_eq!(
        target.list("").unwrap(),
        listed(&all),
        "{what}: list everything"
    );
    assert_eq!(
        target.list("backups/").unwrap(),
        listed(&all[1..4]),
        "{what}: list backups/"
    );
    assert_eq!(
        target.list("backups/b-1").unwrap(),
        listed(&all[1..3]),
        "{what}: list backups/b-1"
    );
    assert_eq!(
        target.list("backups/b-1/").unwrap(),
        listed(&all[1..2]),
        "{what}: list backups/b-1/"
    );
    assert_eq!(target.list("archive/7/").unwrap(), listed(&all[..1]));
    assert_eq!(target.list("e").unwrap(), listed(&all[4..]));
    assert_eq!(target.list("backups/b-3").unwrap(), vec![]);
    assert_eq!(target.list("nothing/here/").unwrap(), vec![]);

    // A write whose source fails halfway leaves nothing: not while under way, not after.
    let name = "backups/b-3/data";
    // (Past two whole parts of an S3 multipart upload.)
    let mut source = Source::new(&large).failing_at(18 * MIB + 5, target, name, leftovers);
    let e = target.put_reader(name, &mut source).unwrap_err();
    assert!(matches!(e, TargetError::Io { .. }), "{what}: {e}");
    assert!(
        e.to_string().contains("the source broke off"),
        "{what}: {e}"
    );
    let meanwhile = source.seen_meanwhile.expect("the source failed");
    assert!(
        meanwhile
            .as_ref()
            .is_err_and(|e| e.contains("does not exist")),
        "{what}: while the write was under way, get answered {meanwhile:?}"
    );
    assert!(
        !source.leftovers_meanwhile.is_empty(),
        "{what}: a large write streams: it is under way before its source ends"
    );
    assert!(
        is_not_found(target.get(name)),
        "{what}: a failed write shows nothing"
    );
    assert_eq!(
        target.list("backups/b-3").unwrap(),
        vec![],
        "{what}: nor lists it"
    );
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "{what}: a failed write leaves nothing behind"
    );
    // ... and a failed replacement leaves the old object as it was.
    let name = "backups/b-2/part";
    let mut source = Source::new(&large).failing_at(17 * MIB, target, name, leftovers);
    assert!(target.put_reader(name, &mut source).is_err());
    assert_eq!(
        source.seen_meanwhile,
        Some(Ok(one_part.len())),
        "{what}: the old object meanwhile"
    );
    assert!(
        target.get(name).unwrap() == one_part,
        "{what}: a failed replacement keeps the old"
    );
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "{what}: a failed replacement leaves nothing"
    );
    assert_eq!(
        target.list("").unwrap(),
        listed(&all),
        "{what}: the failed writes changed nothing"
    );

    // Delete.
    target.delete("backups/b-10/data").unwrap();
    assert!(
        is_not_found(target.get("backups/b-10/data")),
        "{what}: deleted"
    );
    assert!(
        is_not_found(target.open("backups/b-10/data")),
        "{what}: deleted"
    );
    assert!(
        is_not_found(target.delete("backups/b-10/data")),
        "{what}: deleted twice"
    );
    let mut rest = all.to_vec();
    rest.remove(2);
    assert_eq!(
        target.list("").unwrap(),
        listed(&rest),
        "{what}: after a delete"
    );
}

/// The files below `dir` whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn a_directory_meets_the_target_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("target");
    let target = open_target(root.to_str().unwrap()).unwrap();
    assert_eq!(target.describe(), root.display().to_string());
    contract(&*target, &|| files_ending(&root, bulwark_fs::TEMP_SUFFIX));
}

#[test]
fn an_s3_spec_opens_an_s3_target() {
    let e = open_target("s3://").err().expect("no bucket");
    assert!(matches!(e, TargetError::Setup { .. }), "{e}");
    assert!(e.to_string().contains("s3://bucket/optional/prefix"), "{e}");
}

/// An `s3s-fs` server on a free loopback port, storing under a temp directory; killed on drop.
/// What these tests ask of the server beyond starting it.
trait S3ServerExt {
    fn target(&self, spec: &str) -> S3Target;
    fn uploads_under_way(&self) -> Vec<String>;
}

impl S3ServerExt for S3Server {
    fn target(&self, spec: &str) -> S3Target {
        let endpoint = format!("http://{}", self.addr);
        S3Target::open_with(spec, |name| match name {
            "AWS_ACCESS_KEY_ID" => Some(self.access_key.clone()),
            "AWS_SECRET_ACCESS_KEY" => Some(self.secret_key.clone()),
            "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
            _ => None,
        })
        .unwrap()
    }

    /// Multipart uploads under way (s3s-fs keeps each as files `.upload*` in its root).
    fn uploads_under_way(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().to_string())
            .filter(|name| name.starts_with(".upload"))
            .collect()
    }
}

#[test]
fn s3_meets_the_target_contract() {
    let Some(bin) = s3_server_bin() else {
        return;
    };
    let server = S3Server::start(&bin, &["bulwark"]);
    let target = server.target("s3://bulwark/cluster-a/backups");
    assert_eq!(target.describe(), "s3://bulwark/cluster-a/backups");
    contract(&target, &|| server.uploads_under_way());

    // The prefix: the objects are below it in the bucket, and a target sees only its own.
    let whole_bucket = server.target("s3://bulwark");
    whole_bucket
        .put("cluster-a/backups-not", b"beside the prefix")
        .unwrap();
    whole_bucket.put("elsewhere", b"outside it").unwrap();
    assert_eq!(
        whole_bucket
            .get("cluster-a/backups/backups/b-1/manifest.json")
            .unwrap(),
        target.get("backups/b-1/manifest.json").unwrap()
    );
    assert!(server
        .root
        .path()
        .join("bulwark/cluster-a/backups/backups/b-1/manifest.json")
        .is_file());
    let names: Vec<String> = target
        .list("")
        .unwrap()
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(
        names,
        [
            "archive/7/00000000000000000001-00000000000000000009",
            "backups/b-1/manifest.json",
            "backups/b-2/part",
            "empty"
        ]
    );

    // Errors name the object and the target; a wrong key is refused, and no secret is told.
    let e = target.get("backups/none").unwrap_err().to_string();
    assert_eq!(
        e,
        "s3://bulwark/cluster-a/backups: backups/none does not exist"
    );
    let endpoint = format!("http://{}", server.addr);
    let stranger = S3Target::open_with("s3://bulwark", |name| match name {
        "AWS_ACCESS_KEY_ID" => Some(server.access_key.clone()),
        "AWS_SECRET_ACCESS_KEY" => Some("not-the-secret".into()),
        "AWS_ENDPOINT_URL" => Some(endpoint.clone()),
        _ => None,
    })
    .unwrap();
    let e = stranger.put("x", b"x").unwrap_err();
    assert!(matches!(e, TargetError::Io { .. }), "{e}");
    assert!(e.to_string().starts_with("s3://bulwark: write x: "), "{e}");
    assert!(!e.to_string().contains("not-the-secret"), "{e}");
    // (s3s-fs writes into a bucket that does not exist, so a listing shows the 404.)
    let e = server.target("s3://no-such-bucket").list("").unwrap_err();
    assert!(
        matches!(e, TargetError::Io { .. }),
        "a missing bucket is no missing object: {e}"
    );
    assert!(
        e.to_string().starts_with("s3://no-such-bucket: list : "),
        "{e}"
    );

    // Callable from any thread: the CLI's spawn_blocking ones, even an async task (blocking
    // it); and dropped there.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let from_tasks = runtime.block_on(async {
        let listed = tokio::task::spawn_blocking({
            let target = server.target("s3://bulwark/cluster-a/backups");
            move || target.list("backups/").unwrap().len()
        })
        .await
        .unwrap();
        let inline = server.target("s3://bulwark/cluster-a/backups");
        let got = inline.get("empty").unwrap();
        drop(inline);
        (listed, got)
    });
    assert_eq!(from_tasks, (2, Vec::new()));
}

/// Set for a child process of the S3 test (the environment is a process's): the spec to open.
const CHILD_SPEC: &str = "BULWARK_TEST_S3_CHILD_SPEC";

/// Opened as an operator would: `open_target` of an `s3://` spec, its settings from the
/// environment and a credentials file. Runs only as a child of the S3 test, which checks what
/// it stored.
#[test]
fn s3_child_opened_from_the_environment() {
    let Some(spec) = std::env::var_os(CHILD_SPEC) else {
        return;
    };
    let target = open_target(spec.to_str().unwrap()).unwrap();
    assert_eq!(target.describe(), spec.to_str().unwrap());
    target.put("from-the-environment", b"hello").unwrap();
    assert_eq!(target.get("from-the-environment").unwrap(), b"hello");
}

#[test]
fn s3_settings_come_from_the_environment_and_a_file() {
    let Some(bin) = s3_server_bin() else {
        return;
    };
    let server = S3Server::start(&bin, &["bulwark"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s3.env");
    // The environment goes first: the file's wrong key id is not used, its secret is.
    std::fs::write(
        &file,
        format!(
            "# test\nAWS_ACCESS_KEY_ID=not-this-one\nAWS_SECRET_ACCESS_KEY={}\n",
            server.secret_key
        ),
    )
    .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "s3_child_opened_from_the_environment",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_SPEC, "s3://bulwark/from/env")
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_ENDPOINT_URL", format!("http://{}", server.addr))
        .env("BULWARK_S3_CREDENTIALS_FILE", &file);
    for name in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION"] {
        child.env_remove(name);
    }
    let out = child.output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed: {said}");
    assert!(said.contains("1 passed"), "the child ran no test: {said}");
    let stored = server
        .target("s3://bulwark/from/env")
        .get("from-the-environment");
    assert_eq!(stored.unwrap(), b"hello");
}
