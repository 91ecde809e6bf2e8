//! Issue 4: object storage targets proven against real emulators.
//!
//! One conformance suite runs unchanged against file://, S3 (moto), Azure Blob (Azurite)
//! and GCS (the XML-API front over moto); further tests cover a split target
//! (snapshot in S3, keys in Azure), proxies, `config check --connect` and leftovers.
//!
//! Cloud backends are reached through a [`Relay`], a loopback TCP forwarder that can cut
//! the network path mid-upload: the emulator keeps its state, so the test can prove with
//! the emulator's own listing that an interrupted backup wrote no manifest (killing moto
//! would also erase the evidence, since it keeps objects in memory).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::fixture::{Fixture, azure_target, s3_target};
use common::*;

const CLUSTER: &str = "test";
const OBJECTS: [&str; 3] = [
    "manifest.json",
    "snapshot.db.zst.age",
    "static_kuberesources.tar.zst.age",
];

// ------------------------------------------------------------------ a cuttable network path

struct RelayState {
    cut: AtomicBool,
    stop: AtomicBool,
    /// Bytes forwarded from the tool towards the store.
    sent: AtomicU64,
    /// Both ends of every forwarded connection, to shut them down on a cut.
    conns: Mutex<Vec<TcpStream>>,
}

/// Loopback TCP forwarder to `127.0.0.1:upstream`. [`Relay::cut`] shuts every open
/// connection and closes new ones at once (the store "goes away" mid-request);
/// [`Relay::heal`] forwards again.
struct Relay {
    port: u16,
    state: Arc<RelayState>,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(RelayState {
            cut: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            conns: Mutex::new(Vec::new()),
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            while !st.stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if st.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    up.try_clone(),
                    client.try_clone(),
                    up.try_clone(),
                ) else {
                    continue;
                };
                st.conns.lock().unwrap().extend([c3, u3]);
                let counting = Arc::clone(&st);
                std::thread::spawn(move || pump(client, up, Some(counting)));
                std::thread::spawn(move || pump(u2, c2, None));
            }
        });
        Relay { port, state }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for s in self.state.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, count: Option<Arc<RelayState>>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(state) = &count {
            if state.cut.load(Ordering::SeqCst) {
                break;
            }
            state.sent.fetch_add(n as u64, Ordering::SeqCst);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

// ------------------------------------------------------------------ backend descriptions

/// How the suite makes an upload fail mid-way.
enum Interrupt<'a> {
    /// Cut the network path between the tool and the store.
    Relay(&'a Relay),
    /// Delete the backup's directory under this file:// root while the snapshot streams
    /// (the share disappears under the writer).
    RemoveDir(&'a Path),
}

type RawPut<'a> = Box<dyn Fn(&str, &[u8]) + 'a>;

/// One storage backend under test: target YAML plus raw access through the backend's own API.
struct Backend<'a> {
    name: &'static str,
    /// Flow-mapping YAML for `targets.snapshot`.
    target: String,
    /// Every object key below the target URL (e.g. `test/<id>/manifest.json`), via the backend's own API.
    raw_keys: Box<dyn Fn() -> BTreeSet<String> + 'a>,
    /// Writes an object below the target URL, via the backend's own API.
    raw_put: RawPut<'a>,
    interrupt: Interrupt<'a>,
}

fn strip_prefix_all(keys: Vec<String>, prefix: &str) -> BTreeSet<String> {
    keys.into_iter()
        .map(|k| {
            k.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("key {k} outside {prefix}"))
                .to_string()
        })
        .collect()
}

fn s3_target_at(endpoint: &str, bucket: &str, prefix: &str, secret: &str) -> String {
    format!(
        "{{ url: \"s3://{bucket}/{prefix}\", options: {{ aws_endpoint: \"{endpoint}\", aws_allow_http: \"true\", aws_region: us-east-1, aws_access_key_id: test, aws_secret_access_key: \"{secret}\", aws_virtual_hosted_style_request: \"false\" }} }}"
    )
}

fn azure_target_at(endpoint: &str, container: &str, prefix: &str, key: &str) -> String {
    format!(
        "{{ url: \"az://{container}/{prefix}\", options: {{ azure_storage_account_name: {AZURITE_ACCOUNT}, azure_storage_account_key: \"{key}\", azure_storage_endpoint: \"{endpoint}/{AZURITE_ACCOUNT}\", azure_allow_http: \"true\" }} }}"
    )
}

/// GCS target whose service account points object_store at `base_url` (the relay before the front).
fn gcs_target_at(dir: &Path, base_url: &str, bucket: &str, prefix: &str) -> String {
    let sa = dir.join(format!("gcs-{bucket}.json"));
    write_gcs_service_account(&sa, base_url);
    format!(
        "{{ url: \"gs://{bucket}/{prefix}\", options: {{ google_service_account: \"{}\", allow_http: \"true\" }} }}",
        sa.display()
    )
}

// ------------------------------------------------------------------ small helpers

/// The objects a complete backup `id` consists of, as keys below the target.
fn backup_objects(id: &str) -> BTreeSet<String> {
    OBJECTS
        .iter()
        .map(|o| format!("{CLUSTER}/{id}/{o}"))
        .collect()
}

/// `cluster-backup.sh`'s timestamp for an id: `20261123T104649Z` → `2026-11-23_104649`.
fn restore_ts(id: &str) -> String {
    format!("{}-{}-{}_{}", &id[0..4], &id[4..6], &id[6..8], &id[9..15])
}

fn manifests(keys: &BTreeSet<String>) -> BTreeSet<String> {
    keys.iter()
        .filter(|k| k.ends_with("/manifest.json"))
        .cloned()
        .collect()
}

/// `verify --all` with both identities succeeds and says `<id> OK` for each of `ids`.
fn verify_all_ok(fx: &Fixture, config: &Path, ids: &[&str], name: &str) {
    let out = run_ok(
        fx.cmd(config)
            .args(["verify", "--all"])
            .args(fx.identity_args()),
    );
    for id in ids {
        assert!(
            stdout_str(&out).contains(&format!("{id} OK")),
            "{name}: {}",
            describe_output(&out)
        );
    }
}

/// Adds `read_rate_limit` under `source.etcd` (Fixture writes `timeout: 5s` there).
fn with_rate_limit(config: &Path, limit: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains("    timeout: 5s\n"));
    let text = text.replace(
        "    timeout: 5s\n",
        &format!("    timeout: 5s\n    read_rate_limit: {limit}\n"),
    );
    std::fs::write(config, text).unwrap();
}

// ------------------------------------------------------------------ the conformance suite

fn conformance(b: &Backend) {
    let name = b.name;
    let etcd = EtcdServer::start(false);
    etcd.load(2000, 300);
    let fx = Fixture::new();
    let source = fx.etcd_source_for(&etcd);
    let targets = format!("  snapshot: {}\n", b.target);
    // A config for this backend with top-level `extra`.
    let write_config = |name: &str, extra: &str| fx.write_config(name, &source, &targets, extra);
    let config = write_config("config.yaml", "");

    // Two backups, newest first in `list`.
    let first = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let second = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    assert!(
        second > first,
        "{name}: ids sort in time order: {first} {second}"
    );
    let before = etcd.dump();
    let listed = list_json(&fx, &config);
    assert_eq!(
        complete_ids(&listed),
        [second.clone(), first.clone()],
        "{name}: list --json: {listed:?}"
    );
    assert_eq!(listed.len(), 2, "{name}: {listed:?}");
    let raw = without_lock_generations((b.raw_keys)());
    let expected: BTreeSet<String> = backup_objects(&first)
        .into_iter()
        .chain(backup_objects(&second))
        .collect();
    assert_eq!(
        raw, expected,
        "{name}: exactly both backups' objects in the store (no held lock, no marker)"
    );

    // Verify: stored digests without identities, full contents with both.
    let out = run_ok(fx.cmd(&config).args(["verify", "--latest"]));
    assert!(
        stdout_str(&out).contains(&format!("{second} OK")),
        "{name}: {}",
        describe_output(&out)
    );
    verify_all_ok(&fx, &config, &[&first, &second], name);

    // Restore the latest: the pair cluster-restore.sh takes.
    let to = fx.path("restored");
    run_ok(
        fx.cmd(&config)
            .args(["restore", "--latest", "--to"])
            .arg(&to)
            .args(fx.identity_args()),
    );
    let ts = restore_ts(&second);
    let snapshot = to.join(format!("snapshot_{ts}.db"));
    let archive = to.join(format!("static_kuberesources_{ts}.tar.gz"));
    assert_eq!(
        relative_files(&to),
        BTreeSet::from([
            format!("snapshot_{ts}.db"),
            format!("static_kuberesources_{ts}.tar.gz")
        ]),
        "{name}: exactly the restored pair"
    );
    snapshot_restore_check(&snapshot)
        .unwrap_or_else(|e| panic!("{name}: etcdctl rejects the restored snapshot: {e}"));
    let restored = EtcdServer::start_from_snapshot(&snapshot);
    assert_eq!(
        restored.dump(),
        before,
        "{name}: the restored snapshot holds the cluster's keys"
    );
    drop(restored);
    let tar = run_ok(Command::new("tar").arg("tzf").arg(&archive));
    assert!(
        stdout_str(&tar)
            .lines()
            .any(|l| l.ends_with("kube-apiserver-pod-7/secrets/encryption-config")),
        "{name}: {}",
        describe_output(&tar)
    );

    // Retention keep_last: 1 leaves the newest, in `list` and in the store.
    let prune_config = write_config("prune.yaml", "retention: { keep_last: 1 }\n");
    let out = run_ok(fx.cmd(&prune_config).arg("prune"));
    let text = stdout_str(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("delete") && l.contains(&first)),
        "{name}: {text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("keep") && l.contains(&second)),
        "{name}: {text}"
    );
    assert_eq!(
        complete_ids(&list_json(&fx, &config)),
        std::slice::from_ref(&second),
        "{name}"
    );
    assert_eq!(
        without_lock_generations((b.raw_keys)()),
        backup_objects(&second),
        "{name}: only the kept backup's objects remain"
    );

    // Leftovers: a directory without a manifest goes after incomplete_grace, not before.
    let stray = "20200101T000000Z";
    let stray_keys = [
        format!("{CLUSTER}/{stray}/in-progress.json"),
        format!("{CLUSTER}/{stray}/snapshot.db.zst.age"),
    ];
    for key in &stray_keys {
        (b.raw_put)(key, b"partial upload");
    }
    sleep(Duration::from_secs(2));
    // Whether `prune` said it removed the stray directory.
    let removed_stray = |out: &Output| {
        stdout_str(out)
            .lines()
            .any(|l| l.starts_with("removed") && l.contains(stray))
    };
    let patient = write_config(
        "grace-1h.yaml",
        "retention: { keep_last: 1, incomplete_grace: 1h }\n",
    );
    let out = run_ok(fx.cmd(&patient).arg("prune"));
    assert!(!removed_stray(&out), "{name}: {}", describe_output(&out));
    let raw = (b.raw_keys)();
    for key in &stray_keys {
        assert!(
            raw.contains(key),
            "{name}: a fresh leftover is kept: {raw:?}"
        );
    }
    let eager = write_config(
        "grace-1s.yaml",
        "retention: { keep_last: 1, incomplete_grace: 1s }\n",
    );
    let out = run_ok(fx.cmd(&eager).arg("prune"));
    assert!(removed_stray(&out), "{name}: {}", describe_output(&out));
    assert_eq!(
        without_lock_generations((b.raw_keys)()),
        backup_objects(&second),
        "{name}: the old leftover is gone, the backup untouched"
    );

    // An upload that fails mid-way: exit 1, no manifest, nothing new in `list`.
    etcd.load_with(700, 100_000, "/registry/big/", 2);
    let slow = write_config("slow.yaml", "");
    with_rate_limit(&slow, "20MiB");
    let out = interrupted_backup(b, &fx, &slow);
    assert_eq!(
        exit_code(&out),
        1,
        "{name}: an interrupted upload is a runtime failure\n{}",
        describe_output(&out)
    );
    let stderr = stderr_str(&out);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{name}: no error line: {stderr}"));
    eprintln!("{name}: interrupted backup: {error}");
    assert!(
        error.contains("uploading the snapshot") && error.contains("snapshot.db.zst.age"),
        "{name}: the error names the failed upload: {error}"
    );
    if let Interrupt::Relay(_) = b.interrupt {
        // The part's own failure, not that of the abort which the dead store refuses too.
        assert!(error.contains("PUT "), "{name}: {error}");
    }
    let raw = (b.raw_keys)();
    assert_eq!(
        manifests(&raw),
        BTreeSet::from([format!("{CLUSTER}/{second}/manifest.json")]),
        "{name}: no manifest for the interrupted run: {raw:?}"
    );
    let listed = list_json(&fx, &config);
    assert_eq!(
        complete_ids(&listed),
        std::slice::from_ref(&second),
        "{name}: no new complete backup: {listed:?}"
    );
    // What the dead run left behind goes with the next prune after the grace period, but
    // not while its lock (which a cut-off store kept) says it may still be running.
    sleep(Duration::from_secs(2));
    // Its lock generation stays in the store (the store was cut off when it tried to
    // release it), but its holder is provably gone (this host, this boot, pid gone), so
    // it neither holds prune back nor blocks the next backup.
    let without_lock = || without_lock_generations((b.raw_keys)());
    run_ok(fx.cmd(&eager).arg("prune"));
    assert_eq!(
        without_lock(),
        backup_objects(&second),
        "{name}: leftovers of the interrupted run are collected"
    );
}

/// Keys without the lock's generations (`<cluster>/lock/<n>`): the released lock's last
/// generation always stays, and is the lock tests' business.
fn without_lock_generations(keys: BTreeSet<String>) -> BTreeSet<String> {
    keys.into_iter()
        .filter(|k| !k.starts_with(&format!("{CLUSTER}/lock/")))
        .collect()
}

/// Runs `backup` and makes its snapshot upload fail while the snapshot streams.
fn interrupted_backup(b: &Backend, fx: &Fixture, config: &Path) -> Output {
    let mut child = fx
        .cmd(config)
        .arg("backup")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn backup");
    let started = Instant::now();
    match b.interrupt {
        Interrupt::Relay(relay) => {
            // Past the small objects: the first 8 MiB snapshot part is on the wire.
            let base = relay.sent();
            let reached = wait_until(Duration::from_secs(60), || {
                relay.sent() > base + 2 * 1024 * 1024 || child.try_wait().ok().flatten().is_some()
            });
            assert!(
                reached && child.try_wait().unwrap().is_none(),
                "{}: the backup ended before the upload could be cut: {}",
                b.name,
                describe_output(&child.wait_with_output().unwrap())
            );
            relay.cut();
            let out = child.wait_with_output().unwrap();
            relay.heal();
            eprintln!(
                "{}: interrupted backup ended after {:?}",
                b.name,
                started.elapsed()
            );
            out
        }
        Interrupt::RemoveDir(root) => {
            // The snapshot's staging file (`snapshot.db.zst.age#N`) has its first part.
            let mut staging: Option<PathBuf> = None;
            let reached = wait_until(Duration::from_secs(60), || {
                if child.try_wait().ok().flatten().is_some() {
                    return true;
                }
                staging = relative_files(root)
                    .into_iter()
                    .find(|f| f.contains("snapshot.db.zst.age#"))
                    .map(|f| root.join(f))
                    .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0));
                staging.is_some()
            });
            let staging = match (reached, staging) {
                (true, Some(p)) if child.try_wait().unwrap().is_none() => p,
                _ => panic!(
                    "{}: the backup ended before the upload could be cut: {}",
                    b.name,
                    describe_output(&child.wait_with_output().unwrap())
                ),
            };
            std::fs::remove_dir_all(staging.parent().unwrap()).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

// ------------------------------------------------------------------ the four backends

#[test]
fn conformance_file() {
    let fx_dir = tempfile::tempdir().unwrap();
    let root = fx_dir.path().join("nfs");
    std::fs::create_dir_all(&root).unwrap();
    let backend = Backend {
        name: "file",
        target: format!("{{ url: \"file://{}\" }}", root.display()),
        raw_keys: Box::new(|| relative_files(&root)),
        raw_put: Box::new(|key, data| {
            let path = root.join(key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        }),
        interrupt: Interrupt::RemoveDir(&root),
    };
    conformance(&backend);
}

#[test]
fn conformance_s3_moto() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let relay = Relay::start(moto.port());
    let target = s3_target_at(&relay.endpoint(), "backups", "etcd", "test");
    conformance(&on_moto("s3", target, &moto, &relay));
}

#[test]
fn conformance_azure_azurite() {
    let azurite = Azurite::start();
    azurite.create_container("backups");
    let relay = Relay::start(azurite.port());
    let backend = Backend {
        name: "azure",
        target: azure_target_at(&relay.endpoint(), "backups", "etcd", AZURITE_KEY),
        raw_keys: Box::new(|| strip_prefix_all(azurite.list_blobs("backups", "etcd/"), "etcd/")),
        raw_put: Box::new(|key, data| azurite.upload("backups", &format!("etcd/{key}"), data)),
        interrupt: Interrupt::Relay(&relay),
    };
    conformance(&backend);
}

#[test]
fn conformance_gcs_front() {
    let moto = Moto::start();
    let front = GcsFront::start(&moto);
    front.create_bucket("backups");
    let relay = Relay::start(front_port(&front));
    let dir = tempfile::tempdir().unwrap();
    let target = gcs_target_at(dir.path(), &relay.endpoint(), "backups", "etcd");
    conformance(&on_moto("gcs", target, &moto, &relay));
}

/// A backend whose objects are in moto's `backups` bucket below `etcd/`, reached through
/// `relay` (S3 directly, GCS through the front).
fn on_moto<'a>(
    name: &'static str,
    target: String,
    moto: &'a Moto,
    relay: &'a Relay,
) -> Backend<'a> {
    Backend {
        name,
        target,
        raw_keys: Box::new(|| strip_prefix_all(moto.list_keys("backups", "etcd/"), "etcd/")),
        raw_put: Box::new(|key, data| moto.put_object("backups", &format!("etcd/{key}"), data)),
        interrupt: Interrupt::Relay(relay),
    }
}

fn front_port(front: &GcsFront) -> u16 {
    front
        .endpoint()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("front endpoint has a port")
}

// ------------------------------------------------------------------ split target

#[test]
fn split_target_snapshot_in_s3_keys_in_azure() {
    let moto = Moto::start();
    moto.create_bucket("snaps");
    let azurite = Azurite::start();
    azurite.create_container("keys");
    let etcd = EtcdServer::start(false);
    etcd.load(500, 300);
    let fx = Fixture::new();
    let source = fx.etcd_source_for(&etcd);
    let targets = format!(
        "  snapshot: {}\n  static_resources: {}\n",
        s3_target(&moto, "snaps", "etcd"),
        azure_target(&azurite, "keys", "etcd")
    );
    let config = fx.write_config("config.yaml", &source, &targets, "");
    let first = last_line(&run_ok(fx.cmd(&config).arg("backup")));

    // The keys of backup `id` on one side: its manifest copy and `artifact`.
    let side = |id: &str, artifact: &str| -> BTreeSet<String> {
        [
            format!("etcd/{CLUSTER}/{id}/manifest.json"),
            format!("etcd/{CLUSTER}/{id}/{artifact}"),
        ]
        .into()
    };
    let s3_side = |id: &str| side(id, "snapshot.db.zst.age");
    let azure_side = |id: &str| side(id, "static_kuberesources.tar.zst.age");
    // Every key in S3 and in Azure.
    let stored = || -> (BTreeSet<String>, BTreeSet<String>) {
        (
            // The lock lives in the snapshot target (its released generation stays).
            moto.list_keys("snaps", "")
                .into_iter()
                .filter(|k| !k.starts_with(&format!("etcd/{CLUSTER}/lock/")))
                .collect(),
            azurite.list_blobs("keys", "").into_iter().collect(),
        )
    };
    let (in_s3, in_azure) = stored();
    assert_eq!(in_s3, s3_side(&first), "the snapshot only in S3");
    assert_eq!(
        in_azure,
        azure_side(&first),
        "the keys archive and a manifest copy only in Azure"
    );
    let manifest_key = format!("etcd/{CLUSTER}/{first}/manifest.json");
    let manifest_s3 = moto.get_object("snaps", &manifest_key).unwrap();
    assert_eq!(
        azurite.download("keys", &manifest_key).unwrap(),
        manifest_s3,
        "the Azure manifest is a copy of the commit point"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&manifest_s3).unwrap();
    assert_eq!(
        manifest["artifacts"]["snapshot"]["target"],
        "s3://snaps/etcd"
    );
    assert_eq!(
        manifest["artifacts"]["static_resources"]["target"],
        "az://keys/etcd"
    );

    // Each artifact opens with the stock CLI and its own identity only.
    let snapshot_age = fx.path("snapshot.db.zst.age");
    let static_age = fx.path("static.tar.zst.age");
    std::fs::write(
        &snapshot_age,
        moto.get_object(
            "snaps",
            &format!("etcd/{CLUSTER}/{first}/snapshot.db.zst.age"),
        )
        .unwrap(),
    )
    .unwrap();
    std::fs::write(
        &static_age,
        azurite
            .download(
                "keys",
                &format!("etcd/{CLUSTER}/{first}/static_kuberesources.tar.zst.age"),
            )
            .unwrap(),
    )
    .unwrap();
    let scratch = fx.path("scratch");
    let err = age_decrypt(&fx.static_key, &snapshot_age, &scratch)
        .expect_err("the keys identity must not open the snapshot");
    assert!(err.contains("no identity matched"), "{err}");
    let err = age_decrypt(&fx.snapshot_key, &static_age, &scratch)
        .expect_err("the snapshot identity must not open the keys archive");
    assert!(err.contains("no identity matched"), "{err}");
    age_decrypt(&fx.snapshot_key, &snapshot_age, &fx.path("snapshot.db.zst"))
        .expect("age -d with the snapshot identity");
    age_decrypt(&fx.static_key, &static_age, &fx.path("static.tar.zst"))
        .expect("age -d with the keys identity");
    let snapshot = fx.path("snapshot.db");
    age_zstd_decrypt(&fx.snapshot_key, &snapshot_age, &snapshot).unwrap();
    snapshot_restore_check(&snapshot).expect("etcdctl accepts the snapshot");
    let tar = fx.path("static.tar");
    age_zstd_decrypt(&fx.static_key, &static_age, &tar).unwrap();
    let listing = run_ok(Command::new("tar").arg("tf").arg(&tar));
    assert!(
        stdout_str(&listing).contains("secrets/encryption-config"),
        "{}",
        describe_output(&listing)
    );

    verify_all_ok(&fx, &config, &[&first], "split");

    // Prune removes a backup from both sides.
    let second = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    let prune_config = fx.write_config(
        "prune.yaml",
        &source,
        &targets,
        "retention: { keep_last: 1 }\n",
    );
    run_ok(fx.cmd(&prune_config).arg("prune"));
    let (in_s3, in_azure) = stored();
    assert_eq!(in_s3, s3_side(&second), "S3 side pruned");
    assert_eq!(in_azure, azure_side(&second), "Azure side pruned");
}

// ------------------------------------------------------------------ proxy

/// The destination port of every logged proxy request (`CONNECT h:p` or `METHOD http://h:p/...`).
fn proxied_ports(lines: &[String]) -> Vec<u16> {
    lines
        .iter()
        .map(|l| {
            let target = l.split_whitespace().last().unwrap_or_default();
            let hostport = target
                .strip_prefix("http://")
                .unwrap_or(target)
                .split('/')
                .next()
                .unwrap_or_default();
            hostport
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("unparseable proxy log line {l:?}"))
        })
        .collect()
}

#[test]
fn store_traffic_goes_through_the_proxy_and_etcd_traffic_does_not() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let proxy = CountingProxy::start();
    let etcd = EtcdServer::start(false);
    etcd.load(300, 300);
    let fx = Fixture::new();
    let source = fx.etcd_source_for(&etcd);
    let config = fx.write_config(
        "config.yaml",
        &source,
        &format!("  snapshot: {}\n", s3_target(&moto, "backups", "etcd")),
        "",
    );
    let moto_addr = format!("127.0.0.1:{}/", moto.port());
    let etcd_port = etcd.client_port();

    // No NO_PROXY: reqwest does not exempt loopback, so even 127.0.0.1 goes through it.
    let id = last_line(&run_ok(with_proxy_env(
        fx.cmd(&config).arg("backup"),
        &proxy.url(),
        None,
    )));
    let lines = proxy.lines();
    assert!(
        lines.iter().filter(|l| l.contains(&moto_addr)).count() >= 3,
        "store requests went through the proxy: {lines:?}"
    );
    assert!(
        !proxied_ports(&lines).contains(&etcd_port),
        "etcd traffic must never use the proxy: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("PUT ") && l.contains(&format!("/{id}/manifest.json"))),
        "the commit point went through the proxy: {lines:?}"
    );
    assert!(
        moto.list_keys("backups", "etcd/")
            .contains(&format!("etcd/{CLUSTER}/{id}/manifest.json"))
    );

    // NO_PROXY exempts the store.
    let seen = proxy.lines().len();
    run_ok(with_proxy_env(
        fx.cmd(&config).arg("backup"),
        &proxy.url(),
        Some("127.0.0.1"),
    ));
    assert_eq!(
        proxy.lines().len(),
        seen,
        "NO_PROXY=127.0.0.1 bypasses the proxy"
    );

    // A dead proxy in the environment breaks store traffic (proof the variable is used)...
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = run(with_proxy_env(fx.cmd(&config).arg("list"), &dead, None));
    assert_eq!(exit_code(&out), 1, "{}", describe_output(&out));
    // ...unless the target sets `proxy_url`, which wins over the environment.
    let target = s3_target(&moto, "backups", "etcd").replace(
        "options: {",
        &format!("options: {{ proxy_url: \"{}\",", proxy.url()),
    );
    let explicit = fx.write_config(
        "explicit.yaml",
        &source,
        &format!("  snapshot: {target}\n"),
        "",
    );
    let seen = proxy.lines().len();
    run_ok(with_proxy_env(fx.cmd(&explicit).arg("backup"), &dead, None));
    let lines = proxy.lines();
    assert!(
        lines[seen..].iter().any(|l| l.contains(&moto_addr)),
        "proxy_url from the target is used: {lines:?}"
    );
    assert!(!proxied_ports(&lines).contains(&etcd_port), "{lines:?}");
}

// ------------------------------------------------------------------ config check --connect

#[test]
fn config_check_connect_against_s3_and_azure() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let azurite = Azurite::start();
    azurite.create_container("backups");
    let etcd = EtcdServer::start(false);
    let fx = Fixture::new();
    let source = fx.etcd_source_for(&etcd);

    let good = fx.write_config(
        "good.yaml",
        &source,
        &format!("  snapshot: {}\n", s3_target(&moto, "backups", "etcd")),
        "",
    );
    let out = run_ok(fx.cmd(&good).args(["config", "check", "--connect"]));
    assert!(
        stdout_str(&out).contains("target s3://backups/etcd: ok (list, write, delete; a second create of one key is refused)"),
        "{}",
        describe_output(&out)
    );
    assert!(
        moto.list_keys("backups", "").is_empty(),
        "the probe object is deleted"
    );

    // A missing bucket, and (Azurite checks signatures; moto does not) a wrong account key.
    let secret = "s3cr3t-AKIAEXAMPLE-do-not-print";
    let wrong_key = "d3JvbmctYWNjb3VudC1rZXktZm9yLXRlc3RzLWRvLW5vdC1wcmludC0wMTIzNDU2Nzg5";
    let cases = [
        (
            "missing bucket",
            s3_target_at(&moto.endpoint(), "no-such-bucket", "etcd", secret),
            "s3://no-such-bucket/etcd",
            secret,
        ),
        (
            "wrong account key",
            azure_target_at(
                &format!("http://127.0.0.1:{}", azurite.port()),
                "backups",
                "etcd",
                wrong_key,
            ),
            "az://backups/etcd",
            wrong_key,
        ),
    ];
    for (what, target, url, secret) in cases {
        let config = fx.write_config("bad.yaml", &source, &format!("  snapshot: {target}\n"), "");
        let out = run(fx.cmd(&config).args(["config", "check", "--connect"]));
        let stderr = stderr_str(&out);
        assert_eq!(exit_code(&out), 1, "{what}: {}", describe_output(&out));
        let errors: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(errors.len(), 1, "{what}: one line: {stderr}");
        eprintln!("{what}: {}", errors[0]);
        assert!(errors[0].starts_with("error: "), "{what}: {stderr}");
        assert!(
            errors[0].contains(url),
            "{what}: names the target: {stderr}"
        );
        assert!(
            !stderr.contains('<') && !stderr.contains("xml"),
            "{what}: no server body: {stderr}"
        );
        assert!(!stderr.contains(secret), "{what}: secret printed: {stderr}");
        assert!(
            !stdout_str(&out).contains(secret),
            "{what}: secret printed on stdout"
        );
    }
}

// ------------------------------------------------------------------ on-prem stores and their errors

/// An S3 store behind an internal CA (moto behind a loopback TLS front whose certificate
/// a throwaway CA signed): without `ca_file` the error names it; with it, backups work.
#[test]
fn a_store_behind_an_internal_ca_works_with_ca_file_and_says_so_without() {
    let moto = Moto::start();
    moto.create_bucket("onprem");
    let fx = Fixture::new();
    let tls = generate_tls(&fx.path("store-ca"));
    let front = FaultProxy::start_tls(&moto, &tls);
    assert!(front.endpoint().starts_with("https://"));
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let source = fx.etcd_source_for(&etcd);
    let target = common::fixture::s3_target_at(&front.endpoint(), "onprem", "etcd");

    let without = fx.write_config(
        "no-ca.yaml",
        &source,
        &format!("  snapshot: {target}\n"),
        "",
    );
    let out = run_code(fx.cmd(&without).arg("list"), 1);
    let stderr = stderr_str(&out);
    eprintln!("without ca_file: {stderr}");
    assert!(
        stderr.contains("ca_file") && stderr.contains("not signed by a CA this host trusts"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let with_ca = format!(
        "{}, ca_file: \"{}\" }}",
        target.strip_suffix(" }").unwrap(),
        tls.ca.display()
    );
    let config = fx.write_config("ca.yaml", &source, &format!("  snapshot: {with_ca}\n"), "");
    let id = last_line(&run_ok(fx.cmd(&config).arg("backup")));
    assert_eq!(complete_ids(&list_json(&fx, &config)), vec![id.clone()]);
    run_ok(fx.cmd(&config).args(["verify", &id]));
    assert!(
        moto.list_keys("onprem", "etcd/")
            .iter()
            .any(|k| k.ends_with("/manifest.json")),
        "the backup went through the TLS front into moto"
    );
    let out = run_ok(fx.cmd(&config).args(["config", "check", "--connect"]));
    assert!(
        stdout_str(&out).contains(": ok"),
        "{}",
        describe_output(&out)
    );

    // A ca_file that is not there, or holds no certificate: named, with the fix.
    let missing = with_ca.replace(&tls.ca.display().to_string(), "/nonexistent/ca.pem");
    let config = fx.write_config(
        "missing-ca.yaml",
        &source,
        &format!("  snapshot: {missing}\n"),
        "",
    );
    let out = run_code(fx.cmd(&config).arg("list"), 1);
    assert!(
        stderr_str(&out).contains("ca_file /nonexistent/ca.pem: cannot read it"),
        "{}",
        describe_output(&out)
    );
    let not_pem = with_ca.replace(
        &tls.ca.display().to_string(),
        &fx.static_dir
            .join("configmaps/config/config.yaml")
            .display()
            .to_string(),
    );
    let config = fx.write_config(
        "bad-ca.yaml",
        &source,
        &format!("  snapshot: {not_pem}\n"),
        "",
    );
    let out = run_code(fx.cmd(&config).arg("list"), 1);
    assert!(
        stderr_str(&out).contains("holds no certificate"),
        "{}",
        describe_output(&out)
    );
}

/// Each store and etcd error a new SRE meets first, as one line with the cause and the fix.
#[test]
fn store_and_etcd_errors_name_the_cause_and_the_fix() {
    let moto = Moto::start();
    moto.create_bucket("backups");
    let fx = Fixture::new();
    let etcd = EtcdServer::start(false);
    let source = fx.etcd_source_for(&etcd);
    let endpoint = moto.endpoint();
    // (what, target, exit code, texts the one error line must hold)
    let cases: Vec<(&str, String, i32, Vec<&str>)> = vec![
        (
            "missing bucket",
            common::fixture::s3_target_at(&endpoint, "no-such-bucket", "etcd"),
            1,
            vec!["NoSuchBucket", "create it"],
        ),
        (
            "no credentials",
            format!(
                "{{ url: \"s3://backups/etcd\", options: {{ aws_endpoint: \"{endpoint}\", aws_allow_http: \"true\", aws_region: us-east-1 }} }}"
            ),
            1,
            vec![
                "no credentials found",
                "AWS_ACCESS_KEY_ID",
                "aws_access_key_id",
            ],
        ),
        (
            "http without allow_http",
            format!(
                "{{ url: \"s3://backups/etcd\", options: {{ aws_endpoint: \"{endpoint}\", aws_region: us-east-1 }} }}"
            ),
            2,
            vec![
                "targets.snapshot.options.aws_endpoint",
                "plain HTTP",
                "aws_allow_http: \"true\"",
            ],
        ),
        (
            "invalid bucket name",
            common::fixture::s3_target_at(&endpoint, "Etcd_BK", "etcd"),
            2,
            vec![
                "targets.snapshot.url",
                "\"Etcd_BK\" is not a valid name for an S3 bucket",
                "lowercase",
            ],
        ),
        (
            "relative ca_file",
            "{ url: \"s3://backups/etcd\", ca_file: ca.pem }".to_string(),
            2,
            vec!["targets.snapshot.ca_file", "absolute path"],
        ),
    ];
    for (what, target, code, texts) in cases {
        let config = fx.write_config("bad.yaml", &source, &format!("  snapshot: {target}\n"), "");
        let mut cmd = fx.cmd(&config);
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("AWS_")) {
            cmd.env_remove(name);
        }
        let out = run(cmd.arg("list"));
        let stderr = stderr_str(&out);
        eprintln!("{what}: {stderr}");
        assert_eq!(exit_code(&out), code, "{what}: {}", describe_output(&out));
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        for text in texts {
            assert!(stderr.contains(text), "{what}: {text:?} in {stderr}");
        }
        assert!(
            !stderr.contains('<') && !stderr.contains("169.254"),
            "{what}: {stderr}"
        );
    }

    // An etcd nobody listens on (plain and TLS): one line, the reason and what to check.
    let tls = generate_tls(&fx.path("etcd-tls"));
    for (scheme, tls) in [("http", None), ("https", Some(&tls))] {
        let dead = fx.write_config(
            "dead.yaml",
            &fx.etcd_source(&[format!("{scheme}://127.0.0.1:{}", free_port())], tls),
            &format!("  snapshot: {}\n", s3_target(&moto, "backups", "etcd")),
            "",
        );
        let out = run_code(fx.cmd(&dead).arg("backup"), 1);
        let stderr = stderr_str(&out);
        eprintln!("dead etcd ({scheme}): {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(
            errors[0].contains("connect") && errors[0].contains("source.etcd.endpoints"),
            "{stderr}"
        );
        for debug in ["tonic", "ConnectError", "Transport,", "Os {", "Error("] {
            assert!(!stderr.contains(debug), "{debug} in {stderr}");
        }
    }
}
