//! The deployment files in `deploy/` (docs/deploy.md): the Kubernetes manifests and the Helm
//! chart's rendered output pass a Kubernetes schema validator (kubernetes-validate, which
//! carries the schemas offline, in strict mode: an unknown field fails); the chart lints and
//! renders with Helm's own engine (helm-python-sdk, through deploy/helm/render.py); the
//! Dockerfile passes hadolint and the shell scripts shellcheck; the compose file passes
//! `docker-compose config`; and `deploy/k8s/make-secrets.sh` makes Secrets that the
//! StatefulSet's start script turns into a member's certificates and `bulwark start` flags.
//!
//! The tools are installed by .ci/run (a Python venv in BULWARK_DEPLOY_TOOLS; shellcheck and
//! docker-compose from Debian). Under CI=true a missing tool fails the test; elsewhere the test
//! says so and skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// `name` from the deployment tools' venv, else from PATH; `None` (outside CI) if it is in
/// neither. Under CI=true a missing tool panics: .ci/run installs every one.
fn tool(name: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("BULWARK_DEPLOY_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/bulwark-tools/deploy-venv/bin"))
        });
    let in_venv = venv.map(|v| v.join(name)).filter(|p| p.is_file());
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    };
    let found = in_venv.or_else(on_path);
    if found.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} is missing: .ci/run installs it (BULWARK_DEPLOY_TOOLS, apt)");
        }
        eprintln!("SKIPPED: {name} is not installed (.ci/run installs it)");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns the output text.
fn succeeds(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed:\n{}", text(&out));
    text(&out)
}

/// kubernetes-validate in strict mode over `files`; every resource must pass.
fn validate(validator: &Path, files: &[PathBuf]) -> String {
    let out = succeeds(Command::new(validator).arg("--strict").args(files));
    assert!(!out.contains("ERROR") && !out.contains("WARN"), "{out}");
    out
}

/// What the issue asks of the StatefulSet, the Services and the PodDisruptionBudget, in the
/// text of `manifests` (whatever produced it).
fn assert_deployment_shape(manifests: &str, replicas: u32) {
    for needed in [
        "kind: StatefulSet",
        &format!("replicas: {replicas}"),
        "podManagementPolicy: Parallel",
        "volumeClaimTemplates:",
        "path: /health/ready",
        "path: /health/live",
        "terminationGracePeriodSeconds:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "clusterIP: None",
        "publishNotReadyAddresses: true",
        "kind: PodDisruptionBudget",
        "maxUnavailable: 1",
        "fieldPath: metadata.name",
        "fieldPath: metadata.namespace",
        "/usr/local/bin/bulwark-statefulset-start",
        "mountPath: /etc/bulwark/certs",
        "value: /etc/bulwark/token/admin.token",
    ] {
        assert!(manifests.contains(needed), "no `{needed}` in:\n{manifests}");
    }
}

#[test]
fn the_kubernetes_manifests_pass_the_schema_validator() {
    let Some(validator) = tool("kubernetes-validate") else {
        return;
    };
    let files: Vec<PathBuf> = [
        "service.yaml",
        "statefulset.yaml",
        "pdb.yaml",
        "secrets.example.yaml",
    ]
    .iter()
    .map(|f| deploy(&format!("k8s/{f}")))
    .collect();
    let out = validate(&validator, &files);
    for resource in [
        "service/bulwark-peers",
        "service/bulwark ",
        "statefulset/bulwark",
        "poddisruptionbudget/bulwark",
        "secret/bulwark-certs",
        "secret/bulwark-admin-token",
    ] {
        assert!(out.contains(resource), "{resource} not validated:\n{out}");
    }
    let all: String = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    assert_deployment_shape(&all, 3);
    // kustomization.yaml applies every manifest but the Secrets' template.
    let kustomization = std::fs::read_to_string(deploy("k8s/kustomization.yaml")).unwrap();
    for f in ["service.yaml", "statefulset.yaml", "pdb.yaml"] {
        assert!(kustomization.contains(&format!("- {f}")), "{kustomization}");
    }
}

/// deploy/helm/render.py with `values` (JSON) into a file in `dir`; the output of the run.
fn render(python: &Path, dir: &Path, values: &str) -> (Output, PathBuf) {
    let out_file = dir.join(format!("rendered-{}.yaml", values.len()));
    let out = run(Command::new(python)
        .arg(deploy("helm/render.py"))
        .arg(deploy("helm/bulwark"))
        .args(["prod", "ledger"])
        .arg(&out_file)
        .arg(values));
    (out, out_file)
}

#[test]
fn the_helm_chart_lints_renders_and_passes_the_schema_validator() {
    let (Some(validator), Some(python)) = (tool("kubernetes-validate"), tool("python")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, defaults) = render(&python, dir.path(), "{}");
    assert!(out.status.success(), "{}", text(&out));
    let report = validate(&validator, std::slice::from_ref(&defaults));
    assert!(report.contains("statefulset/prod"), "{report}");
    let manifests = std::fs::read_to_string(&defaults).unwrap();
    assert_deployment_shape(&manifests, 3);
    assert!(manifests.contains("name: prod-peers"), "{manifests}");

    let five = r#"{"initialMembers": 5, "replicas": 5, "image": {"repository": "registry.example/bulwark", "tag": "1.2.3"}, "storage": {"size": "50Gi", "storageClassName": "fast"}, "extraArgs": ["--archive", "s3://bucket/prefix"]}"#;
    let (out, rendered) = render(&python, dir.path(), five);
    assert!(out.status.success(), "{}", text(&out));
    validate(&validator, std::slice::from_ref(&rendered));
    let manifests = std::fs::read_to_string(&rendered).unwrap();
    assert_deployment_shape(&manifests, 5);
    for needed in [
        "image: \"registry.example/bulwark:1.2.3\"",
        "storage: 50Gi",
        "storageClassName: fast",
        "- s3://bucket/prefix",
        "value: \"5\"",
    ] {
        assert!(manifests.contains(needed), "no `{needed}` in:\n{manifests}");
    }

    // Values a Raft cluster cannot run on are refused before anything renders.
    for bad in [
        r#"{"initialMembers": 4, "replicas": 4}"#,
        r#"{"initialMembers": 5}"#,
    ] {
        let (out, _) = render(&python, dir.path(), bad);
        assert!(!out.status.success(), "{bad} rendered:\n{}", text(&out));
    }
}

#[test]
fn the_dockerfile_and_the_scripts_pass_their_linters() {
    let (Some(hadolint), Some(shellcheck)) = (tool("hadolint"), tool("shellcheck")) else {
        return;
    };
    succeeds(Command::new(hadolint).arg(deploy("docker/Dockerfile")));
    succeeds(
        Command::new(shellcheck)
            .arg(deploy("docker/statefulset-start.sh"))
            .arg(deploy("k8s/make-secrets.sh")),
    );
    let dockerfile = std::fs::read_to_string(deploy("docker/Dockerfile")).unwrap();
    for needed in [
        "AS build",
        "USER 10001",
        "VOLUME",
        "HEALTHCHECK",
        "EXPOSE 7070 7170",
    ] {
        assert!(
            dockerfile.contains(needed),
            "no `{needed}` in the Dockerfile"
        );
    }
}

#[test]
fn the_compose_file_is_valid() {
    let Some(compose) = tool("docker-compose") else {
        return;
    };
    let file = deploy("compose/compose.yml");
    let config = succeeds(Command::new(compose).arg("-f").arg(&file).arg("config"));
    let source = std::fs::read_to_string(&file).unwrap();
    for node in 1..=3 {
        assert!(
            config.contains(&format!("node{node}:/var/lib/bulwark")),
            "{config}"
        );
        assert!(
            source.contains(&format!("--member {node}=node{node}:7170=node{node}:7070")),
            "{source}"
        );
        assert!(source.contains(&format!("--node-id {node} --tls-dir /certs/node{node}")));
    }
    assert!(
        config.contains("condition: service_completed_successfully"),
        "{config}"
    );
}

/// The files of the Secrets in `secrets_yaml` as Kubernetes mounts them: one file per key,
/// its value decoded.
fn mount_secrets(secrets_yaml: &Path, dir: &Path) {
    let yaml = std::fs::read_to_string(secrets_yaml).unwrap();
    let mut in_data = false;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_data = line == "data:";
            continue;
        }
        if !in_data {
            continue;
        }
        let (key, value) = line.trim().split_once(": ").unwrap();
        let decoded = succeeds(
            Command::new("sh")
                .args(["-c", "printf %s \"$1\" | base64 -d > \"$2\"", "sh", value])
                .arg(dir.join(key)),
        );
        assert!(decoded.is_empty());
    }
}

/// The start script as pod `pod` with the Secrets mounted from `certs`; `bulwark` replaced by
/// a script that records its arguments. Returns the output and the recorded arguments.
fn start_as(pod: &str, certs: &Path, work: &Path) -> (Output, Vec<String>) {
    let record = work.join(format!("{pod}.args"));
    let fake = work.join("fake-bulwark");
    std::fs::write(
        &fake,
        "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > \"$RECORD\"\n",
    )
    .unwrap();
    succeeds(Command::new("chmod").arg("+x").arg(&fake));
    let out = run(Command::new(deploy("docker/statefulset-start.sh"))
        .arg("--archive")
        .arg("/backups")
        .env("POD_NAME", pod)
        .env("POD_NAMESPACE", "ledger")
        .env("BULWARK_PEER_SERVICE", "bulwark-peers")
        .env("BULWARK_CERTS_DIR", certs)
        .env("BULWARK_TLS_DIR", work.join(format!("{pod}-tls")))
        .env("BULWARK_BIN", &fake)
        .env("RECORD", &record));
    let args = std::fs::read_to_string(&record)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    (out, args)
}

#[test]
fn make_secrets_feeds_the_statefulset_start_script() {
    let Some(validator) = tool("kubernetes-validate") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("secrets");
    // Four members' certificates: three voters to start with, and one to grow by.
    let made = succeeds(
        Command::new(deploy("k8s/make-secrets.sh"))
            .arg(&out_dir)
            .args(["ledger", "bulwark", "4"])
            .env("BULWARK", env!("CARGO_BIN_EXE_bulwark")),
    );
    assert!(made.contains("secrets.yaml"), "{made}");
    let secrets = out_dir.join("secrets.yaml");
    let report = validate(&validator, std::slice::from_ref(&secrets));
    assert!(
        report.contains("secret/bulwark-certs") && report.contains("secret/bulwark-admin-token")
    );
    // A second run never replaces the CA.
    let again = run(Command::new(deploy("k8s/make-secrets.sh"))
        .arg(&out_dir)
        .arg("ledger")
        .env("BULWARK", env!("CARGO_BIN_EXE_bulwark")));
    assert!(!again.status.success(), "{}", text(&again));

    let certs = work.path().join("mounted");
    std::fs::create_dir(&certs).unwrap();
    mount_secrets(&secrets, &certs);
    let token = std::fs::read_to_string(certs.join("admin.token")).unwrap();
    assert!(token.starts_with("bulwark_"), "{token}");

    let name = |i: u32| format!("bulwark-{i}.bulwark-peers.ledger.svc.cluster.local");
    let (out, args) = start_as("bulwark-1", &certs, work.path());
    assert!(out.status.success(), "{}", text(&out));
    let joined = args.join(" ");
    assert!(joined.starts_with("start --node-id 2 "), "{joined}");
    assert!(
        joined.contains("--peer-listen 0.0.0.0:7170 --http-listen 0.0.0.0:7070"),
        "{joined}"
    );
    for i in 0..3 {
        let member = format!("--member {}={}:7170={}:7070", i + 1, name(i), name(i));
        assert!(joined.contains(&member), "no `{member}` in {joined}");
    }
    assert!(
        !joined.contains("--join") && joined.contains(" --archive /backups "),
        "{joined}"
    );
    let tls = work.path().join("bulwark-1-tls");
    assert_eq!(
        std::fs::read(tls.join("node.crt")).unwrap(),
        std::fs::read(certs.join("node-2.crt")).unwrap()
    );
    assert!(tls.join("api.key").is_file() && tls.join("ca.crt").is_file());

    // A pod beyond the initial voters joins, naming itself too.
    let (out, args) = start_as("bulwark-3", &certs, work.path());
    assert!(out.status.success(), "{}", text(&out));
    let joined = args.join(" ");
    assert!(joined.contains("--node-id 4 "), "{joined}");
    assert!(
        joined.contains(&format!(
            "--join --member 4={}:7170={}:7070",
            name(3),
            name(3)
        )),
        "{joined}"
    );
    // Without its certificate a pod is refused, naming the file.
    std::fs::remove_file(certs.join("node-3.key")).unwrap();
    let (out, args) = start_as("bulwark-2", &certs, work.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("node-3.key is missing"),
        "{}",
        text(&out)
    );
    assert!(args.is_empty(), "{args:?}");
}
