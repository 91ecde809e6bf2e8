//! A real etcd per test (plain or mutual TLS, etcd 3.4 or 3.5), its certificates and
//! etcdctl checks.

use std::collections::BTreeMap;
use std::fs::{self};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tempfile::TempDir;

use super::*;

// ------------------------------------------------------------------ etcd releases

/// Where `scripts/setup.sh` installs the etcd 3.5.1 binaries (etcd, etcdctl, etcdutl).
pub const ETCD35_DIR: &str = "/opt/etcd-v3.5.1";

/// The etcd release a test runs against: Debian's 3.4 (on PATH) or the real 3.5.1
/// binaries in [`ETCD35_DIR`]. Chosen per test, never by the environment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EtcdVersion {
    V34,
    V35,
}

impl EtcdVersion {
    /// Both releases, for tests that run on each.
    pub const ALL: [EtcdVersion; 2] = [EtcdVersion::V34, EtcdVersion::V35];

    /// `3.4` or `3.5`.
    pub fn minor(self) -> &'static str {
        match self {
            EtcdVersion::V34 => "3.4",
            EtcdVersion::V35 => "3.5",
        }
    }

    /// The directory holding this release's `etcd`, `etcdctl` (and for 3.5 `etcdutl`),
    /// checked once: `etcd --version` must print this release. Panics with the fix when
    /// it is missing: a test that needs 3.5 fails loudly, it never passes on 3.4.
    pub fn bin_dir(self) -> &'static Path {
        static DIRS: [std::sync::OnceLock<Result<PathBuf, String>>; 2] =
            [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
        let found = DIRS[self as usize].get_or_init(|| self.find_bin_dir());
        match found {
            Ok(dir) => dir,
            Err(why) => panic!("etcd {} is not usable: {why}", self.minor()),
        }
    }

    fn find_bin_dir(self) -> Result<PathBuf, String> {
        let dir = match self {
            EtcdVersion::V35 => PathBuf::from(ETCD35_DIR),
            EtcdVersion::V34 => std::env::var_os("PATH")
                .and_then(|path| std::env::split_paths(&path).find(|d| d.join("etcd").is_file()))
                .ok_or("no `etcd` on PATH; run `bash scripts/setup.sh` (Debian: etcd-server)")?,
        };
        let etcd = dir.join("etcd");
        let out = Command::new(&etcd).arg("--version").output().map_err(|e| {
            format!(
                "cannot run {}: {e}; run `bash scripts/setup.sh`, which installs it",
                etcd.display()
            )
        })?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let wanted = format!("etcd Version: {}.", self.minor());
        if !text.lines().any(|l| l.starts_with(&wanted)) {
            return Err(format!(
                "{} --version does not print {wanted}x:\n{text}",
                etcd.display()
            ));
        }
        for tool in self.tools() {
            if !dir.join(tool).is_file() {
                return Err(format!(
                    "{} is missing; run `bash scripts/setup.sh`",
                    dir.join(tool).display()
                ));
            }
        }
        Ok(dir)
    }

    /// The binaries this release comes with.
    fn tools(self) -> &'static [&'static str] {
        match self {
            EtcdVersion::V34 => &["etcd", "etcdctl"],
            EtcdVersion::V35 => &["etcd", "etcdctl", "etcdutl"],
        }
    }

    /// The full path of one of this release's binaries (`etcd`, `etcdctl`, `etcdutl`).
    pub fn tool(self, name: &str) -> PathBuf {
        self.bin_dir().join(name)
    }

    /// This release's `etcdctl` with ETCDCTL_API=3.
    pub fn etcdctl(self) -> Command {
        let mut c = Command::new(self.tool("etcdctl"));
        c.env("ETCDCTL_API", "3");
        c
    }

    /// The tool that restores a snapshot into a data dir: `etcdutl` where the release has
    /// it (3.5 deprecates `etcdctl snapshot restore`, 3.6 removes it), else `etcdctl`.
    pub fn snapshot_restore(self) -> Command {
        match self {
            EtcdVersion::V34 => {
                let mut c = self.etcdctl();
                c.args(["snapshot", "restore"]);
                c
            }
            EtcdVersion::V35 => {
                let mut c = Command::new(self.tool("etcdutl"));
                c.args(["snapshot", "restore"]);
                c
            }
        }
    }
}

// ------------------------------------------------------------------ etcd

/// Certificates of a TLS etcd (all PEM, generated with the openssl CLI).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) {
    run_ok(Command::new("openssl").current_dir(dir).args(args));
}

/// Generates a CA, a server certificate (SAN IP:127.0.0.1, DNS:localhost; server
/// and client auth, since etcd's own gateway dials itself with it) and a client
/// certificate in `dir`.
pub fn generate_tls(dir: &Path) -> TlsFiles {
    fs::create_dir_all(dir).expect("create tls dir");
    let serial = |n: u32| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        format!("0x{:x}{:02x}", t.as_nanos() & 0xffff_ffff_ffff, n)
    };
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "3650",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=etcd-offsite-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    fs::write(
        dir.join("server.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (i, (name, cn)) in [("server", "etcd-server"), ("client", "etcd-client")]
        .iter()
        .enumerate()
    {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        let ext = format!("{name}.ext");
        let subj = format!("/CN={cn}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", &key, "-out", &csr,
                "-subj", &subj,
            ],
        );
        let ser = serial(i as u32 + 1);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "3650",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &ser,
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
    }
    TlsFiles {
        ca: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
    }
}

/// `etcd` of `version` for one new member `name` on loopback URLs, with [`ETCD_COMMON_FLAGS`].
fn etcd_command(
    version: EtcdVersion,
    name: &str,
    data_dir: &Path,
    client_url: &str,
    peer_url: &str,
    initial_cluster: &str,
) -> Command {
    let mut cmd = Command::new(version.tool("etcd"));
    cmd.args(["--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen-client-urls", client_url])
        .args(["--advertise-client-urls", client_url])
        .args(["--listen-peer-urls", peer_url])
        .args(["--initial-advertise-peer-urls", peer_url])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-state", "new"])
        .args(ETCD_COMMON_FLAGS);
    cmd
}

/// Flags every test etcd gets (big transactions for the loader, big quota).
pub const ETCD_COMMON_FLAGS: &[&str] = &[
    "--max-txn-ops",
    "10000",
    "--max-request-bytes",
    "33554432",
    "--quota-backend-bytes",
    "8589934592",
];

/// A single-member etcd on loopback, in its own TempDir; SIGKILLed on drop.
pub struct EtcdServer {
    svc: Option<Service>,
    version: EtcdVersion,
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    tls: Option<TlsFiles>,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts a fresh etcd 3.4; `tls` = https client URL with client-cert auth.
    pub fn start(tls: bool) -> EtcdServer {
        Self::start_version(EtcdVersion::V34, tls)
    }

    /// Like [`EtcdServer::start`] with extra etcd flags (e.g. `["--snapshot-count", "100"]`).
    pub fn start_with_args(tls: bool, extra_args: &[&str]) -> EtcdServer {
        Self::start_version_with_args(EtcdVersion::V34, tls, extra_args)
    }

    /// Starts a fresh etcd of `version` (panics when that release is not installed).
    pub fn start_version(version: EtcdVersion, tls: bool) -> EtcdServer {
        Self::start_version_with_args(version, tls, &[])
    }

    /// [`EtcdServer::start_version`] with extra etcd flags.
    pub fn start_version_with_args(
        version: EtcdVersion,
        tls: bool,
        extra_args: &[&str],
    ) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .expect("tempdir");
        let tls = tls.then(|| generate_tls(&dir.path().join("tls")));
        let data_dir = dir.path().join("data");
        let mut e = EtcdServer {
            svc: None,
            version,
            name: "default".into(),
            client_port: 0,
            peer_port: 0,
            data_dir,
            tls,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            dir,
        };
        e.boot(true, None);
        e
    }

    /// Restores `snapshot_file` with etcd 3.4's `etcdctl snapshot restore` (which checks
    /// the snapshot's hash trailer) into a new data dir and starts a plain etcd on it:
    /// proof that a snapshot boots. Panics with etcdctl's output if restore fails.
    pub fn start_from_snapshot(snapshot_file: &Path) -> EtcdServer {
        Self::start_version_from_snapshot(EtcdVersion::V34, snapshot_file)
    }

    /// [`EtcdServer::start_from_snapshot`] with `version`'s tools (3.5: `etcdutl`) and etcd.
    pub fn start_version_from_snapshot(version: EtcdVersion, snapshot_file: &Path) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("etcd-restored-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut e = EtcdServer {
            svc: None,
            version,
            name: "restored".into(),
            client_port: 0,
            peer_port: 0,
            data_dir,
            tls: None,
            extra_args: vec![],
            dir,
        };
        e.boot(true, Some(snapshot_file.to_path_buf()));
        e
    }

    /// Starts `version`'s etcd as member `name` on a data dir that something else restored
    /// (the member's stored membership wins over the fresh ports it listens on).
    pub fn start_version_on_data_dir(
        version: EtcdVersion,
        name: &str,
        data_dir: &Path,
    ) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("etcd-on-data-dir-")
            .tempdir()
            .expect("tempdir");
        let mut e = EtcdServer {
            svc: None,
            version,
            name: name.into(),
            client_port: 0,
            peer_port: 0,
            data_dir: data_dir.to_path_buf(),
            tls: None,
            extra_args: vec![],
            dir,
        };
        e.boot(true, None);
        e
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn peer_url(peer_port: u16) -> String {
        format!("http://127.0.0.1:{peer_port}")
    }

    fn initial_cluster(&self, peer_port: u16) -> String {
        format!("{}={}", self.name, Self::peer_url(peer_port))
    }

    /// Starts etcd on `data_dir`; `new_ports` picks fresh ports (retrying on
    /// clashes); `restore` first restores a snapshot into the data dir.
    fn boot(&mut self, new_ports: bool, restore: Option<PathBuf>) {
        let log = self.dir.path().join("etcd.log");
        let ports = std::cell::Cell::new((self.client_port, self.peer_port));
        let this = &*self;
        let (svc, _) = start_with_retry(
            "etcd",
            &log,
            Duration::from_secs(20),
            new_ports,
            "etcd",
            |attempt| {
                if new_ports {
                    ports.set((free_port(), free_port()));
                }
                let (client, peer) = ports.get();
                if let Some(snap) = &restore {
                    this.restore_data_dir(snap, peer);
                }
                let _ = fs::write(&log, format!("=== etcd start (attempt {attempt}) ===\n"));
                (this.command(client, peer), client)
            },
            |client| port_open(client) && this.healthy_at(client),
        );
        (self.client_port, self.peer_port) = ports.get();
        self.svc = Some(svc);
    }

    /// `snapshot restore` of `snap` into a fresh data dir, with this release's tool.
    fn restore_data_dir(&self, snap: &Path, peer_port: u16) {
        let _ = fs::remove_dir_all(&self.data_dir);
        let mut c = self.version.snapshot_restore();
        c.arg(snap)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--name")
            .arg(&self.name)
            .arg("--initial-cluster")
            .arg(self.initial_cluster(peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(Self::peer_url(peer_port));
        let out = run(&mut c);
        if !out.status.success() {
            panic!(
                "etcd {} snapshot restore of {} failed:\n{}",
                self.version.minor(),
                snap.display(),
                describe_output(&out)
            );
        }
    }

    /// The etcd command line for these ports.
    fn command(&self, client_port: u16, peer_port: u16) -> Command {
        let client_url = format!("{}://127.0.0.1:{client_port}", self.scheme());
        let peer_url = Self::peer_url(peer_port);
        let mut cmd = etcd_command(
            self.version,
            &self.name,
            &self.data_dir,
            &client_url,
            &peer_url,
            &self.initial_cluster(peer_port),
        );
        cmd.args(&self.extra_args);
        if let Some(t) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        cmd
    }

    /// `etcdctl endpoint health` against the server on `client_port`.
    fn healthy_at(&self, client_port: u16) -> bool {
        let mut c = self.version.etcdctl();
        c.arg("--endpoints")
            .arg(format!("{}://127.0.0.1:{client_port}", self.scheme()));
        self.tls_args(&mut c);
        c.args([
            "endpoint",
            "health",
            "--dial-timeout",
            "1s",
            "--command-timeout",
            "2s",
        ]);
        run(&mut c).status.success()
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The etcd release this server runs.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's TempDir (certificates under `tls/`, log in `etcd.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    pub fn pid(&self) -> Option<u32> {
        self.svc.as_ref().and_then(|s| s.pid())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("etcd.log"), lines)
    }

    /// For a TLS server: `--cacert`, `--cert` and `--key` (etcdctl's and etcd_load.py's flags).
    fn tls_args(&self, c: &mut Command) {
        if let Some(t) = &self.tls {
            c.arg("--cacert")
                .arg(&t.ca)
                .arg("--cert")
                .arg(&t.client_cert)
                .arg("--key")
                .arg(&t.client_key);
        }
    }

    /// This release's `etcdctl` with ETCDCTL_API=3, --endpoints and (for TLS)
    /// --cacert/--cert/--key.
    pub fn etcdctl(&self) -> Command {
        let mut c = self.version.etcdctl();
        c.arg("--endpoints").arg(self.endpoint());
        self.tls_args(&mut c);
        c
    }

    /// Loads `count` keys of `value_size` bytes with etcd_load.py (prefix
    /// /registry/, seed 1). Returns the loader's summary line.
    pub fn load(&self, count: usize, value_size: usize) -> String {
        self.load_with(count, value_size, "/registry/", 1)
    }

    /// [`EtcdServer::load`] with an explicit key prefix and seed.
    pub fn load_with(&self, count: usize, value_size: usize, prefix: &str, seed: u64) -> String {
        let mut c = Command::new("python3");
        c.arg(support_script("etcd_load.py"))
            .arg("--endpoint")
            .arg(self.endpoint())
            .arg("--count")
            .arg(count.to_string())
            .arg("--value-size")
            .arg(value_size.to_string())
            .arg("--prefix")
            .arg(prefix)
            .arg("--seed")
            .arg(seed.to_string());
        self.tls_args(&mut c);
        let out = run(&mut c);
        if !out.status.success() {
            panic!(
                "etcd_load.py failed against {}\n{}\n--- etcd log tail ---\n{}",
                self.endpoint(),
                describe_output(&out),
                self.log_tail(20)
            );
        }
        stdout_str(&out).trim().to_string()
    }

    /// `etcdctl put KEY` with the value on stdin (any bytes).
    pub fn put(&self, key: &str, value: impl AsRef<[u8]>) {
        let mut c = self.etcdctl();
        c.arg("put").arg("--").arg(key); // `--`: keys may start with '-'
        if value.as_ref().is_empty() {
            c.arg(""); // etcdctl refuses an empty stdin
        }
        let out = run_with_stdin(&mut c, value.as_ref());
        if !out.status.success() {
            panic!("etcdctl put {key} failed\n{}", describe_output(&out));
        }
    }

    /// Every key and value (`etcdctl get "" --prefix -w json`, base64-decoded).
    pub fn dump(&self) -> BTreeMap<String, Vec<u8>> {
        let mut c = self.etcdctl();
        c.args(["get", "", "--prefix", "-w", "json"]);
        let out = run_ok(&mut c);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("etcdctl get -w json: bad JSON: {e}"));
        let mut m = BTreeMap::new();
        if let Some(kvs) = v.get("kvs").and_then(|k| k.as_array()) {
            for kv in kvs {
                let key = B64
                    .decode(kv["key"].as_str().unwrap_or_default())
                    .expect("base64 key");
                let val = match kv.get("value").and_then(|x| x.as_str()) {
                    Some(s) => B64.decode(s).expect("base64 value"),
                    None => Vec::new(), // protobuf JSON omits empty values
                };
                m.insert(String::from_utf8_lossy(&key).into_owned(), val);
            }
        }
        m
    }

    /// `etcdctl endpoint status -w json` for this endpoint (first entry's "Status").
    pub fn status(&self) -> serde_json::Value {
        let mut c = self.etcdctl();
        c.args(["endpoint", "status", "-w", "json"]);
        let out = run_ok(&mut c);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        v.get(0).and_then(|e| e.get("Status")).cloned().unwrap_or(v)
    }

    /// Current revision (from `endpoint status`).
    pub fn revision(&self) -> i64 {
        self.status()["header"]["revision"]
            .as_i64()
            .expect("revision in status")
    }

    /// Database size in bytes (from `endpoint status`).
    pub fn db_size(&self) -> u64 {
        self.status()["dbSize"].as_u64().expect("dbSize in status")
    }

    /// `etcdctl snapshot save OUT` (the reference snapshot to compare against).
    pub fn snapshot_save(&self, out: &Path) {
        let mut c = self.etcdctl();
        c.arg("snapshot").arg("save").arg(out);
        run_ok(&mut c);
    }

    /// SIGKILL (idempotent). The data dir is kept until drop.
    pub fn kill(&mut self) {
        if let Some(mut s) = self.svc.take() {
            s.kill();
        }
    }

    /// SIGSTOP: etcd stops answering but connections stay open (a hung member).
    pub fn pause(&self) {
        if let Some(s) = &self.svc {
            s.signal("STOP");
        }
    }

    /// SIGCONT after [`EtcdServer::pause`].
    pub fn resume(&self) {
        if let Some(s) = &self.svc {
            s.signal("CONT");
        }
    }

    /// Kills (if running) and starts again on the same data dir and ports.
    pub fn restart(&mut self) {
        self.kill();
        self.boot(false, None);
    }

    pub fn is_running(&mut self) -> bool {
        self.svc.as_mut().map(|s| s.is_running()).unwrap_or(false)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill(); // SIGKILL also ends a paused (SIGSTOPped) etcd
    }
}

/// Checks a snapshot the way a restore would (etcd 3.4's `etcdctl snapshot restore` into
/// a scratch dir, which verifies the SHA-256 trailer). Err carries etcdctl's output.
pub fn snapshot_restore_check(snapshot_file: &Path) -> Result<(), String> {
    snapshot_restore_check_with(EtcdVersion::V34, snapshot_file)
}

/// [`snapshot_restore_check`] with `version`'s restore tool (3.5: `etcdutl`).
pub fn snapshot_restore_check_with(
    version: EtcdVersion,
    snapshot_file: &Path,
) -> Result<(), String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = version.snapshot_restore();
    c.arg(snapshot_file)
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = run(&mut c);
    if out.status.success() {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

// ------------------------------------------------------------------ a 3-member cluster

/// An etcd cluster of `n` plain members on loopback (`m0`, `m1`, ...), one TempDir with a
/// data dir and a log per member; every member SIGKILLed on drop.
pub struct EtcdCluster {
    version: EtcdVersion,
    members: Vec<Option<Service>>,
    /// (client port, peer port) per member.
    ports: Vec<(u16, u16)>,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts `n` etcd 3.4 members together (each waits for its peers) and waits until
    /// every one answers `endpoint health`. Port clashes start the whole cluster again on
    /// new ports.
    pub fn start(n: usize) -> EtcdCluster {
        Self::start_version(EtcdVersion::V34, n)
    }

    /// [`EtcdCluster::start`] with members of `version`.
    pub fn start_version(version: EtcdVersion, n: usize) -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("etcd-cluster-")
            .tempdir()
            .expect("tempdir");
        let mut cluster = EtcdCluster {
            version,
            members: Vec::new(),
            ports: Vec::new(),
            dir,
        };
        for attempt in 1..=3 {
            cluster.ports = (0..n).map(|_| (free_port(), free_port())).collect();
            cluster.members = (0..n).map(|i| Some(cluster.spawn(i))).collect();
            let ready = wait_until(Duration::from_secs(40), || {
                (0..n).all(|i| cluster.healthy(i)) || cluster.any_exited()
            });
            if ready && !cluster.any_exited() {
                return cluster;
            }
            let clash = (0..n).any(|i| log_mentions_port_clash(&cluster.log(i)));
            let logs = (0..n)
                .map(|i| format!("--- m{i} ---\n{}", tail(&cluster.log(i), 15)))
                .collect::<Vec<_>>()
                .join("\n");
            for m in cluster.members.iter_mut() {
                if let Some(mut s) = m.take() {
                    s.kill();
                }
            }
            if !clash || attempt == 3 {
                panic!("etcd cluster of {n} did not start (attempt {attempt}):\n{logs}");
            }
            for i in 0..n {
                let _ = fs::remove_dir_all(cluster.data_dir(i));
            }
        }
        unreachable!()
    }

    fn any_exited(&mut self) -> bool {
        self.members
            .iter_mut()
            .any(|m| m.as_mut().is_some_and(|s| s.try_exited().is_some()))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.log"))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.data"))
    }

    fn initial_cluster(&self) -> String {
        self.ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (a new one, or again on its data dir: then the initial-cluster
    /// flags are ignored and it rejoins).
    fn spawn(&self, i: usize) -> Service {
        let (client, peer) = self.ports[i];
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = etcd_command(
            self.version,
            &format!("m{i}"),
            &self.data_dir(i),
            &client_url,
            &peer_url,
            &self.initial_cluster(),
        );
        cmd.args(["--initial-cluster-token", "etcd-offsite-faults"]);
        let log = self.log(i);
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"=== etcd start ===\n"));
        Service::spawn(&format!("etcd m{i}"), cmd, &log)
    }

    pub fn member_count(&self) -> usize {
        self.ports.len()
    }

    /// `http://127.0.0.1:PORT` of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.ports[i].0)
    }

    pub fn endpoints(&self) -> Vec<String> {
        (0..self.member_count()).map(|i| self.endpoint(i)).collect()
    }

    /// This release's `etcdctl` (API 3) against member `i` only.
    pub fn etcdctl(&self, i: usize) -> Command {
        let mut c = self.version.etcdctl();
        c.arg("--endpoints").arg(self.endpoint(i));
        c
    }

    /// The etcd release the members run.
    pub fn version(&self) -> EtcdVersion {
        self.version
    }

    /// Member `i` answers `endpoint health` (a quorum read: the cluster has a leader).
    pub fn healthy(&self, i: usize) -> bool {
        let mut c = self.etcdctl(i);
        c.args([
            "endpoint",
            "health",
            "--dial-timeout",
            "1s",
            "--command-timeout",
            "2s",
        ]);
        run(&mut c).status.success()
    }

    /// The member that leads the cluster now (`endpoint status`: member id = leader id).
    pub fn leader(&self) -> Option<usize> {
        (0..self.member_count()).find(|&i| {
            let mut c = self.etcdctl(i);
            c.args([
                "endpoint",
                "status",
                "-w",
                "json",
                "--command-timeout",
                "2s",
            ]);
            let out = run(&mut c);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let status = &v[0]["Status"];
            let member = status["header"]["member_id"].as_u64();
            member.is_some() && member == status["leader"].as_u64()
        })
    }

    /// SIGKILL of member `i` (idempotent).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.members[i].take() {
            s.kill();
        }
    }

    /// Starts a killed member `i` again on its data dir and ports, and waits until every
    /// member is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.members[i] = Some(self.spawn(i));
        let n = self.member_count();
        if !wait_until(Duration::from_secs(40), || (0..n).all(|m| self.healthy(m))) {
            panic!(
                "etcd m{i} did not rejoin its cluster:\n{}",
                tail(&self.log(i), 30)
            );
        }
    }

    /// Loads `count` keys of `value_size` bytes through member 0 (etcd_load.py, prefix
    /// /registry/, seed 1); returns the loader's summary line.
    pub fn load(&self, count: usize, value_size: usize) -> String {
        let mut c = Command::new("python3");
        c.arg(support_script("etcd_load.py"))
            .arg("--endpoint")
            .arg(self.endpoint(0))
            .arg("--count")
            .arg(count.to_string())
            .arg("--value-size")
            .arg(value_size.to_string());
        let out = run(&mut c);
        if !out.status.success() {
            panic!(
                "etcd_load.py failed against the cluster\n{}\n--- m0 log tail ---\n{}",
                describe_output(&out),
                tail(&self.log(0), 20)
            );
        }
        stdout_str(&out).trim().to_string()
    }

    /// The last lines of member `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        tail(&self.log(i), lines)
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
