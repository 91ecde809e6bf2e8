//! Logs on stderr (text or JSON); stdout is reserved for command output. Metrics: one
//! set, served by `run` on `/metrics` or written after any command as a textfile for
//! node_exporter's textfile collector, both in the Prometheus text format 0.0.4.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber; `RUST_LOG` overrides the verbosity flags.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    // rustls logs every failed certificate check at ERROR, once per retry; the error
    // etcd-offsite reports says it once, with the fix (`-v` shows rustls' lines).
    let default = match (quiet, verbose) {
        (true, _) => "warn,rustls=off",
        (false, 0) => "etcd_offsite=info,warn,rustls=off",
        (false, 1) => "etcd_offsite=debug,info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // On a closed stderr (`2>&1 | head -1`) a log line is lost, never a panic: the
        // subscriber's own report of the failed write would go through `eprintln!`.
        .log_internal_errors(false)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes one line of command output on stdout. A reader that went away (`| head -1`,
/// `| true`) is not a failure of the command, and `println!` would panic on it: the rest
/// of the output is dropped (said once on stderr, if anyone still reads it) and the
/// command finishes its work and exits with its own code. SIGPIPE stays ignored (Rust's
/// default), so the write returns EPIPE instead of killing the process mid-commit.
pub fn print_line(args: std::fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let line = format!("{args}\n");
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        tracing::warn!(error = %e, "standard output is closed; the rest of this command's output is dropped");
    }
}

/// The last words of a command on stderr; a closed stderr loses them, never panics.
pub fn print_error(args: std::fmt::Arguments<'_>) {
    let line = format!("{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `println!` for command output, through [`print_line`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::telemetry::print_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// A plaintext byte counter drawn on stderr only when it is a terminal.
pub fn progress(label: &str, total: Option<u64>) -> indicatif::ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(total) => (
            indicatif::ProgressBar::new(total),
            "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::new_spinner(),
            "{prefix:>16} {spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Results a backup attempt is counted under; all are exported from the first count on,
/// so `increase()` sees a failure's first occurrence.
const BACKUP_RESULTS: [&str; 3] = ["success", "failure", "skipped"];
/// Results a drill is counted under.
const DRILL_RESULTS: [&str; 2] = ["success", "failure"];

/// The metrics of etcd-offsite, named `etcd_offsite_*`, rendered in the Prometheus text
/// format 0.0.4 (what node_exporter's textfile collector and every Prometheus parse).
/// Every sample carries `cluster`; the figures read from the target also carry the
/// `command` that read them, so two textfiles on one host (a backup's and a drill's)
/// never export the same series, which node_exporter would drop.
pub struct Metrics {
    cluster: String,
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Counts by result; absent until this process counted one.
    backups: Option<BTreeMap<&'static str, u64>>,
    drills: Option<BTreeMap<&'static str, u64>>,
    /// The last run of each command.
    runs: BTreeMap<String, Run>,
    /// What the target held when last read, and which command read it.
    figures: Option<(String, StoreFigures)>,
    /// `status --all-clusters`: every cluster of the target (instead of `figures`).
    fleet: Option<Vec<ClusterFigures>>,
}

struct Run {
    at: DateTime<Utc>,
    success: bool,
    duration: std::time::Duration,
}

impl Metrics {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            state: std::sync::Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain numbers: still readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a backup attempt: `success`, `failure` or `skipped`.
    pub fn count_backup(&self, result: &'static str) {
        count(&mut self.state().backups, &BACKUP_RESULTS, result);
    }

    /// Counts a drill: `success` or `failure`.
    pub fn count_drill(&self, result: &'static str) {
        count(&mut self.state().drills, &DRILL_RESULTS, result);
    }

    /// Records that `command` ended now after `duration`, and whether it succeeded.
    pub fn ran(&self, command: &str, success: bool, duration: std::time::Duration) {
        self.state().runs.insert(
            command.to_string(),
            Run {
                at: Utc::now(),
                success,
                duration,
            },
        );
    }

    /// Sets the figures that describe the target from what it holds (read by `command`),
    /// so a restarted `run` or a one-shot command reports the real age of the newest
    /// backup and drill. Until the target is read, none of them is exported: a target
    /// that cannot be read must not look empty.
    pub fn observe(&self, command: &str, figures: &StoreFigures) {
        self.state().figures = Some((command.to_string(), figures.clone()));
    }

    /// Sets the figures of every cluster of a target (`status --all-clusters`), each
    /// exported with its own `cluster` label and `command="status"`, under the names of
    /// one cluster's figures (so the per-cluster rules hold for them too).
    pub fn observe_fleet(&self, clusters: Vec<ClusterFigures>) {
        self.state().fleet = Some(clusters);
    }

    /// Every metric in the Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let state = self.state();
        let mut out = Text::default();
        let cluster = [("cluster", self.cluster.as_str())];
        for (name, help, counts) in [
            (
                "etcd_offsite_backups_total",
                "Backups attempted by this process, by result (success, failure, skipped by a guard because another run did or does the work)",
                &state.backups,
            ),
            (
                "etcd_offsite_drills_total",
                "Restore drills run by this process, by result (success, failure)",
                &state.drills,
            ),
        ] {
            if let Some(counts) = counts {
                out.family(name, "counter", help);
                for (result, n) in counts {
                    out.sample(name, &[cluster[0], ("result", result)], *n as f64);
                }
            }
        }
        let runs = &state.runs;
        if !runs.is_empty() {
            type Field = fn(&Run) -> f64;
            let fields: [(&str, &str, Field); 3] = [
                (
                    "etcd_offsite_last_run_timestamp_seconds",
                    "Unix time the command's last run ended, by command",
                    |r| seconds(r.at),
                ),
                (
                    "etcd_offsite_last_run_success",
                    "1 when the command's last run succeeded (or was skipped by a routine guard), else 0",
                    |r| f64::from(u8::from(r.success)),
                ),
                (
                    "etcd_offsite_last_run_duration_seconds",
                    "How long the command's last run took, by command",
                    |r| r.duration.as_secs_f64(),
                ),
            ];
            for (name, help, field) in fields {
                out.family(name, "gauge", help);
                for (command, run) in runs {
                    out.sample(name, &[cluster[0], ("command", command)], field(run));
                }
            }
        }
        if let Some(fleet) = &state.fleet {
            render_fleet(&mut out, fleet);
        } else if let Some((command, figures)) = &state.figures {
            let labels = [cluster[0], ("command", command.as_str())];
            let mut gauge = |name: &str, help: &str, value: Option<f64>| {
                if let Some(value) = value {
                    out.family(name, "gauge", help);
                    out.sample(name, &labels, value);
                }
            };
            gauge(
                "etcd_offsite_backups_complete",
                "Complete trusted backups in the target",
                Some(figures.backups_complete as f64),
            );
            gauge(
                "etcd_offsite_stored_bytes",
                "Bytes stored by all complete trusted backups in the target",
                Some(figures.stored_bytes as f64),
            );
            gauge(
                "etcd_offsite_last_success_timestamp_seconds",
                "Unix time the newest complete trusted backup in the target finished; absent when there is none",
                figures.last_success.map(seconds),
            );
            gauge(
                "etcd_offsite_last_stored_bytes",
                "Bytes stored by the newest complete trusted backup in the target",
                figures.last_stored_bytes.map(|b| b as f64),
            );
            gauge(
                "etcd_offsite_drill_recorded",
                "1 when the target holds a successful restore drill of a trusted backup, 0 when it holds none",
                Some(f64::from(u8::from(figures.last_drill_success.is_some()))),
            );
            gauge(
                "etcd_offsite_last_drill_success_timestamp_seconds",
                "Unix time of the newest successful restore drill in the target; absent when there is none",
                figures.last_drill_success.map(seconds),
            );
        }
        out.0
    }

    /// Writes [`Metrics::render`] to `path` atomically ([`write_atomically`]), as
    /// node_exporter's textfile collector requires.
    pub fn write_textfile(&self, path: &std::path::Path) -> std::io::Result<()> {
        write_atomically(path, self.render().as_bytes())
    }
}

/// Writes `contents` to `path` atomically: a temporary name in the same directory, synced,
/// then renamed over `path`; on any error the temporary file is removed and `path` is left
/// as it was. The temporary name is random and opened create-new without following links,
/// so a link planted in the directory cannot turn the write onto another file; the rename
/// replaces a link at `path` itself rather than writing through it.
pub fn write_atomically(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    let partial = path.with_file_name(format!(
        ".{}.{:016x}.partial",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&partial, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
}

/// The content type of [`Metrics::render`]'s text, for `/metrics`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn count(
    counts: &mut Option<BTreeMap<&'static str, u64>>,
    results: &[&'static str],
    result: &'static str,
) {
    let counts = counts.get_or_insert_with(|| results.iter().map(|r| (*r, 0)).collect());
    *counts.entry(result).or_default() += 1;
}

/// Prometheus text format 0.0.4: `# HELP` and `# TYPE` once per family, then its samples.
#[derive(Default)]
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        use std::fmt::Write;
        let labels = labels
            .iter()
            .map(|(k, v)| {
                let v = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("{k}=\"{v}\"")
            })
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
    }
}

/// One cluster of a fleet view, as the metrics report it.
#[derive(Debug, Clone, Default)]
pub struct ClusterFigures {
    pub cluster: String,
    /// When its newest trusted backup finished, and what it stored.
    pub last_success: Option<DateTime<Utc>>,
    pub last_stored_bytes: Option<u64>,
    /// When its newest successful drill of a trusted backup ran.
    pub last_drill_success: Option<DateTime<Utc>>,
    /// Older than the limits `status` was given, or missing.
    pub stale: bool,
}

/// Each family once, then one sample per cluster.
fn render_fleet(out: &mut Text, fleet: &[ClusterFigures]) {
    type Field = fn(&ClusterFigures) -> Option<f64>;
    let fields: [(&str, &str, Field); 6] = [
        (
            "etcd_offsite_backup_recorded",
            "1 when the target holds a complete trusted backup of the cluster, 0 when it holds none",
            |c| Some(f64::from(u8::from(c.last_success.is_some()))),
        ),
        (
            "etcd_offsite_last_success_timestamp_seconds",
            "Unix time the newest complete trusted backup in the target finished; absent when there is none",
            |c| c.last_success.map(seconds),
        ),
        (
            "etcd_offsite_last_stored_bytes",
            "Bytes stored by the newest complete trusted backup in the target",
            |c| c.last_stored_bytes.map(|b| b as f64),
        ),
        (
            "etcd_offsite_drill_recorded",
            "1 when the target holds a successful restore drill of a trusted backup, 0 when it holds none",
            |c| Some(f64::from(u8::from(c.last_drill_success.is_some()))),
        ),
        (
            "etcd_offsite_last_drill_success_timestamp_seconds",
            "Unix time of the newest successful restore drill in the target; absent when there is none",
            |c| c.last_drill_success.map(seconds),
        ),
        (
            "etcd_offsite_stale",
            "1 when status --all-clusters found the cluster older than the limits it was given (--max-age, --max-drill-age), else 0",
            |c| Some(f64::from(u8::from(c.stale))),
        ),
    ];
    for (name, help, field) in fields {
        let values: Vec<(&str, f64)> = fleet
            .iter()
            .filter_map(|c| field(c).map(|v| (c.cluster.as_str(), v)))
            .collect();
        if values.is_empty() {
            continue;
        }
        out.family(name, "gauge", help);
        for (cluster, value) in values {
            out.sample(name, &[("cluster", cluster), ("command", "status")], value);
        }
    }
}

/// What a target holds, as the metrics report it.
#[derive(Debug, Clone, Default)]
pub struct StoreFigures {
    pub backups_complete: usize,
    pub stored_bytes: u64,
    /// When the newest counted backup finished, and what it stored.
    pub last_success: Option<DateTime<Utc>>,
    pub last_stored_bytes: Option<u64>,
    /// When the newest successful drill that counts ran.
    pub last_drill_success: Option<DateTime<Utc>>,
}

/// This process's peak resident memory in bytes (Linux `VmHWM`), for logs and benchmarks.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn seconds(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

/// Limits that keep idle or slow clients of the metrics endpoint from starving the process.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// How long a client may take to send its request headers.
    pub header_timeout: std::time::Duration,
    /// How long one connection may last in all.
    pub connection_timeout: std::time::Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: std::time::Duration::from_secs(5),
            connection_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Serves `render()` as Prometheus text on `GET /metrics` (HTTP/1.1, one request per
/// connection) until the task is dropped.
pub async fn serve_metrics<F>(listener: tokio::net::TcpListener, render: F, limits: ServeLimits)
where
    F: Fn() -> String + Clone + Send + Sync + 'static,
{
    use std::time::Duration;
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(10);
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(10);
                accepted
            }
            Err(e) => {
                // Out of descriptors (EMFILE) or buffers: accepting again at once would spin
                // a core and starve the backups that need those descriptors too.
                tracing::warn!(error = %e, retry_in = ?backoff, "metrics endpoint cannot accept");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Close at once instead of queueing: an idle flood must not hold descriptors.
            tracing::debug!(%peer, "metrics endpoint at its connection limit; closing");
            drop(socket);
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |request| {
                let response = metrics_response(&request, &render);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(socket), service);
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics connection ended"),
                Err(_) => tracing::debug!(%peer, "metrics connection took too long; closed"),
            }
        });
    }
}

type MetricsBody = http_body_util::Full<bytes::Bytes>;

fn metrics_response<B>(
    request: &hyper::Request<B>,
    render: &impl Fn() -> String,
) -> hyper::Response<MetricsBody> {
    use hyper::{Method, StatusCode, header};
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = hyper::Response::new(MetricsBody::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => reply(StatusCode::OK, CONTENT_TYPE, render()),
        (&Method::GET | &Method::HEAD, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found; metrics are at /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format_node_exporter_reads() {
        let metrics = Metrics::new("prod \"east\"");
        // Nothing known yet: nothing exported, not zeros that look like a 1970 backup.
        assert_eq!(metrics.render(), "");
        metrics.count_backup("success");
        metrics.ran("backup", true, std::time::Duration::from_millis(1500));
        metrics.observe(
            "backup",
            &StoreFigures {
                backups_complete: 2,
                stored_bytes: 10,
                last_success: DateTime::from_timestamp(1_700_000_000, 250_000_000),
                last_stored_bytes: Some(4),
                last_drill_success: None,
            },
        );
        let text = metrics.render();
        let c = r#"cluster="prod \"east\"""#;
        for line in [
            "# TYPE etcd_offsite_backups_total counter".to_string(),
            format!("etcd_offsite_backups_total{{{c},result=\"success\"}} 1"),
            format!("etcd_offsite_backups_total{{{c},result=\"failure\"}} 0"),
            format!("etcd_offsite_last_run_duration_seconds{{{c},command=\"backup\"}} 1.5"),
            format!(
                "etcd_offsite_last_success_timestamp_seconds{{{c},command=\"backup\"}} 1700000000.25"
            ),
            format!("etcd_offsite_drill_recorded{{{c},command=\"backup\"}} 0"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("drills_total"), "{text}");
        assert!(!text.contains("last_drill_success_timestamp"), "{text}");
        assert!(!text.contains("# EOF"));
        // One HELP and one TYPE per family.
        let types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let unique: std::collections::BTreeSet<_> = types.iter().collect();
        assert_eq!(types.len(), unique.len(), "{text}");
    }

    #[test]
    fn textfile_never_writes_through_a_planted_link() {
        let dir = crate::scratch_dir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("etcd_offsite.prom");
        // The name the temporary file once had (`.NAME.PID.partial`), and a link at the
        // textfile's own name: neither is written through.
        let planted = dir
            .path()
            .join(format!(".etcd_offsite.prom.{}.partial", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let metrics = Metrics::new("test");
        metrics.count_backup("success");
        metrics.write_textfile(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("etcd_offsite_backups_total{cluster=\"test\",result=\"success\"} 1"),
            "{text}"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        metrics.write_textfile(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !std::fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        // Nothing else is left in the directory: the victim, the planted link, the file.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
