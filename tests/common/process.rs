//! Processes: the binary under test, running commands, background services and their start.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::{Duration, Instant};

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

pub(crate) fn status_code(st: &ExitStatus) -> i32 {
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

pub(crate) fn log_mentions_port_clash(log: &Path) -> bool {
    let t = tail(log, 60).to_lowercase();
    t.contains("address already in use") || t.contains("eaddrinuse")
}

/// The one way services start: `spawn(attempt)` builds the command (choosing its port)
/// and returns it with the port that `ready(port)` then polls, every 100 ms, until
/// `timeout`. A process that exits during startup because its port was taken is started
/// again (3 attempts when `fresh_ports`); any other early exit or a timeout panics with
/// the log tail, naming `package` as what to install.
pub fn start_with_retry(
    name: &str,
    log: &Path,
    timeout: Duration,
    fresh_ports: bool,
    package: &str,
    mut spawn: impl FnMut(u32) -> (Command, u16),
    mut ready: impl FnMut(u16) -> bool,
) -> (Service, u16) {
    let attempts = if fresh_ports { 3 } else { 1 };
    for attempt in 1..=attempts {
        let (cmd, port) = spawn(attempt);
        let mut svc = Service::spawn(name, cmd, log);
        let start = Instant::now();
        loop {
            if let Some(status) = svc.try_exited() {
                if attempt < attempts && log_mentions_port_clash(log) {
                    break;
                }
                svc.fail(&format!(
                    "exited with code {} during startup (is {package} installed? run scripts/setup.sh)",
                    status_code(&status)
                ));
            }
            if ready(port) {
                return (svc, port);
            }
            if start.elapsed() > timeout {
                svc.fail(&format!("not ready after {timeout:?}"));
            }
            sleep(Duration::from_millis(100));
        }
    }
    panic!(
        "{name}: could not start after {attempts} attempts (port clashes); log:\n{}",
        tail(log, 40)
    );
}

/// Starts a support script that prints `READY <port>` (a python3 script in tests/support).
pub(crate) fn start_script(
    name: &str,
    dir: &Path,
    log_name: &str,
    make: impl Fn(u16) -> Command,
) -> (Service, u16) {
    let log = dir.join(log_name);
    start_with_retry(
        name,
        &log,
        Duration::from_secs(30),
        true,
        "python3",
        |_| {
            let port = free_port();
            (make(port), port)
        },
        |port| {
            fs::read_to_string(&log).is_ok_and(|s| s.contains(&format!("READY {port}")))
                && port_open(port)
        },
    )
}

/// Starts a server on a free port and waits until that port is open.
pub(crate) fn start_listener(
    name: &str,
    log: &Path,
    package: &str,
    make: impl Fn(u16) -> Command,
) -> (Service, u16) {
    start_with_retry(
        name,
        log,
        Duration::from_secs(30),
        true,
        package,
        |_| {
            let port = free_port();
            (make(port), port)
        },
        port_open,
    )
}

/// Waits for `child` at most `limit`; a run that hangs is killed and the test fails.
/// Its stdout and stderr are read while it runs: a full pipe (64 KiB of `-vv` logs) would
/// otherwise block the child and look like a hang.
pub fn wait_within(mut child: Child, limit: Duration, what: &str) -> Output {
    fn drain(
        pipe: Option<impl std::io::Read + Send + 'static>,
    ) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            timed_out = true;
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    if timed_out {
        panic!(
            "{what}: still running after {limit:?}\n{}",
            describe_output(&out)
        );
    }
    out
}

/// Starts `cmd` with stdin closed and stdout/stderr captured.
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", describe_cmd(cmd)))
}

/// Runs `cmd`, killing it after `limit` (a command that should finish must not hang the suite).
pub fn run_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = describe_cmd(cmd);
    wait_within(spawn(cmd), limit, &what)
}

/// `etcd-offsite run` as a child process, killed on drop.
pub struct Scheduler(pub Child);

impl Scheduler {
    /// Starts `run` from `tool` (the binary with its config) with metrics on loopback
    /// `port` and stderr into `log`.
    pub fn start(mut tool: Command, port: u16, log: &Path) -> Scheduler {
        let child = tool
            .args(["run", "--metrics-listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(log).expect("create the run log"),
            ))
            .spawn()
            .expect("spawn etcd-offsite run");
        Scheduler(child)
    }

    /// SIGTERM, then the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        run_ok(Command::new("kill").args(["-TERM", &self.0.id().to_string()]));
        self.0.wait().expect("wait for run")
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
