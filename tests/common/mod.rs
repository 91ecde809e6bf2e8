//! Shared test harness for etcd-offsite integration tests (`mod common;`).
//!
//! Starts real services on loopback — etcd (plain or mutual TLS), moto (S3),
//! Azurite (Azure Blob), a GCS XML-API front over moto, and a counting HTTP
//! proxy — each in its own temporary directory, killed on drop. Anything that
//! cannot start panics with the service's log tail: tests fail loudly, never skip.
//!
//! Needs the tools that `scripts/setup.sh` installs: etcd, etcdctl, openssl,
//! age, age-keygen, zstd, sha256sum, python3 with moto[server] and
//! azure-storage-blob, and azurite-blob. Support scripts live in `tests/support/`.
#![allow(dead_code)]

pub mod fixture;
pub mod openshift;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tempfile::TempDir;

// ------------------------------------------------------------------ basics

/// Directory holding the Python support scripts (`tests/support`).
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("support")
}

/// Path of one support script, e.g. `support_script("etcd_load.py")`.
pub fn support_script(name: &str) -> PathBuf {
    let p = support_dir().join(name);
    assert!(p.is_file(), "test support script missing: {}", p.display());
    p
}

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). Never returns
/// the same port twice within one test process.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let used = guard.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().unwrap().port();
        if used.insert(port) {
            return port;
        }
    }
    panic!("free_port: could not find an unused port");
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Polls `f` every 100 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        sleep(Duration::from_millis(100));
    }
}

/// The last `lines` lines of a (log) file, or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let v: Vec<&str> = s.lines().collect();
            v[v.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

// ------------------------------------------------------------------ running commands

/// The binary under test: `Command::new(env!("CARGO_BIN_EXE_etcd-offsite"))`.
pub fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_etcd-offsite"))
}

/// Exit code of a finished process; `128 + signal` when killed by a signal.
pub fn exit_code(out: &Output) -> i32 {
    status_code(&out.status)
}

fn status_code(st: &ExitStatus) -> i32 {
    if let Some(c) = st.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(s) = st.signal() {
            return 128 + s;
        }
    }
    -1
}

/// Stdout as a (lossy) String.
pub fn stdout_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stderr as a (lossy) String.
pub fn stderr_str(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The command line, for messages.
pub fn describe_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Exit code, stdout and stderr of a finished command, for messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "exit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        exit_code(out),
        stdout_str(out),
        stderr_str(out)
    )
}

/// Runs the command (stdin closed) and returns its output, whatever the exit code.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe_cmd(cmd)))
}

/// Runs the command and panics with exit code, stdout and stderr unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!(
            "command failed: `{}`\n{}",
            describe_cmd(cmd),
            describe_output(&out)
        );
    }
    out
}

/// Runs the command and panics (with its output) unless it exits with `code`.
pub fn run_code(cmd: &mut Command, code: i32) -> Output {
    let out = run(cmd);
    if exit_code(&out) != code {
        panic!(
            "expected exit code {code} from `{}`\n{}",
            describe_cmd(cmd),
            describe_output(&out)
        );
    }
    out
}

/// Runs the command with `input` on stdin; returns its output, whatever the exit code.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe_cmd(cmd)));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for child");
    let _ = writer.join();
    out
}

/// SHA-256 of a file as lowercase hex (coreutils `sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = run_ok(Command::new("sha256sum").arg(path));
    stdout_str(&out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

// ------------------------------------------------------------------ background services

/// A background process whose stdout and stderr go to a log file; SIGKILLed on drop.
pub struct Service {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Service {
    /// Spawns `cmd` with stdin closed and stdout+stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Service {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{name}: cannot open log {}: {e}", log.display()));
        let f2 = f.try_clone().expect("clone log handle");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(f))
            .stderr(Stdio::from(f2));
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{name}: cannot start `{}`: {e} (is it installed? run scripts/setup.sh)",
                describe_cmd(&cmd)
            )
        });
        Service {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Exit status if the process has ended (None while it runs or after kill()).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_exited().is_none()
    }

    /// Waits until `ready()` is true; panics with the log tail if the process
    /// exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_exited() {
                let msg = format!("exited with code {} before {what}", status_code(&st));
                self.fail(&msg);
            }
            if ready() {
                return;
            }
            if start.elapsed() >= timeout {
                let msg = format!("not ready after {:?}: {what}", timeout);
                self.fail(&msg);
            }
            sleep(Duration::from_millis(100));
        }
    }

    /// Kills the process and panics with `msg` and the log tail.
    pub fn fail(&mut self, msg: &str) -> ! {
        self.kill();
        panic!(
            "{} failed: {msg}\n--- last lines of {} ---\n{}\n--- end of log ---",
            self.name,
            self.log.display(),
            tail(&self.log, 40)
        );
    }

    /// SIGKILL and reap (idempotent).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name ("STOP", "CONT", "TERM", ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            run_ok(
                Command::new("kill")
                    .arg(format!("-{sig}"))
                    .arg(pid.to_string()),
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill(); // SIGKILL also ends a SIGSTOPped process
    }
}

fn log_mentions_port_clash(log: &Path) -> bool {
    let t = tail(log, 60).to_lowercase();
    t.contains("address already in use") || t.contains("eaddrinuse")
}

/// Starts a support script that prints `READY <port>`; retries on port clashes.
fn start_script(
    name: &str,
    dir: &Path,
    log_name: &str,
    make: impl Fn(u16) -> Command,
) -> (Service, u16) {
    let log = dir.join(log_name);
    for attempt in 1..=3 {
        let port = free_port();
        let mut svc = Service::spawn(name, make(port), &log);
        let needle = format!("READY {port}");
        let start = Instant::now();
        loop {
            if svc.try_exited().is_some() {
                if attempt < 3 && log_mentions_port_clash(&log) {
                    break;
                }
                svc.fail("exited before printing READY");
            }
            if fs::read_to_string(&log)
                .map(|s| s.contains(&needle))
                .unwrap_or(false)
                && port_open(port)
            {
                return (svc, port);
            }
            if start.elapsed() > Duration::from_secs(30) {
                svc.fail("did not print READY within 30 s");
            }
            sleep(Duration::from_millis(50));
        }
    }
    unreachable!()
}

/// Starts a server on a free port and waits until that port is open; retries on port
/// clashes. `package` names what to install when it exits during startup.
fn start_listener(
    name: &str,
    log: &Path,
    package: &str,
    make: impl Fn(u16) -> Command,
) -> (Service, u16) {
    for attempt in 1..=3 {
        let port = free_port();
        let mut svc = Service::spawn(name, make(port), log);
        let start = Instant::now();
        loop {
            if svc.try_exited().is_some() {
                if attempt < 3 && log_mentions_port_clash(log) {
                    break;
                }
                svc.fail(&format!(
                    "exited during startup (is {package} installed? run scripts/setup.sh)"
                ));
            }
            if port_open(port) {
                return (svc, port);
            }
            if start.elapsed() > Duration::from_secs(30) {
                svc.fail("port not open after 30 s");
            }
            sleep(Duration::from_millis(100));
        }
    }
    panic!(
        "{name}: could not start after 3 attempts; log:\n{}",
        tail(log, 40)
    );
}

// ------------------------------------------------------------------ minimal HTTP client

/// A response from [`http`].
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to a loopback `http://127.0.0.1:PORT/...` URL
/// (Connection: close). Panics on connection errors or non-loopback hosts.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("http(): not an http:// URL: {url}"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport);
    assert!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "http(): refusing non-loopback URL {url}"
    );
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = addr.replace("localhost", "127.0.0.1");
    let mut s = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("http(): connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    let mut has_len = false;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case("content-length") {
            has_len = true;
        }
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len && (!body.is_empty() || matches!(method, "PUT" | "POST")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .and_then(|_| s.write_all(body))
        .unwrap_or_else(|e| panic!("http(): send to {url}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("http(): read from {url}: {e}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "http(): malformed response from {url}: {:?}",
                String::from_utf8_lossy(&raw)
            )
        });
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("http(): bad status line from {url}: {status_line}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        b = &b[eol + 2..];
        if size == 0 || b.len() < size {
            break;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[(size + 2).min(b.len())..];
    }
    out
}

fn url_encode_key(key: &str) -> String {
    let mut s = String::new();
    for &c in key.as_bytes() {
        if c.is_ascii_alphanumeric() || b"/-_.~".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(
            rest[..j]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &rest[j + close.len()..];
    }
    out
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

fn openssl(dir: &Path, args: &[&str]) {
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
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    tls: Option<TlsFiles>,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl EtcdServer {
    /// Starts a fresh etcd; `tls` = https client URL with client-cert auth.
    pub fn start(tls: bool) -> EtcdServer {
        Self::start_with_args(tls, &[])
    }

    /// Like [`EtcdServer::start`] with extra etcd flags (e.g. `["--snapshot-count", "100"]`).
    pub fn start_with_args(tls: bool, extra_args: &[&str]) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("etcd-test-")
            .tempdir()
            .expect("tempdir");
        let tls = tls.then(|| generate_tls(&dir.path().join("tls")));
        let data_dir = dir.path().join("data");
        let mut e = EtcdServer {
            svc: None,
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

    /// Restores `snapshot_file` with `etcdctl snapshot restore` (which checks the
    /// snapshot's hash trailer) into a new data dir and starts a plain etcd on it:
    /// proof that a snapshot boots. Panics with etcdctl's output if restore fails.
    pub fn start_from_snapshot(snapshot_file: &Path) -> EtcdServer {
        let dir = tempfile::Builder::new()
            .prefix("etcd-restored-")
            .tempdir()
            .expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut e = EtcdServer {
            svc: None,
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

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn initial_cluster(&self) -> String {
        format!("{}={}", self.name, self.peer_url())
    }

    /// Starts etcd on `data_dir`; `new_ports` picks fresh ports (retrying on
    /// clashes); `restore` first restores a snapshot into the data dir.
    fn boot(&mut self, new_ports: bool, restore: Option<PathBuf>) {
        let log = self.dir.path().join("etcd.log");
        for attempt in 1..=3 {
            if new_ports {
                self.client_port = free_port();
                self.peer_port = free_port();
            }
            if let Some(snap) = &restore {
                let _ = fs::remove_dir_all(&self.data_dir);
                let mut c = Command::new("etcdctl");
                c.env("ETCDCTL_API", "3")
                    .arg("snapshot")
                    .arg("restore")
                    .arg(snap)
                    .arg("--data-dir")
                    .arg(&self.data_dir)
                    .arg("--name")
                    .arg(&self.name)
                    .arg("--initial-cluster")
                    .arg(self.initial_cluster())
                    .arg("--initial-advertise-peer-urls")
                    .arg(self.peer_url());
                let out = run(&mut c);
                if !out.status.success() {
                    panic!(
                        "etcdctl snapshot restore of {} failed:\n{}",
                        snap.display(),
                        describe_output(&out)
                    );
                }
            }
            let client_url = format!("{}://127.0.0.1:{}", self.scheme(), self.client_port);
            let mut cmd = Command::new("etcd");
            cmd.arg("--name")
                .arg(&self.name)
                .arg("--data-dir")
                .arg(&self.data_dir)
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(self.peer_url())
                .arg("--initial-advertise-peer-urls")
                .arg(self.peer_url())
                .arg("--initial-cluster")
                .arg(self.initial_cluster())
                .arg("--initial-cluster-state")
                .arg("new")
                .args(ETCD_COMMON_FLAGS)
                .args(&self.extra_args);
            if let Some(t) = &self.tls {
                cmd.arg("--cert-file")
                    .arg(&t.server_cert)
                    .arg("--key-file")
                    .arg(&t.server_key)
                    .arg("--trusted-ca-file")
                    .arg(&t.ca)
                    .arg("--client-cert-auth");
            }
            let _ = fs::write(&log, format!("=== etcd start (attempt {attempt}) ===\n"));
            let mut svc = Service::spawn("etcd", cmd, &log);
            let start = Instant::now();
            loop {
                if let Some(st) = svc.try_exited() {
                    if new_ports && attempt < 3 && log_mentions_port_clash(&log) {
                        break; // try again with other ports
                    }
                    svc.fail(&format!(
                        "exited with code {} during startup",
                        status_code(&st)
                    ));
                }
                if port_open(self.client_port) && self.health_ok() {
                    self.svc = Some(svc);
                    return;
                }
                if start.elapsed() > Duration::from_secs(20) {
                    svc.fail(&format!(
                        "`etcdctl endpoint health` not healthy after 20 s at {}",
                        self.endpoint()
                    ));
                }
                sleep(Duration::from_millis(150));
            }
        }
        panic!(
            "etcd: could not start after 3 attempts (port clashes); log:\n{}",
            tail(&log, 40)
        );
    }

    fn health_ok(&self) -> bool {
        let mut c = self.etcdctl();
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

    /// `etcdctl` with ETCDCTL_API=3, --endpoints and (for TLS) --cacert/--cert/--key.
    pub fn etcdctl(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.endpoint());
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

/// Checks a snapshot the way a restore would (`etcdctl snapshot restore` into a
/// scratch dir, which verifies the SHA-256 trailer). Err carries etcdctl's output.
pub fn snapshot_restore_check(snapshot_file: &Path) -> Result<(), String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot_file)
        .arg("--data-dir")
        .arg(tmp.path().join("data"));
    let out = run(&mut c);
    if out.status.success() {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

// ------------------------------------------------------------------ moto (S3)

/// SigV4-shaped Authorization header; moto does not verify signatures.
pub const FAKE_SIGV4: &str = "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
                              SignedHeaders=host, Signature=00";

/// moto S3 server (`python3 -m moto.server`), in-memory, us-east-1. Use
/// access key `test` / secret `test` and `aws_allow_http=true` against it.
pub struct Moto {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl Moto {
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("moto-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("moto.log");
        let (svc, port) = start_listener("moto", &log, "moto[server]", |port| {
            let mut cmd = Command::new("python3");
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            cmd
        });
        Moto { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket (unsigned PUT /name, region us-east-1). Panics unless 200.
    pub fn create_bucket(&self, name: &str) {
        let r = http("PUT", &format!("{}/{}", self.endpoint(), name), &[], b"");
        if r.status != 200 {
            panic!(
                "moto: create bucket {name}: HTTP {}: {}\n{}",
                r.status,
                r.text(),
                self.svc.log_tail(20)
            );
        }
    }

    /// All keys in a bucket under `prefix` (ListObjectsV2, follows continuation).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&prefix={}",
                self.endpoint(),
                bucket,
                url_encode_key(prefix).replace('/', "%2F")
            );
            if let Some(t) = &token {
                url.push_str(&format!(
                    "&continuation-token={}",
                    url_encode_key(t).replace('/', "%2F")
                ));
            }
            let r = http("GET", &url, &[("Authorization", FAKE_SIGV4)], b"");
            assert_eq!(r.status, 200, "moto list {bucket}: {}", r.text());
            let xml = r.text();
            keys.extend(xml_values(&xml, "Key"));
            token = xml_values(&xml, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// An object's bytes, or None when it does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = http(
            "GET",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[("Authorization", FAKE_SIGV4)],
            b"",
        );
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("moto get {bucket}/{key}: HTTP {s}: {}", r.text()),
        }
    }

    /// Writes an object directly (e.g. to corrupt an artifact in a test).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        let r = http(
            "PUT",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[
                ("Authorization", FAKE_SIGV4),
                ("Content-Type", "application/octet-stream"),
            ],
            data,
        );
        assert_eq!(r.status, 200, "moto put {bucket}/{key}: {}", r.text());
    }

    /// Deletes an object directly.
    pub fn delete_object(&self, bucket: &str, key: &str) {
        let r = http(
            "DELETE",
            &format!("{}/{}/{}", self.endpoint(), bucket, url_encode_key(key)),
            &[("Authorization", FAKE_SIGV4)],
            b"",
        );
        assert!(
            r.status == 204 || r.status == 200,
            "moto delete {bucket}/{key}: {}",
            r.text()
        );
    }
}

/// `log_tail` and `kill` of helpers that run as one [`Service`] in their `svc` field.
macro_rules! service_controls {
    ($($helper:ty),+) => {$(
        impl $helper {
            pub fn log_tail(&self, lines: usize) -> String {
                self.svc.log_tail(lines)
            }

            pub fn kill(&mut self) {
                self.svc.kill();
            }
        }
    )+};
}

service_controls!(Moto, GcsFront, Azurite, CountingProxy);

// ------------------------------------------------------------------ GCS front

/// GCS XML-API front (tests/support/gcs_front.py) over a [`Moto`]. A GCS bucket
/// is a moto bucket. Point object_store at it with a service-account JSON
/// (see [`GcsFront::write_service_account`]) and `allow_http=true`.
pub struct GcsFront {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl GcsFront {
    pub fn start(moto: &Moto) -> GcsFront {
        let dir = tempfile::Builder::new()
            .prefix("gcs-front-")
            .tempdir()
            .expect("tempdir");
        let req_log = dir.path().join("requests.log");
        let upstream = moto.endpoint();
        let (svc, port) = start_script("gcs_front", dir.path(), "gcs_front.log", |port| {
            let mut c = Command::new("python3");
            c.arg(support_script("gcs_front.py"))
                .arg("--port")
                .arg(port.to_string())
                .arg("--upstream")
                .arg(&upstream)
                .arg("--log")
                .arg(&req_log);
            c
        });
        GcsFront { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT` (object_store's `google_base_url` / `gcs_base_url`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket through the front (same as on moto).
    pub fn create_bucket(&self, name: &str) {
        let r = http("PUT", &format!("{}/{}", self.endpoint(), name), &[], b"");
        assert_eq!(
            r.status,
            200,
            "gcs_front: create bucket {name}: {}",
            r.text()
        );
    }

    /// Writes a service-account JSON with `disable_oauth: true` and
    /// `gcs_base_url` = this front, and returns its path
    /// (for `google_service_account` / `service_account_path`).
    pub fn write_service_account(&self, path: &Path) -> PathBuf {
        write_gcs_service_account(path, &self.endpoint());
        path.to_path_buf()
    }

    /// Requests seen so far, one `METHOD /path?query` line each.
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Writes a GCS service-account JSON with `disable_oauth: true` and `gcs_base_url`.
pub fn write_gcs_service_account(path: &Path, gcs_base_url: &str) {
    let json = serde_json::json!({
        "type": "service_account",
        "private_key": "unused",
        "private_key_id": "unused",
        "client_email": "test@example.invalid",
        "disable_oauth": true,
        "gcs_base_url": gcs_base_url,
    });
    fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).expect("write service account");
}

// ------------------------------------------------------------------ Azurite

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite blob service (`azurite-blob`), data in a TempDir.
pub struct Azurite {
    svc: Service,
    port: u16,
    dir: TempDir,
}

impl Azurite {
    pub fn start() -> Azurite {
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("azurite.log");
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let (svc, port) = start_listener("azurite", &log, "azurite", |port| {
            let mut cmd = Command::new("azurite-blob");
            cmd.arg("--blobHost")
                .arg("127.0.0.1")
                .arg("--blobPort")
                .arg(port.to_string())
                .arg("--location")
                .arg(&data)
                .args(["--silent", "--skipApiVersionCheck", "--loose"]);
            cmd
        });
        Azurite { svc, port, dir }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1` (AZURITE_BLOB_STORAGE_URL /
    /// azure_storage_endpoint).
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.port, AZURITE_ACCOUNT)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connection string for azure-storage-blob and friends.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={};",
            self.blob_endpoint()
        )
    }

    /// Runs a Python snippet with `svc` = BlobServiceClient for this Azurite and
    /// `args` = the extra arguments; returns stdout. Panics with the traceback.
    pub fn python(&self, snippet: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let prog = format!(
            "import sys\nfrom azure.storage.blob import BlobServiceClient\n\
             svc = BlobServiceClient.from_connection_string(sys.argv[1])\nargs = sys.argv[2:]\n{snippet}\n"
        );
        let mut c = Command::new("python3");
        c.arg("-c")
            .arg(prog)
            .arg(self.connection_string())
            .args(args);
        let out = run_with_stdin(&mut c, stdin);
        if !out.status.success() {
            panic!(
                "azurite python snippet failed\n{}\n--- azurite log ---\n{}",
                describe_output(&out),
                self.svc.log_tail(20)
            );
        }
        out.stdout
    }

    /// Creates a container (object_store needs it to exist).
    pub fn create_container(&self, name: &str) {
        self.python("svc.create_container(args[0])", &[name], b"");
    }

    /// Blob names in a container under `prefix`.
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<String> {
        let out = self.python(
            "for b in svc.get_container_client(args[0]).list_blobs(name_starts_with=args[1]):\n    print(b.name)",
            &[container, prefix],
            b"",
        );
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A blob's bytes, or None when it does not exist.
    pub fn download(&self, container: &str, blob: &str) -> Option<Vec<u8>> {
        let out = self.python(
            "from azure.core.exceptions import ResourceNotFoundError\n\
             try:\n    d = svc.get_blob_client(args[0], args[1]).download_blob().readall()\n\
             except ResourceNotFoundError:\n    sys.stdout.write('MISSING'); sys.exit(0)\n\
             sys.stdout.buffer.write(b'FOUND' + d)",
            &[container, blob],
            b"",
        );
        if out.starts_with(b"FOUND") {
            Some(out[5..].to_vec())
        } else {
            None
        }
    }

    /// Uploads (overwrites) a blob directly.
    pub fn upload(&self, container: &str, blob: &str, data: &[u8]) {
        self.python(
            "svc.get_blob_client(args[0], args[1]).upload_blob(sys.stdin.buffer.read(), overwrite=True)",
            &[container, blob],
            data,
        );
    }
}

// ------------------------------------------------------------------ counting proxy

/// Loopback forward proxy (tests/support/counting_proxy.py) that logs one line
/// per request (`CONNECT host:port` or `METHOD http://...`) and refuses
/// non-loopback targets. Use its url() as HTTP_PROXY / HTTPS_PROXY.
pub struct CountingProxy {
    svc: Service,
    port: u16,
    log: PathBuf,
    dir: TempDir,
}

impl CountingProxy {
    pub fn start() -> CountingProxy {
        let dir = tempfile::Builder::new()
            .prefix("proxy-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("requests.log");
        let (svc, port) = start_script("counting_proxy", dir.path(), "proxy.log", |port| {
            let mut c = Command::new("python3");
            c.arg(support_script("counting_proxy.py"))
                .arg("--port")
                .arg(port.to_string())
                .arg("--log")
                .arg(&log);
            c
        });
        CountingProxy {
            svc,
            port,
            log,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Logged requests so far, in order.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

// ------------------------------------------------------------------ age / zstd CLIs

/// `age-keygen -o DIR/NAME.key`; returns (identity file, `age1...` recipient).
pub fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let _ = fs::remove_file(&path);
    run_ok(Command::new("age-keygen").arg("-o").arg(&path));
    let text = fs::read_to_string(&path).expect("read age identity");
    let recipient = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap_or_else(|| panic!("no public key line in {}", path.display()))
        .trim()
        .to_string();
    assert!(
        recipient.starts_with("age1"),
        "unexpected recipient {recipient}"
    );
    (path, recipient)
}

/// Decrypts and decompresses with the stock CLIs: `age -d -i ID INPUT | zstd -d -o OUTPUT`.
/// Err carries both programs' exit codes and stderr.
pub fn age_zstd_decrypt(identity: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let mut age = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run age: {e}"))?;
    let age_out = age.stdout.take().unwrap();
    let zstd = Command::new("zstd")
        .args(["-d", "-q", "-f", "-o"])
        .arg(output)
        .stdin(Stdio::from(age_out))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run zstd: {e}"))?;
    let zstd_out = zstd.wait_with_output().map_err(|e| format!("zstd: {e}"))?;
    let age_res = age.wait_with_output().map_err(|e| format!("age: {e}"))?;
    if age_res.status.success() && zstd_out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "age -d exit {} stderr: {}\nzstd -d exit {} stderr: {}",
            status_code(&age_res.status),
            String::from_utf8_lossy(&age_res.stderr).trim(),
            status_code(&zstd_out.status),
            String::from_utf8_lossy(&zstd_out.stderr).trim()
        ))
    }
}

/// `age -d -i ID INPUT -o OUTPUT` (no decompression).
pub fn age_decrypt(identity: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let out = run(Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(output)
        .arg(input));
    if out.status.success() {
        Ok(())
    } else {
        Err(describe_output(&out))
    }
}

/// Reads a whole file (panics with the path on error).
pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Creates a file with `len` deterministic pseudo-random bytes.
pub fn write_pseudo_random(path: &Path, len: usize, seed: u64) {
    let mut f = File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut buf = Vec::with_capacity(1 << 16);
    let mut left = len;
    while left > 0 {
        buf.clear();
        while buf.len() < (1 << 16).min(left) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.extend_from_slice(&x.to_le_bytes());
        }
        buf.truncate((1 << 16).min(left));
        f.write_all(&buf).unwrap();
        left -= buf.len();
    }
}
