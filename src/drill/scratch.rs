//! A throwaway etcd started from a restored snapshot with the stock etcd tools, on loopback
//! ports, in a scratch directory that goes away with it, whatever happened.

use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::EtcdSource;
use crate::source::etcd::EtcdMember;

/// Why a drill could not run at all (exit 1), as opposed to a check that failed.
#[derive(Debug, thiserror::Error)]
#[error("the drill could not run: {0}")]
pub struct CannotRun(pub String);

/// The stock tools the drill uses: from `--etcd-bin-dir` / `schedule.drill.etcd_bin_dir`
/// when given, else from PATH.
#[derive(Debug, Clone)]
pub struct EtcdTools {
    pub etcd: PathBuf,
    pub restore: RestoreTool,
    /// What `etcd --version` printed (`3.5.1`).
    pub version: String,
}

/// Where the etcd tools are looked for, for messages.
fn place(bin_dir: Option<&Path>) -> String {
    bin_dir.map_or("on PATH".to_string(), |dir| {
        format!("in {} (--etcd-bin-dir)", dir.display())
    })
}

/// `name` in `bin_dir` (only there), or on PATH.
fn lookup(bin_dir: Option<&Path>, name: &str) -> Option<PathBuf> {
    match bin_dir {
        Some(dir) => Some(dir.join(name)).filter(|p| p.is_file()),
        None => which(name),
    }
}

impl EtcdTools {
    /// Finds the tools in `bin_dir` (only there), or on PATH.
    pub fn find(bin_dir: Option<&Path>) -> Result<Self, CannotRun> {
        let etcd = lookup(bin_dir, "etcd").ok_or_else(|| {
            CannotRun(format!(
                "no `etcd` binary {}; install etcd (Debian: etcd-server) on the drill host, or point --etcd-bin-dir at a directory with etcd and etcdutl",
                place(bin_dir)
            ))
        })?;
        let version = tool_version(&etcd, &["--version"], "etcd Version:")?;
        Ok(Self {
            etcd,
            restore: RestoreTool::find(bin_dir)?,
            version,
        })
    }
}

/// The stock tool that turns a snapshot into a member data directory: `etcdutl` where it
/// exists (3.5 deprecates `etcdctl snapshot restore`, 3.6 removes it), else a 3.4 `etcdctl`.
#[derive(Debug, Clone)]
pub struct RestoreTool {
    pub path: PathBuf,
    /// The tool's own release (`etcdutl version`, `etcdctl version`).
    pub version: String,
}

/// The member a restore writes, as `snapshot restore` takes it.
#[derive(Debug, Clone)]
pub struct MemberSpec<'a> {
    pub data_dir: &'a Path,
    pub name: &'a str,
    pub initial_cluster: &'a str,
    pub initial_advertise_peer_urls: &'a str,
    pub initial_cluster_token: Option<&'a str>,
    /// `--bump-revision N --mark-compacted` (etcd takes one only with the other).
    pub bump_revision: Option<u64>,
}

impl RestoreTool {
    /// Finds `etcdutl`, else `etcdctl` older than 3.6, in `bin_dir` (only there) or on PATH.
    pub fn find(bin_dir: Option<&Path>) -> Result<Self, CannotRun> {
        if let Some(etcdutl) = lookup(bin_dir, "etcdutl") {
            let version = tool_version(&etcdutl, &["version"], "etcdutl version:")?;
            return Ok(Self {
                path: etcdutl,
                version,
            });
        }
        let place = place(bin_dir);
        let etcdctl = lookup(bin_dir, "etcdctl").ok_or_else(|| {
            CannotRun(format!(
                "neither `etcdutl` nor `etcdctl` is {place}; a snapshot is restored with `etcdutl snapshot restore` (etcd 3.5+) or `etcdctl snapshot restore` (3.4): install etcd's tools (Debian: etcd-client) or pass --etcd-bin-dir"
            ))
        })?;
        let version = tool_version(&etcdctl, &["version"], "etcdctl version:")?;
        if !older_than(&version, "3.6.0") {
            return Err(CannotRun(format!(
                "{} is etcdctl {version}, which has no `snapshot restore` (removed in 3.6); `etcdutl` is needed {place}: install it next to etcd, or pass --etcd-bin-dir",
                etcdctl.display()
            )));
        }
        Ok(Self {
            path: etcdctl,
            version,
        })
    }

    /// Refuses when the tool lacks `--bump-revision` and `--mark-compacted` (added in etcd
    /// 3.5.10 and 3.4.27), read from its own help rather than guessed from its version.
    pub fn check_bump_revision(&self) -> Result<(), CannotRun> {
        let help = Command::new(&self.path)
            .args(["snapshot", "restore", "--help"])
            .env_clear()
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| CannotRun(format!("cannot run {}: {e}", self.path.display())))?;
        let text = [help.stdout, help.stderr].concat();
        let text = String::from_utf8_lossy(&text);
        if text.contains("--bump-revision") && text.contains("--mark-compacted") {
            Ok(())
        } else {
            Err(CannotRun(format!(
                "{} ({}) has no --bump-revision / --mark-compacted: they came with etcd 3.5.10 (etcdutl, etcdctl) and 3.4.27 (etcdctl); point --etcd-bin-dir at the cluster's own etcd release, or restore without --bump-revision",
                self.path.display(),
                self.version
            )))
        }
    }

    /// `snapshot restore SNAPSHOT` into `member.data_dir` (which must not exist yet). The
    /// child gets no environment of this process (credentials stay here). Errors carry
    /// the tool's last words.
    pub fn restore(&self, snapshot: &Path, member: &MemberSpec<'_>) -> Result<(), String> {
        let mut cmd = child_command(&self.path);
        cmd.env("ETCDCTL_API", "3")
            .arg("snapshot")
            .arg("restore")
            .arg(snapshot)
            .arg("--data-dir")
            .arg(member.data_dir)
            .arg("--name")
            .arg(member.name)
            .arg("--initial-cluster")
            .arg(member.initial_cluster)
            .arg("--initial-advertise-peer-urls")
            .arg(member.initial_advertise_peer_urls);
        if let Some(token) = member.initial_cluster_token {
            cmd.arg("--initial-cluster-token").arg(token);
        }
        if let Some(bump) = member.bump_revision {
            cmd.arg("--bump-revision")
                .arg(bump.to_string())
                .arg("--mark-compacted");
        }
        let restored = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.path.display()))?;
        if restored.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{} snapshot restore` refused the snapshot: {}",
                self.path.display(),
                last_line(&restored.stderr)
            ))
        }
    }
}

/// The version a tool prints after `label` (`etcd --version`: `etcd Version: 3.5.1`).
fn tool_version(tool: &Path, args: &[&str], label: &str) -> Result<String, CannotRun> {
    let out = Command::new(tool)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| CannotRun(format!("cannot run {}: {e}", tool.display())))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            CannotRun(format!(
                "{} {} printed no version; is it etcd's tool?",
                tool.display(),
                args.join(" ")
            ))
        })
}

/// `a` is an older release than `b` (both `major.minor.patch`, anything after a `-` or
/// a non-digit ignored; an unreadable version is not older).
pub fn older_than(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> Option<Vec<u64>> {
        v.trim_start_matches('v')
            .split(['-', '+'])
            .next()?
            .split('.')
            .map(|p| p.parse().ok())
            .collect()
    }
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// A private directory removed (with everything in it) on drop.
pub struct ScratchDir {
    pub path: PathBuf,
}

impl ScratchDir {
    /// Creates `<parent>/etcd-offsite-drill-<id>-<pid>` after checking that `parent` has
    /// room for `needed` bytes.
    pub fn create(parent: &Path, id: &str, needed: u64) -> Result<Self, CannotRun> {
        sweep_stale(parent);
        let name = format!("etcd-offsite-drill-{id}-{}", std::process::id());
        Self::make(
            parent,
            &name,
            needed,
            "the drill",
            "pass --scratch-dir on a larger disk",
        )
    }

    /// Creates a hidden private directory beside `dir` (on its filesystem, so what is
    /// written there moves into `dir` by rename) after checking room for `needed` bytes.
    pub fn beside(dir: &Path, needed: u64) -> Result<Self, CannotRun> {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let name = format!(
            ".{}.etcd-offsite-{}",
            dir.file_name()
                .map_or("restore".into(), |n| n.to_string_lossy()),
            std::process::id()
        );
        Self::make(
            parent,
            &name,
            needed,
            "the restore",
            "free space there or restore on a larger disk",
        )
    }

    fn make(
        parent: &Path,
        name: &str,
        needed: u64,
        what: &str,
        fix: &str,
    ) -> Result<Self, CannotRun> {
        let stat = rustix::fs::statvfs(parent)
            .map_err(|e| CannotRun(format!("directory {}: {e}", parent.display())))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        if free < needed {
            return Err(CannotRun(format!(
                "{} has {} free, {what} needs about {} (the snapshot and a restored copy); {fix}",
                parent.display(),
                bytesize::ByteSize(free).display().iec_short(),
                bytesize::ByteSize(needed).display().iec_short()
            )));
        }
        let path = parent.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| CannotRun(format!("creating {}: {e}", path.display())))?;
        Ok(Self { path })
    }
}

/// Removes the scratch directories of drills that were killed (SIGKILL, a crash, a power
/// cut) and so could not remove their own: `etcd-offsite-drill-<id>-<pid>` whose process
/// is gone. Their etcd died with them (`PR_SET_PDEATHSIG`); their data must not stay.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("etcd-offsite-drill-"))
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if alive || !is_dir {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(dir = %entry.path().display(), "removed the scratch directory of a drill that was killed")
            }
            Err(e) => {
                tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove the scratch directory of a drill that was killed")
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a scratch directory");
        }
    }
}

/// A running throwaway etcd; stopped on drop.
pub struct ScratchEtcd {
    child: Child,
    pub endpoint: String,
    log: PathBuf,
    tls: ScratchTls,
}

impl Drop for ScratchEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchEtcd {
    /// Restores `snapshot` into `<scratch>/data` with the stock tool, starts etcd on it and
    /// waits until it answers. Errors carry the tool's own last words.
    pub async fn start(tools: &EtcdTools, scratch: &Path, snapshot: &Path) -> Result<Self, String> {
        let client_port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let peer_port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let peer = format!("https://127.0.0.1:{peer_port}");
        let endpoint = format!("https://127.0.0.1:{client_port}");
        let data = scratch.join("data");
        let tls = ScratchTls::create(scratch).map_err(|e| format!("drill certificates: {e}"))?;
        tools.restore.restore(
            snapshot,
            &MemberSpec {
                data_dir: &data,
                name: "drill",
                initial_cluster: &format!("drill={peer}"),
                initial_advertise_peer_urls: &peer,
                initial_cluster_token: None,
                bump_revision: None,
            },
        )?;
        let log = scratch.join("etcd.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = child_command(&tools.etcd)
            .args(["--name", "drill", "--data-dir"])
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&endpoint)
            .arg("--advertise-client-urls")
            .arg(&endpoint)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("drill={peer}"))
            // Only the drill can talk to this member (it serves decrypted data): mutual
            // TLS with a CA made for this drill alone, on the client and the peer port.
            // The client certificate's CN is `root`, which etcd takes as the user when
            // the restored data has authentication enabled.
            .arg("--client-cert-auth")
            .arg("--trusted-ca-file")
            .arg(&tls.ca)
            .arg("--cert-file")
            .arg(&tls.server_cert)
            .arg("--key-file")
            .arg(&tls.server_key)
            .arg("--peer-client-cert-auth")
            .arg("--peer-trusted-ca-file")
            .arg(&tls.ca)
            .arg("--peer-cert-file")
            .arg(&tls.server_cert)
            .arg("--peer-key-file")
            .arg(&tls.server_key)
            // Drills read large values; nothing else talks to this member.
            .args([
                "--max-request-bytes",
                "33554432",
                "--quota-backend-bytes",
                "17179869184",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", tools.etcd.display()))?;
        let mut etcd = Self {
            child,
            endpoint,
            log,
            tls,
        };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "etcd exited ({status}) on the restored data: {}",
                    self.log_tail()
                ));
            }
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer within 120 s on the restored data: {}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A client of this member.
    pub async fn connect(&self) -> Result<EtcdMember, String> {
        let source = EtcdSource {
            endpoints: vec![self.endpoint.clone()],
            discover: None,
            base_dir: None,
            node_name: None,
            cacert: Some(self.tls.ca.clone()),
            cert: Some(self.tls.client_cert.clone()),
            key: Some(self.tls.client_key.clone()),
            username: None,
            password_file: None,
            timeout: Duration::from_secs(10),
            read_rate_limit: None,
            pace: crate::config::Pace::Off,
        };
        EtcdMember::connect(&source, &self.endpoint)
            .await
            .map_err(|e| e.to_string())
    }

    fn log_tail(&self) -> String {
        last_line(&std::fs::read(&self.log).unwrap_or_default())
    }
}

/// A child of the drill: an environment cleared down to a PATH (no store credentials or
/// anything else of this process reaches it), its own process group (a terminal's Ctrl-C
/// reaches the drill, which stops it), and killed by the kernel when the drill dies,
/// however it dies (`PR_SET_PDEATHSIG`).
fn child_command(program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            let parent = libc::getppid();
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The drill died before the death signal was armed.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the drill is gone"));
            }
            Ok(())
        });
    }
    cmd
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate with CN
/// `root`, made for one drill and kept (owner-only) in its scratch directory.
struct ScratchTls {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl ScratchTls {
    fn create(scratch: &Path) -> Result<Self, String> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let fail = |e: rcgen::Error| e.to_string();
        let dir = scratch.join("tls");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let ca_key = KeyPair::generate().map_err(fail)?;
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "etcd-offsite drill CA");
        let ca_cert = ca.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |cn: &str, purposes: Vec<ExtendedKeyUsagePurpose>, server: bool| {
            let key = KeyPair::generate().map_err(fail)?;
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = purposes;
            if server {
                params.subject_alt_names = vec![SanType::IpAddress(std::net::IpAddr::V4(
                    std::net::Ipv4Addr::LOCALHOST,
                ))];
            }
            let cert = params.signed_by(&key, &issuer).map_err(fail)?;
            Ok::<_, String>((cert.pem(), key.serialize_pem()))
        };
        // The server certificate is the peer client too.
        let (server_cert, server_key) = leaf(
            "etcd-offsite drill",
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            true,
        )?;
        let (client_cert, client_key) =
            leaf("root", vec![ExtendedKeyUsagePurpose::ClientAuth], false)?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok::<_, String>(path)
        };
        Ok(Self {
            ca: write("ca.pem", &ca_cert.pem())?,
            server_cert: write("server.pem", &server_cert)?,
            server_key: write("server-key.pem", &server_key)?,
            client_cert: write("client.pem", &client_cert)?,
            client_key: write("client-key.pem", &client_key)?,
        })
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last non-empty line a tool printed, shortened.
fn last_line(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)");
    line.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::older_than;

    #[test]
    fn release_order() {
        assert!(older_than("3.4.23", "3.5.1"));
        assert!(older_than("3.5.1", "3.5.12"));
        assert!(!older_than("3.5.12", "3.5.12"));
        assert!(!older_than("3.6.5", "3.6.0"));
        assert!(older_than("3.5.26", "3.6.0-rc.1"));
        assert!(!older_than("unknown", "3.5.0"));
    }
}
