mod common;

// Issue 5: `restore` and `verify` proven with stock tools and a restarted etcd: round trips
// into a started etcd, tampering on a file:// target, the platform-version guards, the
// `backup_dir` source, and restore's refusals.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixture::Fixture;
use common::openshift::{set_cluster_version, settle_operators};
use common::*;

// ------------------------------------------------------------------ helpers

/// A fixture with a file:// target and a config for it.
struct Setup {
    fx: Fixture,
    /// The target directory (`file://` URL root).
    target: PathBuf,
    config: PathBuf,
}

impl Setup {
    /// Backs up `etcd` (with the fixture's static resources); `extra` is top-level YAML.
    fn etcd(etcd: &EtcdServer, extra: &str) -> Setup {
        let fx = Fixture::new();
        let source = fx.etcd_source_for(etcd);
        Self::with_source(fx, |_| source, extra)
    }

    fn with_source(fx: Fixture, source: impl FnOnce(&Fixture) -> String, extra: &str) -> Setup {
        let (target, url) = fx.file_url("backups");
        let source = source(&fx);
        let config = fx.write_config(
            "config.yaml",
            &source,
            &format!("  snapshot: {{ url: \"{url}\" }}\n"),
            extra,
        );
        Setup { fx, target, config }
    }

    /// Backs up the `cluster-backup.sh` files in `src` (a `backup_dir` source).
    fn backup_dir_source(fx: Fixture, src: &Path) -> Setup {
        Self::with_source(
            fx,
            |_| format!("source:\n  backup_dir: {}\n", src.display()),
            "",
        )
    }

    fn cmd(&self) -> Command {
        self.fx.cmd(&self.config)
    }

    /// `backup --json --no-prune`: the manifest.
    fn backup(&self, extra_args: &[&str]) -> serde_json::Value {
        let out = run_ok(
            self.cmd()
                .args(["backup", "--json", "--no-prune"])
                .args(extra_args),
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("backup --json: bad JSON ({e})\n{}", describe_output(&out)))
    }

    /// The directory of one backup in the target.
    fn backup_dir(&self, id: &str) -> PathBuf {
        self.target.join("test").join(id)
    }

    /// `restore ID --to DIR` with both identities plus `extra`.
    fn restore(&self, id: &str, to: &Path, extra: &[&str]) -> Output {
        run(self
            .cmd()
            .arg("restore")
            .arg(id)
            .arg("--to")
            .arg(to)
            .args(self.fx.identity_args())
            .args(extra))
    }

    /// `restore --latest --to DIR` with both identities.
    fn restore_latest(&self, to: &Path) -> Output {
        run(self
            .cmd()
            .args(["restore", "--latest", "--to"])
            .arg(to)
            .args(self.fx.identity_args()))
    }

    /// `verify ID` with or without both identities, plus `extra`.
    fn verify(&self, id: &str, identities: bool, extra: &[&str]) -> Output {
        let mut cmd = self.cmd();
        cmd.arg("verify").arg(id).args(extra);
        if identities {
            cmd.args(self.fx.identity_args());
        }
        run(&mut cmd)
    }

    /// Replaces `artifact` (`snapshot` or `static_resources`) of backup `id` with `plaintext`
    /// made into an artifact with the stock tools, and rewrites the manifest's plaintext and
    /// stored digests to match.
    fn forge(&self, id: &str, artifact: &str, plaintext: &Path) {
        let (file, _) = artifact_object(artifact);
        let recipient = match artifact {
            "snapshot" => &self.fx.snapshot_recipient,
            _ => &self.fx.static_recipient,
        };
        let obj = self.backup_dir(id).join(file);
        encrypt_with_stock_tools(plaintext, recipient, &obj);
        let manifest = self.backup_dir(id).join("manifest.json");
        set_digest(&manifest, artifact, "plaintext", plaintext);
        set_digest(&manifest, artifact, "stored", &obj);
    }

    /// Backup `id`'s stored bytes match its manifest but the contents of `artifact` do not:
    /// verify passes without identities; with them it exits 3 naming the object and
    /// `problem`, its report has only that artifact's contents failing, and (when `restore`)
    /// restore exits 3 the same way and leaves nothing behind.
    fn assert_only_contents_tell(
        &self,
        id: &str,
        artifact: &str,
        what: &str,
        problem: &str,
        restore: bool,
    ) {
        let (file, index) = artifact_object(artifact);
        let key = format!("test/{id}/{file}");
        let out = self.verify(id, false, &[]);
        assert_exit(&out, 0, &format!("{what}, stored bytes only"));
        let out = self.verify(id, true, &["--json"]);
        assert_exit(&out, 3, &format!("{what} with identities"));
        assert_says(&out, what, &[&key, problem]);
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let other = 1 - index;
        assert_eq!(report[0]["artifacts"][index]["stored_ok"], true, "{report}");
        assert_eq!(
            report[0]["artifacts"][index]["contents_ok"], false,
            "{report}"
        );
        assert_eq!(
            report[0]["artifacts"][other]["contents_ok"], true,
            "{report}"
        );
        if restore {
            let what = format!("restore {what}");
            let to = self.fx.path(&format!("restore-{id}"));
            let out = self.restore(id, &to, &[]);
            assert_exit(&out, 3, &what);
            assert_says(&out, &what, &[&key, problem]);
            assert_nothing_restored(&to, &what);
        }
    }
}

/// The object file name of a manifest artifact and its index in `verify --json`'s `artifacts`.
fn artifact_object(artifact: &str) -> (&'static str, usize) {
    match artifact {
        "snapshot" => ("snapshot.db.zst.age", 0),
        "static_resources" => ("static_kuberesources.tar.zst.age", 1),
        _ => panic!("unknown artifact {artifact}"),
    }
}

fn id_of(manifest: &serde_json::Value) -> String {
    manifest["id"].as_str().expect("manifest id").to_string()
}

/// `<ts>` of the restored files from the manifest's `started_at` (`date +%F_%H%M%S`, UTC).
fn restore_ts(manifest: &serde_json::Value) -> String {
    let started = manifest["started_at"].as_str().expect("started_at");
    let t = chrono::DateTime::parse_from_rfc3339(started)
        .unwrap_or_else(|e| panic!("started_at {started}: {e}"))
        .with_timezone(&chrono::Utc);
    t.format("%Y-%m-%d_%H%M%S").to_string()
}

/// File names in a directory (hidden ones too), sorted; empty when it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// XORs one byte of a file.
fn flip_byte(path: &Path, offset: usize) {
    let mut data = read(path);
    assert!(offset < data.len(), "{} is too short", path.display());
    data[offset] ^= 0x5a;
    std::fs::write(path, data).unwrap();
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Sets `artifacts.<artifact>.<field>` of a stored manifest to the size and SHA-256 of `file`.
fn set_digest(manifest: &Path, artifact: &str, field: &str, file: &Path) {
    let mut m: serde_json::Value = serde_json::from_slice(&read(manifest)).unwrap();
    m["artifacts"][artifact][field] = serde_json::json!({
        "size": file_len(file),
        "sha256": sha256_file(file),
    });
    std::fs::write(manifest, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// `zstd | age -r RECIPIENT`: an artifact made from `plaintext` with the stock tools.
fn encrypt_with_stock_tools(plaintext: &Path, recipient: &str, out: &Path) {
    run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("zstd -q -c \"$1\" | age -r \"$2\" -o \"$3\"")
            .arg("sh")
            .arg(plaintext)
            .arg(recipient)
            .arg(out),
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// (path, mode, contents) of every member of a gzipped tar, in archive order.
type Member = (String, u32, Vec<u8>);

fn tar_gz_members(path: &Path) -> Vec<Member> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap_or_else(|e| panic!("{} is not a tar.gz: {e}", path.display()))
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap() & 0o7777;
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, mode, data)
        })
        .collect()
}

/// `tar tvzf` (GNU tar, the stock tool) as (mode string, member name) pairs.
fn tar_tvzf(path: &Path) -> Vec<(String, String)> {
    let out = run_ok(Command::new("tar").arg("tvzf").arg(path));
    stdout_str(&out)
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (
                fields[0].to_string(),
                fields.last().unwrap().trim_end_matches('/').to_string(),
            )
        })
        .collect()
}

fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(exit_code(out), code, "{what}:\n{}", describe_output(out));
}

/// Asserts stderr contains every needle.
fn assert_says(out: &Output, what: &str, needles: &[&str]) {
    let err = stderr_str(out);
    for needle in needles {
        assert!(
            err.contains(needle),
            "{what}: stderr lacks {needle:?}\n{}",
            describe_output(out)
        );
    }
}

/// A restore that failed left nothing under a final name and no `.partial` file.
fn assert_nothing_restored(dir: &Path, what: &str) {
    let names = names_in(dir);
    assert!(
        names.is_empty(),
        "{what}: a failed restore left files behind in {}: {names:?}",
        dir.display()
    );
}

// ------------------------------------------------------------------ 1. round trip

/// backup → `etcd-offsite restore` → `etcdctl snapshot restore` + a started etcd holds the
/// source's keys and values; the file names carry the manifest's start time and the tarball
/// opens with `tar` with its modes.
#[test]
fn restore_round_trips_into_a_started_etcd() {
    restore_round_trip(EtcdVersion::V34);
}

#[test]
fn restore_of_an_etcd_35_backup_round_trips_into_a_started_etcd_35() {
    restore_round_trip(EtcdVersion::V35);
}

/// Deep verify, then restore and a started etcd of `version` (3.5: restored with etcdutl).
fn restore_round_trip(version: EtcdVersion) {
    let etcd = EtcdServer::start_version(version, false);
    etcd.load(2000, 300);
    etcd.put(
        "/registry/secrets/openshift-etcd/etcd-all-certs",
        b"\x00\x01binary\xff\xfevalue",
    );
    etcd.put("/registry/configmaps/default/empty", b"");
    let before = etcd.dump();

    let fx = Fixture::new();
    let secret = fx.static_dir.join("secrets/encryption-config");
    let config_yaml = fx.static_dir.join("configmaps/config/config.yaml");
    chmod(&secret, 0o600);
    chmod(&config_yaml, 0o644);
    chmod(&fx.static_dir.join("secrets"), 0o700);
    let source = fx.etcd_source_for(&etcd);
    let s = Setup::with_source(fx, |_| source, "");
    let manifest = s.backup(&[]);
    let id = id_of(&manifest);
    let deep = s.verify(&id, true, &[]);
    assert_exit(&deep, 0, "deep verify");

    let out_dir = s.fx.path("restore");
    let out = s.restore(&id, &out_dir, &[]);
    assert_exit(&out, 0, "restore");
    let ts = restore_ts(&manifest);
    let snapshot = out_dir.join(format!("snapshot_{ts}.db"));
    let tarball = out_dir.join(format!("static_kuberesources_{ts}.tar.gz"));
    assert_eq!(
        names_in(&out_dir),
        [
            format!("snapshot_{ts}.db"),
            format!("static_kuberesources_{ts}.tar.gz")
        ],
        "exactly the pair cluster-restore.sh takes, no .partial left"
    );
    // The paths are printed, one a line, for scripts.
    let printed: Vec<String> = stdout_str(&out).lines().map(str::to_string).collect();
    assert_eq!(
        printed,
        [
            snapshot.display().to_string(),
            tarball.display().to_string()
        ]
    );
    assert_eq!(
        sha256_file(&snapshot),
        manifest["artifacts"]["snapshot"]["plaintext"]["sha256"]
            .as_str()
            .unwrap()
    );
    for file in [&snapshot, &tarball] {
        assert_eq!(mode_of(file), 0o600, "{} is owner-only", file.display());
    }

    // Stock tools: the snapshot restores with the release's own tool and boots an etcd
    // with the same data.
    let restored = EtcdServer::start_version_from_snapshot(version, &snapshot);
    assert_eq!(
        restored.dump(),
        before,
        "the restored etcd holds the same keys and values"
    );

    // The tarball is gzip and lists the static files with their modes.
    let listing = tar_tvzf(&tarball);
    let mode_of = |name: &str| {
        listing
            .iter()
            .find(|(_, n)| n == name)
            .map(|(m, _)| m.clone())
            .unwrap_or_else(|| panic!("{name} missing from tar tvzf: {listing:?}"))
    };
    let base = "static-pod-resources/kube-apiserver-pod-7";
    assert_eq!(
        mode_of(&format!("{base}/secrets/encryption-config")),
        "-rw-------"
    );
    assert_eq!(
        mode_of(&format!("{base}/configmaps/config/config.yaml")),
        "-rw-r--r--"
    );
    assert_eq!(mode_of(&format!("{base}/secrets")), "drwx------");
    let extracted = s.fx.path("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    run_ok(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&extracted),
    );
    for rel in ["secrets/encryption-config", "configmaps/config/config.yaml"] {
        assert_eq!(
            read(&extracted.join(base).join(rel)),
            read(&s.fx.static_dir.join(rel)),
            "{rel} restored byte for byte"
        );
    }

    // `--latest` picks the same backup.
    let latest_dir = s.fx.path("restore-latest");
    assert_exit(&s.restore_latest(&latest_dir), 0, "restore --latest");
    assert_eq!(
        sha256_file(&latest_dir.join(format!("snapshot_{ts}.db"))),
        sha256_file(&snapshot)
    );
}

// ------------------------------------------------------------------ 2. tampering

/// Each kind of tampering on a file:// target makes verify (with and without identities)
/// and restore exit 3 naming the object and what differed; restores leave nothing behind.
#[test]
fn tampered_backups_fail_verify_and_restore_with_exit_3() {
    let etcd = EtcdServer::start(false);
    etcd.load(500, 1000);
    let s = Setup::etcd(&etcd, "");
    let mut backups = Vec::new();
    for i in 0..9 {
        // Each backup holds different data, so that their plaintexts differ.
        etcd.put(
            &format!("/registry/tamper/marker-{i}"),
            format!("backup {i}"),
        );
        backups.push(s.backup(&[]));
    }
    let ids: Vec<String> = backups.iter().map(id_of).collect();
    let snapshot_key = |id: &str| format!("test/{id}/snapshot.db.zst.age");
    let static_key = |id: &str| format!("test/{id}/static_kuberesources.tar.zst.age");
    let snapshot_obj = |id: &str| s.backup_dir(id).join("snapshot.db.zst.age");
    let static_obj = |id: &str| s.backup_dir(id).join("static_kuberesources.tar.zst.age");

    // An untouched backup verifies, with and without identities.
    let good = &ids[0];
    for identities in [false, true] {
        let out = s.verify(good, identities, &[]);
        assert_exit(&out, 0, &format!("untouched, identities={identities}"));
        assert!(
            stdout_str(&out).contains(&format!("{good} OK")),
            "{}",
            describe_output(&out)
        );
    }
    let out = s.verify(good, true, &["--json"]);
    assert_exit(&out, 0, "untouched --json");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["id"], good.as_str());
    assert_eq!(report[0]["ok"], true);
    for a in report[0]["artifacts"].as_array().unwrap() {
        assert_eq!(a["stored_ok"], true, "{report}");
        assert_eq!(a["contents_ok"], true, "{report}");
    }

    // Each case: (backup, what to do, key named, what differed, stored_ok in the report).
    let flipped = &ids[1];
    let obj = snapshot_obj(flipped);
    flip_byte(&obj, file_len(&obj) as usize / 2);
    let truncated = &ids[2];
    let obj = snapshot_obj(truncated);
    let full_size = file_len(&obj);
    truncate(&obj, full_size / 2);
    let deleted = &ids[3];
    std::fs::remove_file(snapshot_obj(deleted)).unwrap();
    let static_flipped = &ids[4];
    let obj = static_obj(static_flipped);
    flip_byte(&obj, file_len(&obj) as usize / 2);
    let copied = &ids[5];
    std::fs::copy(
        s.backup_dir(good).join("manifest.json"),
        s.backup_dir(copied).join("manifest.json"),
    )
    .unwrap();

    let half = (full_size / 2).to_string();
    let full = full_size.to_string();
    let cases: Vec<(&String, String, Vec<&str>)> = vec![
        (
            flipped,
            snapshot_key(flipped),
            vec!["stored SHA-256", "altered"],
        ),
        (
            truncated,
            snapshot_key(truncated),
            vec!["stored size is", &half, &full, "truncated"],
        ),
        (deleted, snapshot_key(deleted), vec!["is missing"]),
        (
            static_flipped,
            static_key(static_flipped),
            vec!["stored SHA-256", "altered"],
        ),
    ];
    for (id, key, differed) in &cases {
        for identities in [false, true] {
            let what = format!("verify {key} identities={identities}");
            let out = s.verify(id, identities, &[]);
            assert_exit(&out, 3, &what);
            let mut needles = vec![key.as_str()];
            needles.extend(differed);
            assert_says(&out, &what, &needles);
            assert!(stdout_str(&out).contains(&format!("{id} FAILED")), "{what}");

            let out = s.verify(id, identities, &["--json"]);
            assert_exit(&out, 3, &format!("{what} --json"));
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!("{what}: --json output: {e}\n{}", describe_output(&out))
                });
            assert_eq!(report[0]["ok"], false, "{what}: {report}");
            let artifact = report[0]["artifacts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == key.as_str())
                .unwrap_or_else(|| panic!("{what}: {key} not in {report}"));
            assert_eq!(artifact["stored_ok"], false, "{what}: {report}");
            let detail = artifact["detail"].as_str().unwrap_or_default();
            assert!(detail.contains(differed[0]), "{what}: detail {detail:?}");
            let expect_contents = if identities {
                serde_json::json!(false)
            } else {
                serde_json::Value::Null
            };
            assert_eq!(artifact["contents_ok"], expect_contents, "{what}: {report}");
            // The other artifact is still fine.
            for other in report[0]["artifacts"].as_array().unwrap() {
                if other["key"] != key.as_str() {
                    assert_eq!(other["stored_ok"], true, "{what}: {report}");
                }
            }
        }
        let to = s.fx.path(&format!("restore-{id}"));
        let out = s.restore(id, &to, &[]);
        let what = format!("restore {key}");
        assert_exit(&out, 3, &what);
        let mut needles = vec![key.as_str()];
        needles.extend(differed);
        assert_says(&out, &what, &needles);
        assert_nothing_restored(&to, &what);
    }

    // A manifest copied from another backup describes that one, and says so.
    let what = "manifest copied from another backup";
    let needles = [
        format!("test/{copied}/manifest.json"),
        format!("describes backup test/{good}, not test/{copied}"),
    ];
    let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
    for identities in [false, true] {
        let out = s.verify(copied, identities, &[]);
        assert_exit(&out, 3, what);
        assert_says(&out, what, &needles);
    }
    let out = s.verify(copied, false, &["--json"]);
    assert_exit(&out, 3, what);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["ok"], false);
    assert!(
        report[0]["problems"][0]
            .as_str()
            .unwrap()
            .contains(needles[1]),
        "{report}"
    );
    let to = s.fx.path("restore-copied");
    let out = s.restore(copied, &to, &[]);
    assert_exit(&out, 3, what);
    assert_says(&out, what, &needles);
    assert_nothing_restored(&to, what);

    // Another backup's snapshot object with the manifest's stored digest edited to match:
    // the stored bytes check out, the contents do not (only an identity can tell).
    let swapped = &ids[6];
    let donor = &ids[0];
    std::fs::copy(snapshot_obj(donor), snapshot_obj(swapped)).unwrap();
    let manifest_path = s.backup_dir(swapped).join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&read(&manifest_path)).unwrap();
    m["artifacts"]["snapshot"]["stored"] = backups[0]["artifacts"]["snapshot"]["stored"].clone();
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    s.assert_only_contents_tell(swapped, "snapshot", "swapped object", "plaintext", true);

    // A snapshot whose bytes were altered before encryption, with the manifest's digests
    // rewritten to match: only the etcd hash trailer can tell.
    let bad_trailer = &ids[7];
    let plain = s.fx.path("bad-trailer.db");
    age_zstd_decrypt(&s.fx.snapshot_key, &snapshot_obj(bad_trailer), &plain).unwrap();
    flip_byte(&plain, file_len(&plain) as usize / 2);
    s.forge(bad_trailer, "snapshot", &plain);
    s.assert_only_contents_tell(bad_trailer, "snapshot", "bad trailer", "hash trailer", true);

    // A static archive that is not a tar, digests rewritten to match: the tar check tells.
    let not_tar = &ids[8];
    let garbage = s.fx.path("not-a-tar");
    write_pseudo_random(&garbage, 4096, 7);
    s.forge(not_tar, "static_resources", &garbage);
    // Only verify reads the archive as a tar, so restore is not asked here.
    s.assert_only_contents_tell(
        not_tar,
        "static_resources",
        "not a tar",
        "tar does not read",
        false,
    );

    // `verify --all --json` reports every backup; only the untouched one is ok.
    let out = run(s
        .cmd()
        .args(["verify", "--all", "--json"])
        .args(s.fx.identity_args()));
    assert_exit(&out, 3, "verify --all");
    let report: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ok: BTreeMap<String, bool> = report
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    let expected: BTreeMap<String, bool> = ids.iter().map(|id| (id.clone(), id == good)).collect();
    assert_eq!(ok, expected, "{}", describe_output(&out));
    assert_says(
        &out,
        "verify --all",
        &["8 of 9 backup(s) failed verification"],
    );

    // `--latest` does not skip over a newest backup whose manifest is wrong: it says so.
    let newest = ids.last().unwrap();
    std::fs::copy(
        s.backup_dir(good).join("manifest.json"),
        s.backup_dir(newest).join("manifest.json"),
    )
    .unwrap();
    let needle = format!("describes backup test/{good}, not test/{newest}");
    let out = run(s.cmd().args(["verify", "--latest"]));
    assert_exit(&out, 3, "verify --latest");
    assert_says(&out, "verify --latest", &[newest, &needle]);
    let to = s.fx.path("restore-latest");
    let out = s.restore_latest(&to);
    assert_exit(&out, 3, "restore --latest");
    assert_says(&out, "restore --latest", &[newest, &needle]);
    assert_nothing_restored(&to, "restore --latest");
}

// ------------------------------------------------------------------ 3. platform version

/// The platform version comes from ClusterVersion's latest Completed entry, `--expect-version`
/// guards restores, a cluster younger than 24 h is refused, and a label overrides detection.
#[test]
fn platform_version_is_detected_and_guards_restore() {
    let etcd = EtcdServer::start(false);
    etcd.load(100, 100);
    // On OpenShift a backup waits for the guarded operators to settle (tests/openshift.rs).
    settle_operators(&etcd);
    // Newest first, as OpenShift keeps it (an upgrade in progress: tests/openshift.rs).
    set_cluster_version(
        &etcd,
        &[
            ("Completed", "4.14.7", 24 * 10),
            ("Completed", "4.14.3", 24 * 40),
        ],
    );
    let s = Setup::etcd(&etcd, "");
    let manifest = s.backup(&[]);
    assert_eq!(manifest["platform_version"], "4.14.7", "{manifest}");
    let id = id_of(&manifest);
    let out = run_ok(s.cmd().args(["list", "--json"]));
    assert!(
        stdout_str(&out).contains("4.14.7"),
        "list shows the version"
    );

    // Another z-stream: refused with exit 4, nothing written.
    let refused = s.fx.path("refused");
    let out = s.restore(&id, &refused, &["--expect-version", "4.14.8"]);
    assert_exit(&out, 4, "restore --expect-version 4.14.8");
    assert_says(
        &out,
        "version refusal",
        &["4.14.7", "4.14.8", "z-stream", "--force"],
    );
    assert!(!refused.exists(), "a refused restore writes nothing");

    // --force restores anyway.
    let forced = s.fx.path("forced");
    let out = s.restore(&id, &forced, &["--expect-version", "4.14.8", "--force"]);
    assert_exit(&out, 0, "restore --force");
    let ts = restore_ts(&manifest);
    assert_eq!(
        names_in(&forced),
        [
            format!("snapshot_{ts}.db"),
            format!("static_kuberesources_{ts}.tar.gz")
        ]
    );

    // The right version restores.
    let matching = s.fx.path("matching");
    let out = s.restore(&id, &matching, &["--expect-version", "4.14.7"]);
    assert_exit(&out, 0, "restore --expect-version 4.14.7");
    assert_eq!(names_in(&matching).len(), 2);

    // A label overrides what etcd says.
    let labelled = Setup::etcd(&etcd, "labels: { platform_version: \"9.9.9\" }\n");
    let manifest = labelled.backup(&[]);
    assert_eq!(manifest["platform_version"], "9.9.9");
    assert_eq!(manifest["labels"]["platform_version"], "9.9.9");
    let out = labelled.restore(
        &id_of(&manifest),
        &labelled.fx.path("r"),
        &["--expect-version", "4.14.7"],
    );
    assert_exit(&out, 4, "labelled backup vs 4.14.7");

    // A cluster installed an hour ago: refused (exit 4) unless --force.
    set_cluster_version(&etcd, &[("Completed", "4.15.2", 1)]);
    let fresh = Setup::etcd(&etcd, "");
    let out = run(fresh.cmd().arg("backup"));
    assert_exit(&out, 4, "backup of a fresh cluster");
    assert_says(&out, "fresh cluster", &["24 h", "--force"]);
    assert!(
        manifests_below(&fresh.target).is_empty(),
        "a refused backup writes no manifest"
    );
    let manifest = fresh.backup(&["--force"]);
    assert_eq!(manifest["platform_version"], "4.15.2");
    assert_eq!(manifests_below(&fresh.target).len(), 1);
}

// ------------------------------------------------------------------ 4. backup_dir source

/// Files from `cluster-backup.sh` (`etcdctl snapshot save` + `tar czf`) ship and restore
/// unchanged; the newest complete pair wins and a corrupt snapshot is refused before it ships.
#[test]
fn backup_dir_pair_round_trips_unchanged() {
    let etcd = EtcdServer::start(false);
    etcd.load(800, 500);
    let fx = Fixture::new();
    let src = fx.path("assets-backup");
    std::fs::create_dir_all(&src).unwrap();
    chmod(&fx.static_dir.join("secrets/encryption-config"), 0o600);
    let make_tarball =
        |ts: &str| fx.tar_static(&src, ts, "static-pod-resources/kube-apiserver-pod-7");
    // An older complete pair, the newest complete pair, and a newer lone snapshot.
    etcd.snapshot_save(&src.join("snapshot_2026-11-20_030000.db"));
    make_tarball("2026-11-20_030000");
    etcd.put("/registry/backupdir/newest-pair", "yes");
    let original = src.join("snapshot_2026-11-21_030000.db");
    etcd.snapshot_save(&original);
    make_tarball("2026-11-21_030000");
    etcd.put("/registry/backupdir/lone", "no tarball yet");
    etcd.snapshot_save(&src.join("snapshot_2026-11-22_030000.db"));
    let original_tarball = src.join("static_kuberesources_2026-11-21_030000.tar.gz");

    let s = Setup::backup_dir_source(fx, &src);
    let manifest = s.backup(&[]);
    let id = id_of(&manifest);
    assert_eq!(manifest["source"]["kind"], "backup_dir", "{manifest}");
    assert_eq!(
        manifest["source"]["snapshot_file"],
        original.display().to_string().as_str()
    );
    assert_eq!(
        manifest["artifacts"]["snapshot"]["plaintext"]["sha256"],
        sha256_file(&original).as_str()
    );

    let out = s.verify(&id, true, &[]);
    assert_exit(&out, 0, "verify backup_dir backup with identities");

    let to = s.fx.path("restore");
    assert_exit(&s.restore(&id, &to, &[]), 0, "restore backup_dir backup");
    // The pair keeps the name cluster-backup.sh gave it.
    let ts = "2026-11-21_030000";
    let snapshot = to.join(format!("snapshot_{ts}.db"));
    let tarball = to.join(format!("static_kuberesources_{ts}.tar.gz"));
    assert_eq!(
        read(&snapshot),
        read(&original),
        "the snapshot comes back byte for byte"
    );
    let restored_members = tar_gz_members(&tarball);
    let original_members = tar_gz_members(&original_tarball);
    assert_eq!(
        restored_members
            .iter()
            .map(|(n, m, _)| (n.as_str(), *m))
            .collect::<Vec<_>>(),
        original_members
            .iter()
            .map(|(n, m, _)| (n.as_str(), *m))
            .collect::<Vec<_>>(),
        "same members with the same modes"
    );
    assert_eq!(restored_members, original_members, "same file contents");
    // And the stock tools agree.
    let stock = |p: &Path| stdout_str(&run_ok(Command::new("tar").arg("tzf").arg(p)));
    assert_eq!(stock(&tarball), stock(&original_tarball));
    let restored = EtcdServer::start_from_snapshot(&snapshot);
    assert_eq!(
        restored
            .dump()
            .get("/registry/backupdir/newest-pair")
            .map(Vec::as_slice),
        Some(&b"yes"[..])
    );
    assert!(!restored.dump().contains_key("/registry/backupdir/lone"));
}

#[test]
fn corrupt_snapshot_in_backup_dir_is_refused_with_exit_3() {
    let etcd = EtcdServer::start(false);
    etcd.load(300, 500);
    let fx = Fixture::new();
    let src = fx.path("assets-backup");
    std::fs::create_dir_all(&src).unwrap();
    let ts = "2026-11-21_030000";
    let snapshot = src.join(format!("snapshot_{ts}.db"));
    etcd.snapshot_save(&snapshot);
    snapshot_restore_check(&snapshot).expect("the saved snapshot is good before we break it");
    flip_byte(&snapshot, file_len(&snapshot) as usize / 2);
    fx.tar_static(&src, ts, "static-pod-resources");
    let s = Setup::backup_dir_source(fx, &src);
    let out = run(s.cmd().arg("backup"));
    assert_exit(&out, 3, "backup of a corrupt snapshot");
    assert_says(
        &out,
        "corrupt snapshot",
        &[&snapshot.display().to_string(), "hash trailer"],
    );
    assert!(manifests_below(&s.target).is_empty(), "no manifest");
    // Only the released lock's last generation stays (the lock always keeps one).
    let leftovers: Vec<PathBuf> = files_below(&s.target)
        .into_iter()
        .filter(|p| !p.components().any(|c| c.as_os_str() == "lock"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "nothing left in the target: {leftovers:?}"
    );
    let out = run_ok(s.cmd().args(["list", "--json"]));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.is_empty(), "no backup listed: {list:?}");
}

// ------------------------------------------------------------------ 5. restore refusals

#[test]
fn restore_refuses_without_keys_and_never_overwrites() {
    let etcd = EtcdServer::start(false);
    etcd.load(200, 200);
    let s = Setup::etcd(&etcd, "");
    let manifest = s.backup(&[]);
    let id = id_of(&manifest);
    let ts = restore_ts(&manifest);
    let snapshot_name = format!("snapshot_{ts}.db");
    let static_name = format!("static_kuberesources_{ts}.tar.gz");
    let snapshot_identity = [
        "--identity".to_string(),
        s.fx.snapshot_key.display().to_string(),
    ];
    let restore_with = |to: &Path, identity: &[String], extra: &[&str]| {
        run(s
            .cmd()
            .arg("restore")
            .arg(&id)
            .arg("--to")
            .arg(to)
            .args(identity)
            .args(extra))
    };

    // The snapshot identity alone is not enough for the pair.
    let to = s.fx.path("only-snapshot-key");
    let out = restore_with(&to, &snapshot_identity, &[]);
    assert_exit(&out, 2, "missing static identity");
    assert_says(
        &out,
        "missing static identity",
        &["static resources", "--snapshot-only"],
    );
    assert_nothing_restored(&to, "missing static identity");

    // Nor the static identity alone.
    let static_identity = [
        "--identity".to_string(),
        s.fx.static_key.display().to_string(),
    ];
    let out = restore_with(&to, &static_identity, &[]);
    assert_exit(&out, 2, "missing snapshot identity");
    assert_says(&out, "missing snapshot identity", &["opens the snapshot"]);
    assert_nothing_restored(&to, "missing snapshot identity");

    // --snapshot-only writes just the snapshot.
    let out = restore_with(&to, &snapshot_identity, &["--snapshot-only"]);
    assert_exit(&out, 0, "--snapshot-only");
    assert_eq!(names_in(&to), std::slice::from_ref(&snapshot_name));
    let snapshot = to.join(&snapshot_name);
    assert_eq!(
        sha256_file(&snapshot),
        manifest["artifacts"]["snapshot"]["plaintext"]["sha256"]
            .as_str()
            .unwrap()
    );
    snapshot_restore_check(&snapshot).expect("etcdctl accepts the snapshot");

    // An existing file is never overwritten: not the snapshot...
    let before = read(&snapshot);
    let out = s.restore(&id, &to, &[]);
    assert_exit(&out, 4, "existing snapshot file");
    assert_says(
        &out,
        "existing snapshot file",
        &[&snapshot_name, "already holds", "cluster-restore.sh"],
    );
    assert_eq!(read(&snapshot), before);
    assert_eq!(
        names_in(&to),
        std::slice::from_ref(&snapshot_name),
        "nothing else written"
    );

    // ...nor the static tarball, and the snapshot is not written next to it either.
    let other = s.fx.path("existing-static");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join(&static_name), "precious").unwrap();
    let out = s.restore(&id, &other, &[]);
    assert_exit(&out, 4, "existing static file");
    assert_says(
        &out,
        "existing static file",
        &[&static_name, "already holds"],
    );
    assert_eq!(read(&other.join(&static_name)), b"precious");
    assert_eq!(names_in(&other), std::slice::from_ref(&static_name));
}

/// An id that cannot be a backup id is a usage error (exit 2) for every command that takes
/// one, not a damaged backup (exit 3), and never reaches outside the target.
#[test]
fn a_malformed_backup_id_is_a_usage_error() {
    let fx = Fixture::new();
    let (_, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &fx.etcd_source(&["http://127.0.0.1:1".to_string()], None),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    for id in ["../../etc", "20260101", "20260101T000000Z-1", "latest"] {
        let to = fx.path("restored");
        let runs = [
            fx.cmd(&config).args(["verify", id]).output(),
            fx.cmd(&config)
                .args(["restore", id, "--to"])
                .arg(&to)
                .args(fx.identity_args())
                .output(),
            fx.cmd(&config)
                .args(["drill", id])
                .args(fx.identity_args())
                .output(),
        ];
        for out in runs {
            let out = out.expect("run the tool");
            assert_eq!(exit_code(&out), 2, "{id}: {}", describe_output(&out));
            assert!(
                stderr_str(&out).contains("is not a backup id"),
                "{id}: {}",
                describe_output(&out)
            );
        }
        assert!(!to.exists(), "{id}: nothing restored");
    }
}
