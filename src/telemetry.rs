//! Logs on stderr (text or JSON); stdout is reserved for command output. Metrics: one
//! registry, served by `run` on `/metrics` or written after any command as a textfile for
//! node_exporter's textfile collector.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Installs the global subscriber; `RUST_LOG` overrides the verbosity flags.
pub fn init(format: LogFormat, verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "etcd_offsite=info,warn",
        (false, 1) => "etcd_offsite=debug,info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabel {
    command: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The metrics of etcd-offsite, named `etcd_offsite_*`.
pub struct Metrics {
    registry: Registry,
    backups: Family<ResultLabel, Counter>,
    drills: Family<ResultLabel, Counter>,
    /// When the newest complete backup in the target finished.
    pub last_success: FloatGauge,
    /// When the newest successful drill in the target ran.
    pub last_drill_success: FloatGauge,
    pub last_duration: FloatGauge,
    pub last_stored_bytes: Gauge,
    backups_complete: Gauge,
    stored_bytes: Gauge,
    last_run: Family<CommandLabel, FloatGauge>,
    last_run_success: Family<CommandLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("etcd_offsite");
        let metrics = Self {
            backups: Family::default(),
            drills: Family::default(),
            last_success: FloatGauge::default(),
            last_drill_success: FloatGauge::default(),
            last_duration: FloatGauge::default(),
            last_stored_bytes: Gauge::default(),
            backups_complete: Gauge::default(),
            stored_bytes: Gauge::default(),
            last_run: Family::default(),
            last_run_success: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "backups",
            "Backups attempted, by result (success, failure, skipped)",
            metrics.backups.clone(),
        );
        registry.register(
            "drills",
            "Restore drills run, by result (success, failure)",
            metrics.drills.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time the newest complete backup in the target finished",
            metrics.last_success.clone(),
        );
        registry.register(
            "last_drill_success_timestamp_seconds",
            "Unix time of the newest successful restore drill in the target",
            metrics.last_drill_success.clone(),
        );
        registry.register(
            "last_duration_seconds",
            "Duration of the last backup attempt",
            metrics.last_duration.clone(),
        );
        registry.register(
            "last_stored_bytes",
            "Bytes stored by the newest complete backup",
            metrics.last_stored_bytes.clone(),
        );
        registry.register(
            "backups_complete",
            "Complete backups in the target",
            metrics.backups_complete.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes stored by all complete backups",
            metrics.stored_bytes.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "Unix time a command last ran, by command",
            metrics.last_run.clone(),
        );
        registry.register(
            "last_run_success",
            "1 when the command's last run succeeded (or was skipped by a guard), else 0",
            metrics.last_run_success.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a backup attempt: `success`, `failure` or `skipped`.
    pub fn count_backup(&self, result: &str) {
        self.backups
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Counts a drill: `success` or `failure`.
    pub fn count_drill(&self, result: &str) {
        self.drills
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Records that `command` ran now, and whether it succeeded.
    pub fn ran(&self, command: &str, success: bool) {
        let label = CommandLabel {
            command: command.to_string(),
        };
        self.last_run
            .get_or_create(&label)
            .set(Utc::now().timestamp() as f64);
        self.last_run_success
            .get_or_create(&label)
            .set(i64::from(success));
    }

    /// Sets the gauges that describe the target from what it holds, so a restarted `run`
    /// or a one-shot command reports the real age of the newest backup and drill.
    pub fn observe(&self, figures: &StoreFigures) {
        self.backups_complete
            .set(i64::try_from(figures.backups_complete).unwrap_or(i64::MAX));
        self.stored_bytes
            .set(i64::try_from(figures.stored_bytes).unwrap_or(i64::MAX));
        if let Some(at) = figures.last_success {
            self.last_success.set(seconds(at));
        }
        if let Some(bytes) = figures.last_stored_bytes {
            self.last_stored_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Some(at) = figures.last_drill_success {
            self.last_drill_success.set(seconds(at));
        }
    }

    /// Prometheus text (OpenMetrics) of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// Writes [`Metrics::render`] to `path` atomically (a temporary name in the same
    /// directory, then a rename), as node_exporter's textfile collector requires.
    pub fn write_textfile(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::io::Write;
        let name = path.file_name().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path")
        })?;
        let partial = path.with_file_name(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            std::process::id()
        ));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(self.render().as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&partial, path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
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
        (&Method::GET | &Method::HEAD, "/metrics") => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
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
