//! OpenShift fidelity (issue 9): a fake control-plane host tree in front of a real TLS etcd
//! that holds ClusterVersion and ClusterOperator objects; the keys archive, the guards, the
//! upgrade record, OpenShift's own backup layouts, and restores that feed cluster-restore.sh.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixture::Fixture;
use common::openshift::{
    GUARDED_OPERATORS as OPERATORS, set_cluster_version, set_operator, settle_operators,
};
use common::*;

/// A control-plane host's /etc/kubernetes: 4.17's certificate layout holding the test
/// etcd's real certificates, static pods running revision 7, and revision 8 on disk.
struct Host {
    base: PathBuf,
}

impl Host {
    fn new(fx: &Fixture, etcd: &EtcdServer) -> Host {
        let base = fx.base_dir.clone();
        let tls = etcd.tls().expect("a TLS etcd");
        let certs = base.join("static-pod-resources/etcd-certs");
        for (from, to) in [
            (&tls.ca, "configmaps/etcd-all-bundles/server-ca-bundle.crt"),
            (
                &tls.client_cert,
                "secrets/etcd-all-certs/etcd-peer-master-0.crt",
            ),
            (
                &tls.client_key,
                "secrets/etcd-all-certs/etcd-peer-master-0.key",
            ),
        ] {
            let to = certs.join(to);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, &to).unwrap();
        }
        std::fs::create_dir_all(base.join("manifests")).unwrap();
        for pod in OPERATORS {
            for revision in [7, 8] {
                let dir = base.join(format!(
                    "static-pod-resources/{pod}-pod-{revision}/configmaps"
                ));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("revision"), format!("{revision}\n")).unwrap();
            }
            std::fs::write(
                base.join(format!("manifests/{pod}-pod.yaml")),
                format!(
                    "apiVersion: v1\nkind: Pod\nspec:\n  volumes:\n  - hostPath:\n      path: /etc/kubernetes/static-pod-resources/{pod}-pod-7\n    name: resource-dir\n  - hostPath:\n      path: /etc/kubernetes/static-pod-resources/etcd-certs\n    name: cert-dir\n"
                ),
            )
            .unwrap();
        }
        Host { base }
    }

    /// `source:` YAML that names no certificate file and no static resource directory.
    fn source(&self, etcd: &EtcdServer) -> String {
        format!(
            "source:\n  etcd:\n    discover: openshift\n    base_dir: {base}\n    node_name: master-0\n    endpoints: [\"{}\"]\n    timeout: 5s\n  static_resources:\n    base_dir: {base}\n    discover: openshift\n",
            etcd.endpoint(),
            base = self.base.display()
        )
    }
}

/// An OpenShift-like etcd: ClusterVersion at 4.16.3, every guarded operator settled.
fn openshift_etcd() -> EtcdServer {
    let etcd = EtcdServer::start(true);
    etcd.load(200, 200);
    set_cluster_version(
        &etcd,
        &[
            ("Completed", "4.16.3", 24 * 10),
            ("Completed", "4.16.0", 24 * 40),
        ],
    );
    settle_operators(&etcd);
    etcd
}

fn backup_json(fx: &Fixture, config: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(fx.cmd(config).args(["backup", "--json"]).args(extra));
    serde_json::from_slice(&out.stdout).expect("backup --json prints the manifest")
}

fn list_json(fx: &Fixture, config: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(fx.cmd(config).args(["list", "--json"]));
    serde_json::from_slice(&out.stdout).expect("list --json")
}

/// The member names of a backup's keys archive, read with the stock age, zstd and tar.
fn archive_members(fx: &Fixture, target: &Path, id: &str) -> Vec<String> {
    let tar = fx.path(&format!("{id}.tar"));
    age_zstd_decrypt(
        &fx.static_key,
        &target
            .join("test")
            .join(id)
            .join("static_kuberesources.tar.zst.age"),
        &tar,
    )
    .expect("the keys archive decrypts with age and zstd");
    let out = run_ok(Command::new("tar").arg("tf").arg(&tar));
    stdout_str(&out).lines().map(str::to_string).collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn says(out: &Output, needles: &[&str]) {
    let text = format!("{}{}", stdout_str(out), stderr_str(out));
    for needle in needles {
        assert!(
            text.contains(needle),
            "expected {needle:?} in\n{}",
            describe_output(out)
        );
    }
}

#[test]
fn discovery_running_revision_guards_and_upgrades() {
    let etcd = openshift_etcd();
    let fx = Fixture::new();
    let host = Host::new(&fx, &etcd);
    let (target, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &host.source(&etcd),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    run_ok(fx.cmd(&config).args(["config", "check", "--connect"]));

    // Certificates found in the host layout; the archive holds the running revision 7,
    // not the newer revision 8 that is on disk.
    let manifest = backup_json(&fx, &config, &[]);
    let id = manifest["id"].as_str().unwrap().to_string();
    assert_eq!(manifest["platform_version"], "4.16.3", "{manifest}");
    assert_eq!(manifest["dirty"], false);
    assert!(manifest.get("upgrade").is_none(), "{manifest}");
    let members = archive_members(&fx, &target, &id);
    for pod in OPERATORS {
        let running = format!("static-pod-resources/{pod}-pod-7/configmaps/revision");
        assert!(
            members.contains(&running),
            "{running} missing from {members:?}"
        );
    }
    assert!(
        !members.iter().any(|m| m.contains("-pod-8")),
        "revision 8 is on disk but not running: {members:?}"
    );

    // A Progressing operator refuses the backup (exit 4); --force takes it, marked dirty.
    set_operator(&etcd, "kube-apiserver", true);
    let out = run_code(fx.cmd(&config).args(["backup", "--no-prune"]), 4);
    says(&out, &["kube-apiserver: Progressing=True", "--force"]);
    let forced = backup_json(&fx, &config, &["--force", "--no-prune"]);
    assert_eq!(forced["dirty"], true, "{forced}");
    let forced_id = forced["id"].as_str().unwrap().to_string();
    let listed = list_json(&fx, &config);
    let entry = |id: &str| {
        listed
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("{id} listed"))
            .clone()
    };
    assert_eq!(entry(&forced_id)["dirty"], true);
    assert_eq!(entry(&id)["dirty"], false);
    let text = stdout_str(&run_ok(fx.cmd(&config).arg("list")));
    assert!(text.contains("DIRTY"), "{text}");
    // Restored under cluster-backup.sh's own dirty name.
    let to = fx.path("restore-dirty");
    let out = run_ok(
        fx.cmd(&config)
            .args(["restore", &forced_id, "--to"])
            .arg(&to)
            .args(fx.identity_args()),
    );
    assert!(
        names_in(&to)
            .iter()
            .all(|n| n.contains("__POSSIBLY_DIRTY__")),
        "{:?}\n{}",
        names_in(&to),
        describe_output(&out)
    );
    set_operator(&etcd, "kube-apiserver", false);

    // During an upgrade the manifest records it, and --expect-version refuses it.
    set_cluster_version(
        &etcd,
        &[
            ("Partial", "4.16.4", 2),
            ("Completed", "4.16.3", 24 * 10),
            ("Completed", "4.16.0", 24 * 40),
        ],
    );
    let during = backup_json(&fx, &config, &["--no-prune"]);
    assert_eq!(during["upgrade"]["from"], "4.16.3", "{during}");
    assert_eq!(during["upgrade"]["to"], "4.16.4");
    assert_eq!(during["upgrade"]["state"], "Partial");
    let during_id = during["id"].as_str().unwrap().to_string();
    let restore = |id: &str, to: &Path, extra: &[&str]| {
        run(fx
            .cmd(&config)
            .args(["restore", id, "--to"])
            .arg(to)
            .args(fx.identity_args())
            .args(extra))
    };
    let to = fx.path("restore-upgrade");
    let out = restore(&during_id, &to, &["--expect-version", "4.16.3"]);
    assert_eq!(exit_code(&out), 4, "{}", describe_output(&out));
    says(&out, &["during an upgrade from 4.16.3 to 4.16.4"]);
    assert!(names_in(&to).is_empty(), "nothing written");
    let out = restore(&during_id, &to, &["--expect-version", "4.16.3", "--force"]);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));
    // The settled backup matches its z-stream.
    let to = fx.path("restore-settled");
    let out = restore(&id, &to, &["--expect-version", "4.16.3"]);
    assert_eq!(exit_code(&out), 0, "{}", describe_output(&out));

    // A directory that holds another pair: refused with exit 4, nothing written.
    let out = restore(&during_id, &to, &[]);
    assert_eq!(exit_code(&out), 4, "{}", describe_output(&out));
    says(&out, &["already holds", "ls -v"]);
    assert_eq!(names_in(&to).len(), 2, "{:?}", names_in(&to));
}

#[test]
fn a_keys_archive_without_static_pod_resources_fails_verify_and_restore() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let elsewhere = fx.base_dir.join("not-static-pods");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("file"), "x").unwrap();
    let (_, url) = fx.file_url("backups");
    let source = format!(
        "source:\n  etcd:\n    endpoints: [\"{}\"]\n  static_resources:\n    base_dir: {}\n    paths: [\"{}\"]\n",
        etcd.endpoint(),
        fx.base_dir.display(),
        elsewhere.display()
    );
    let config = fx.write_config(
        "config.yaml",
        &source,
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    let id = stdout_str(&run_ok(fx.cmd(&config).arg("backup")))
        .trim()
        .to_string();
    let out = run_code(
        fx.cmd(&config)
            .args(["verify", &id])
            .args(fx.identity_args()),
        3,
    );
    says(&out, &["no static-pod-resources/ member"]);
    let to = fx.path("restore");
    let out = run_code(
        fx.cmd(&config)
            .args(["restore", &id, "--to"])
            .arg(&to)
            .args(fx.identity_args()),
        3,
    );
    says(&out, &["cluster-restore.sh could not start"]);
    assert!(names_in(&to).is_empty(), "{:?}", names_in(&to));

    // Snapshot only: restored, with a plain word that it is not cluster-restore.sh input.
    let snapshot_identity = [
        "--identity".to_string(),
        fx.snapshot_key.display().to_string(),
    ];
    let out = run_ok(
        fx.cmd(&config)
            .args(["restore", &id, "--snapshot-only", "--to"])
            .arg(&to)
            .args(snapshot_identity),
    );
    says(&out, &["NOT input for cluster-restore.sh"]);
}

/// cluster-backup.sh's directory with a hand-made pair, and older and newer timestamped
/// pairs: the newest timestamped pair is shipped, with the platform version from etcd.
#[test]
fn backup_dir_ships_the_newest_timestamped_pair() {
    let etcd = openshift_etcd();
    let fx = Fixture::new();
    let host = Host::new(&fx, &etcd);
    let src = fx.path("assets-backup");
    std::fs::create_dir_all(&src).unwrap();
    for ts in [
        "manual-before-upgrade",
        "2026-11-20_030000",
        "2026-11-22_030000",
        "2026-11-21_030000",
    ] {
        etcd.snapshot_save(&src.join(format!("snapshot_{ts}.db")));
        fx.tar_static(&src, ts, "static-pod-resources/kube-apiserver-pod-7");
    }
    let (_, url) = fx.file_url("backups");
    let source = host.source(&etcd);
    let etcd_part = source
        .split("  static_resources:")
        .next()
        .unwrap()
        .trim_start_matches("source:\n");
    let config = fx.write_config(
        "config.yaml",
        &format!("source:\n  backup_dir: {}\n{etcd_part}", src.display()),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    let manifest = backup_json(&fx, &config, &[]);
    assert_eq!(
        manifest["source"]["timestamp"], "2026-11-22_030000",
        "{manifest}"
    );
    assert_eq!(manifest["platform_version"], "4.16.3", "{manifest}");
    assert_eq!(manifest["dirty"], false);
    // Shipped once: the next run is refused (exit 4), and `status` tells a stalled
    // cluster-backup.sh from a fresh one (exit 5 once the newest backup is too old).
    run_code(fx.cmd(&config).arg("backup"), 4);
    run_ok(fx.cmd(&config).args(["status", "--max-age", "1h"]));
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let out = run_code(
        fx.cmd(&config)
            .args(["status", "--json", "--max-age", "1s"]),
        5,
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["fresh"], false, "{status}");
    assert_eq!(status["complete"], 1, "{status}");
    assert_eq!(status["newest_id"], manifest["id"], "{status}");
    // A newer dirty pair is shipped next, marked dirty.
    let ts = "2026-11-23_030000__POSSIBLY_DIRTY__";
    etcd.snapshot_save(&src.join(format!("snapshot_{ts}.db")));
    fx.tar_static(&src, ts, "static-pod-resources/kube-apiserver-pod-7");
    let manifest = backup_json(&fx, &config, &[]);
    assert_eq!(manifest["source"]["timestamp"], "2026-11-23_030000");
    assert_eq!(manifest["dirty"], true, "{manifest}");
}

/// The automated backups' PVC: `backup-<name>-<ts>/` subdirectories; the one still being
/// written (its tarball not finished) is passed over for the newest complete one.
#[test]
fn backup_dir_reads_the_automated_backup_layout() {
    let etcd = EtcdServer::start(false);
    etcd.load(50, 100);
    let fx = Fixture::new();
    let pvc = fx.path("pvc");
    for (dir, ts) in [
        ("backup-daily-2026-11-20_030000", "2026-11-20_030001"),
        ("backup-daily-2026-11-21_030000", "2026-11-21_030001"),
        ("backup-daily-2026-11-22_030000", "2026-11-22_030001"),
    ] {
        let sub = pvc.join(dir);
        std::fs::create_dir_all(&sub).unwrap();
        etcd.snapshot_save(&sub.join(format!("snapshot_{ts}.db")));
        fx.tar_static(&sub, ts, "static-pod-resources");
    }
    // The newest is still being written.
    let writing =
        pvc.join("backup-daily-2026-11-22_030000/static_kuberesources_2026-11-22_030001.tar.gz");
    let full = std::fs::read(&writing).unwrap();
    std::fs::write(&writing, &full[..full.len() / 2]).unwrap();
    let (_, url) = fx.file_url("backups");
    let config = fx.write_config(
        "config.yaml",
        &format!("source:\n  backup_dir: {}\n", pvc.display()),
        &format!("  snapshot: {{ url: \"{url}\" }}\n"),
        "",
    );
    let manifest = backup_json(&fx, &config, &[]);
    assert_eq!(
        manifest["source"]["timestamp"], "2026-11-21_030001",
        "{manifest}"
    );
    // Finished: now it is the newest complete one.
    std::fs::write(&writing, &full).unwrap();
    let manifest = backup_json(&fx, &config, &[]);
    assert_eq!(
        manifest["source"]["timestamp"], "2026-11-22_030001",
        "{manifest}"
    );
}
