//! Latency-targeted pacing of a backup's reads from etcd, in the manner of LEDBAT
//! background transfers (RFC 6817): etcd's own latency is measured with a cheap
//! linearizable read every few hundred milliseconds on a connection of its own; when it
//! rises above the level measured before the backup began, the snapshot read backs off
//! at once (multiplicatively), and while it stays below, the rate recovers slowly
//! (additively, in proportion to the headroom). `read_rate_limit` stays a hard cap.
//!
//! A delay-based reader cannot tell whether etcd is slow because of its reads or because
//! of other load on the host. So, as LEDBAT++ does with its slowdowns, once etcd has stayed
//! above the target for a while the stream stops for half a second and the probe measures
//! etcd without it: when etcd is as slow without the backup, the latency is not the
//! backup's doing, the rate goes back to where it was and the target is raised to that
//! level (it sinks back once etcd is fast again); when etcd got fast, the backoff stands.
//!
//! The same probe is the stream's health check: the read goes through the quorum
//! (ReadIndex) and asks for a leader, so a member that loses its quorum or its leader
//! mid-stream fails its probes, and the stream is stopped instead of being committed.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions};
use serde::{Deserialize, Serialize};

use crate::config::Pace;

/// How often etcd's latency is measured.
const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// Probes before the backup starts; the lowest is the baseline.
const BASELINE_PROBES: usize = 6;
/// A probe slower than this counts as unanswered.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive refused probes (no leader, unavailable) after which the member counts as
/// cut off from its quorum. Unanswered ones count once `source.etcd.timeout` has passed
/// without an answer: a busy etcd is slow, not gone.
const LOST_AFTER_REFUSALS: u32 = 3;
/// The read rate a paced stream starts at (about `etcdctl snapshot save`'s on a 2-core
/// host, whose cost to etcd is the reference), and the lowest it goes to (bytes per second).
const START_RATE: f64 = 64.0 * MIB;
const MIN_RATE: f64 = 8.0 * MIB;
/// The highest rate the controller asks for without `read_rate_limit` (etcd serves a
/// snapshot at about 230 MB/s at most).
const MAX_RATE: f64 = 512.0 * MIB;
/// Multiplicative decrease when a probe is above the target.
const BACKOFF: f64 = 0.6;
/// Increase per probe at full headroom: this much at least (bytes per second), or this
/// share of the rate in force.
const RECOVERY: f64 = 4.0 * MIB;
const RECOVERY_SHARE: f64 = 0.25;
/// The controller steers by the lowest of the last few probes (LEDBAT's current-delay
/// filter): a lasting rise, not one delayed answer, makes it back off.
const FILTER_PROBES: usize = 3;
/// The latency allowed above the baseline: twice the baseline, at least this much (a
/// snapshot read at `etcdctl`'s rate raises etcd's latency about threefold).
const TARGET_HEADROOM_FLOOR_MS: f64 = 3.0;
/// Consecutive probes above the target after which the stream stops for a slowdown.
const SLOWDOWN_AFTER: u32 = 4;
/// How long a slowdown stops the stream (two probes).
const SLOWDOWN: Duration = Duration::from_millis(500);
/// Slowdowns start at most this often.
const SLOWDOWN_EVERY: Duration = Duration::from_secs(8);
/// When etcd is as slow without the backup, the target is raised to this many times the
/// latency seen during the slowdown.
const AMBIENT_HEADROOM: f64 = 1.5;
/// A raised target sinks by this share per probe while etcd answers within half of it.
const TARGET_DECAY: f64 = 0.9;
/// Largest burst the rate limiter lets through after a pause.
const BURST: Duration = Duration::from_millis(20);
/// Points kept in the recorded timeline; past that it is thinned to every other point.
const TIMELINE_POINTS: usize = 600;
/// The content scan pauses once it owes this much (timers do not sleep for less).
const SCAN_PAUSE: Duration = Duration::from_millis(5);
/// While its requests take longer than the target, the content scan pauses this many
/// times as long as they took.
const SCAN_BACKOFF: u32 = 4;
/// Key of the probe's count-only read (it need not exist).
const PROBE_KEY: &str = "/etcd-offsite/latency-probe";
const MIB: f64 = 1024.0 * 1024.0;

/// What pacing saw and did, recorded in the manifest's source facts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PacingFacts {
    /// `auto` or `off`.
    pub mode: String,
    /// `read_rate_limit`, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_cap: Option<u64>,
    /// etcd's latency before the backup (the lowest of the probes), milliseconds.
    pub baseline_ms: f64,
    /// The latency the read rate was steered to (`auto`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ms: Option<f64>,
    /// Slowdowns: pauses of the stream that measured etcd without the backup's reads.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slowdowns: u32,
    /// The highest the target was raised to, when a slowdown found etcd as slow without
    /// the backup (other load on the host), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_target_ms: Option<f64>,
    /// etcd's latency while the backup read from it.
    pub during: LatencySummary,
    /// Bytes read from etcd per second of streaming, on average.
    pub mean_rate: u64,
    /// The rate in force and etcd's latency over time, about one point a second.
    pub timeline: Vec<RatePoint>,
}

/// Percentiles of the probes' latencies, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySummary {
    pub probes: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One point of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RatePoint {
    /// Seconds since the stream started.
    pub at_s: f64,
    /// The read rate in force, bytes per second (None: unlimited).
    pub rate: Option<u64>,
    /// Bytes read so far.
    pub read: u64,
    /// The last probe's latency, milliseconds.
    pub latency_ms: f64,
}

/// The member's quorum was lost while the backup read from it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct QuorumLost(pub String);

/// Measures etcd's latency from before the backup to its end, and paces the reads.
pub struct Pacer {
    shared: Arc<Shared>,
    probe: Option<tokio::task::JoinHandle<()>>,
    /// Asks the probe task for one last probe, then to end.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The snapshot stream's side of a [`Pacer`]: the rate limiter.
pub struct ReadLimiter {
    shared: Arc<Shared>,
    /// When the next byte may be read (the rate limiter's clock).
    due: Option<Instant>,
}

struct Shared {
    mode: Pace,
    cap: Option<f64>,
    baseline_ms: f64,
    /// The target from the baseline; a slowdown can raise it for a while.
    target_ms: f64,
    /// How long etcd may leave every probe unanswered (`source.etcd.timeout`).
    patience: Duration,
    endpoint: String,
    state: Mutex<State>,
}

struct State {
    /// Bytes per second in force; infinite when nothing limits the read.
    rate: f64,
    streaming_since: Option<Instant>,
    read: u64,
    latencies: Vec<f32>,
    last_ms: f64,
    decreased_last: bool,
    /// Consecutive probes etcd refused.
    refusals: u32,
    /// When a probe was last answered.
    last_ok: Instant,
    lost: Option<String>,
    timeline: Vec<RatePoint>,
    timeline_step: f64,
    /// The target in force (raised above the baseline's while other load slows etcd).
    target_ms: f64,
    highest_target_ms: f64,
    /// Consecutive probes above the target, and the rate before the first of them.
    over: u32,
    rate_before_over: f64,
    slowdown: Option<Slowdown>,
    last_slowdown: Option<Instant>,
    slowdowns: u32,
}

/// A pause of the stream that measures etcd without the backup.
struct Slowdown {
    until: Instant,
    /// The lowest latency seen during it.
    lowest_ms: f64,
    /// The rate before etcd rose above the target.
    rate_before: f64,
}

impl Pacer {
    /// Measures the baseline on `client` (a connection of the pacer's own) and starts
    /// the probes. Fails when the member does not answer linearizable reads: it has no
    /// quorum, or no leader.
    pub async fn start(
        mut client: Client,
        endpoint: &str,
        mode: Pace,
        cap: Option<u64>,
        patience: Duration,
    ) -> Result<Self, QuorumLost> {
        let mut baseline = Vec::with_capacity(BASELINE_PROBES);
        for i in 0..BASELINE_PROBES {
            if i > 0 {
                tokio::time::sleep(PROBE_INTERVAL / 6).await;
            }
            let started = Instant::now();
            let ms = loop {
                match probe(&mut client).await {
                    Ok(ms) => break ms,
                    Err(ProbeFailure::Unanswered) if started.elapsed() < patience => {}
                    Err(e) => {
                        return Err(QuorumLost(format!(
                            "etcd {endpoint} does not answer a linearizable read ({e}): it has no leader or no quorum, or is overloaded"
                        )));
                    }
                }
            };
            baseline.push(ms as f32);
        }
        // LEDBAT's base delay: the lowest seen, what etcd answers in when nothing queues.
        let baseline_ms = f64::from(percentile(&mut baseline, 0.0));
        let target_ms = baseline_ms + (2.0 * baseline_ms).max(TARGET_HEADROOM_FLOOR_MS);
        let cap = cap.map(|c| c as f64);
        let rate = match mode {
            Pace::Auto => cap.map_or(START_RATE, |c| c.min(START_RATE)),
            Pace::Off => cap.unwrap_or(f64::INFINITY),
        };
        tracing::info!(
            %endpoint,
            pace = ?mode,
            baseline_ms = format!("{baseline_ms:.2}"),
            target_ms = format!("{target_ms:.2}"),
            "etcd latency before the backup"
        );
        let shared = Arc::new(Shared {
            mode,
            cap,
            baseline_ms,
            target_ms,
            patience,
            endpoint: endpoint.to_string(),
            state: Mutex::new(State::new(rate, baseline_ms, target_ms)),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let probe = tokio::spawn(probe_loop(client, Arc::clone(&shared), stopped));
        Ok(Self {
            shared,
            probe: Some(probe),
            stop: Some(stop),
        })
    }

    /// The rate limiter for the snapshot stream.
    pub fn limiter(&self) -> ReadLimiter {
        ReadLimiter {
            shared: Arc::clone(&self.shared),
            due: None,
        }
    }

    /// Stops the probes after one last one, and returns what pacing saw; fails when the
    /// member lost its quorum at any time, the last probe included.
    pub async fn finish(mut self) -> Result<PacingFacts, QuorumLost> {
        if let (Some(stop), Some(probe)) = (self.stop.take(), self.probe.take()) {
            let _ = stop.send(());
            if probe.await.is_err() {
                return Err(QuorumLost("the latency probe of etcd panicked".into()));
            }
        }
        let shared = &self.shared;
        let mut state = shared.state();
        if let Some(lost) = &state.lost {
            return Err(QuorumLost(lost.clone()));
        }
        let streamed = state
            .streaming_since
            .map_or(0.0, |since| since.elapsed().as_secs_f64());
        let mean_rate = if streamed > 0.0 {
            (state.read as f64 / streamed) as u64
        } else {
            0
        };
        let probes = state.latencies.len() as u64;
        let during = LatencySummary {
            probes,
            p50_ms: f64::from(percentile(&mut state.latencies, 0.5)),
            p99_ms: f64::from(percentile(&mut state.latencies, 0.99)),
            max_ms: f64::from(percentile(&mut state.latencies, 1.0)),
        };
        tracing::info!(
            endpoint = %shared.endpoint,
            baseline_ms = format!("{:.2}", shared.baseline_ms),
            p50_ms = format!("{:.2}", during.p50_ms),
            p99_ms = format!("{:.2}", during.p99_ms),
            max_ms = format!("{:.2}", during.max_ms),
            mean_rate_mib_s = format!("{:.1}", mean_rate as f64 / MIB),
            "etcd latency during the backup"
        );
        Ok(PacingFacts {
            mode: match shared.mode {
                Pace::Auto => "auto".into(),
                Pace::Off => "off".into(),
            },
            rate_cap: shared.cap.map(|c| c as u64),
            baseline_ms: round2(shared.baseline_ms),
            target_ms: (shared.mode == Pace::Auto).then(|| round2(shared.target_ms)),
            slowdowns: state.slowdowns,
            raised_target_ms: (state.highest_target_ms > shared.target_ms)
                .then(|| round2(state.highest_target_ms)),
            during: LatencySummary {
                p50_ms: round2(during.p50_ms),
                p99_ms: round2(during.p99_ms),
                max_ms: round2(during.max_ms),
                ..during
            },
            mean_rate,
            timeline: std::mem::take(&mut state.timeline),
        })
    }
}

/// Paces the small requests of the content scan, which runs after the stream, by their
/// own latency: no pause while etcd answers them within the target the stream was steered
/// to; above it, a pause [`SCAN_BACKOFF`] times as long as the request took, so that the
/// scan takes at most a fifth of etcd's time while etcd is slow.
#[derive(Debug)]
pub struct RequestPacer {
    target: Duration,
    owed: Duration,
}

impl RequestPacer {
    /// The pacer for `pace: auto` (None for `off`: the scan runs unpaused).
    pub fn after_stream(facts: &PacingFacts) -> Option<Self> {
        facts.target_ms.map(|ms| Self {
            target: Duration::from_secs_f64(ms / 1000.0),
            owed: Duration::ZERO,
        })
    }

    /// Pauses as needed after a request that took `elapsed`.
    pub async fn after_request(&mut self, elapsed: Duration) {
        if let Some(pause) = self.owe(elapsed) {
            tokio::time::sleep(pause).await;
        }
    }

    /// The pause due after a request that took `elapsed`, once enough is owed.
    fn owe(&mut self, elapsed: Duration) -> Option<Duration> {
        if elapsed > self.target {
            self.owed += elapsed * SCAN_BACKOFF;
        }
        (self.owed >= SCAN_PAUSE).then(|| std::mem::take(&mut self.owed))
    }
}

impl ReadLimiter {
    /// Waits as long as the rate in force asks after `bytes` were read, and fails once the
    /// member has lost its quorum.
    pub async fn after_read(&mut self, bytes: usize) -> Result<(), QuorumLost> {
        let now = Instant::now();
        let (rate, paused_until) = {
            let mut state = self.shared.state();
            if let Some(lost) = &state.lost {
                return Err(QuorumLost(lost.clone()));
            }
            state.streaming_since.get_or_insert(now);
            state.read += bytes as u64;
            (state.rate, state.slowdown.as_ref().map(|s| s.until))
        };
        if let Some(until) = paused_until.filter(|until| *until > now) {
            // A slowdown: nothing is read until it ends, and nothing is caught up after.
            tokio::time::sleep_until(until.into()).await;
            self.due = None;
            return Ok(());
        }
        if !rate.is_finite() {
            return Ok(());
        }
        // A virtual clock: each byte takes 1/rate seconds; a pause (a slow pipeline) earns
        // at most BURST of catching up.
        let due = self.due.map_or(now, |due| due.max(now - BURST));
        let due = due + Duration::from_secs_f64(bytes as f64 / rate);
        self.due = Some(due);
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        Ok(())
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        if let Some(probe) = &self.probe {
            probe.abort();
        }
    }
}

impl State {
    fn new(rate: f64, baseline_ms: f64, target_ms: f64) -> Self {
        Self {
            rate,
            streaming_since: None,
            read: 0,
            latencies: Vec::new(),
            last_ms: baseline_ms,
            decreased_last: false,
            refusals: 0,
            last_ok: Instant::now(),
            lost: None,
            timeline: Vec::new(),
            timeline_step: 1.0,
            target_ms,
            highest_target_ms: target_ms,
            over: 0,
            rate_before_over: rate,
            slowdown: None,
            last_slowdown: None,
            slowdowns: 0,
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lowest rate the controller goes to: [`MIN_RATE`], or a lower `read_rate_limit`
    /// (a hard cap, never exceeded).
    fn floor(&self) -> f64 {
        self.cap.map_or(MIN_RATE, |cap| cap.min(MIN_RATE))
    }
}

/// Why a probe got no latency.
enum ProbeFailure {
    /// etcd answered with an error (`etcdserver: no leader`, unavailable).
    Refused(String),
    /// No answer within [`PROBE_TIMEOUT`].
    Unanswered,
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeFailure::Refused(e) => f.write_str(e),
            ProbeFailure::Unanswered => write!(f, "no answer within {PROBE_TIMEOUT:?}"),
        }
    }
}

/// One linearizable count-only read; its latency in milliseconds.
async fn probe(client: &mut Client) -> Result<f64, ProbeFailure> {
    let start = Instant::now();
    let get = client.get(PROBE_KEY, Some(GetOptions::new().with_count_only()));
    match tokio::time::timeout(PROBE_TIMEOUT, get).await {
        Ok(Ok(_)) => Ok(start.elapsed().as_secs_f64() * 1000.0),
        Ok(Err(e)) => Err(ProbeFailure::Refused(e.to_string())),
        Err(_) => Err(ProbeFailure::Unanswered),
    }
}

/// Probes every [`PROBE_INTERVAL`] until `stop`, then once more, and steers the rate.
async fn probe_loop(
    mut client: Client,
    shared: Arc<Shared>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            _ = &mut stop => true,
        };
        let mut measured = probe(&mut client).await;
        if last {
            // The end of the stream: a slow answer is waited for, up to the patience.
            while matches!(measured, Err(ProbeFailure::Unanswered))
                && shared.state().last_ok.elapsed() < shared.patience
            {
                measured = probe(&mut client).await;
            }
        }
        let mut state = shared.state();
        match measured {
            Ok(ms) => {
                state.refusals = 0;
                state.last_ok = Instant::now();
                state.last_ms = ms;
                state.latencies.push(ms as f32);
                if shared.mode == Pace::Auto && state.streaming_since.is_some() && !last {
                    let filtered = state
                        .latencies
                        .iter()
                        .rev()
                        .take(FILTER_PROBES)
                        .fold(f32::INFINITY, |low, x| low.min(*x));
                    steer(&shared, &mut state, ms, f64::from(filtered), Instant::now());
                }
            }
            Err(e) => {
                if let ProbeFailure::Refused(_) = e {
                    state.refusals += 1;
                }
                state.last_ms = PROBE_TIMEOUT.as_secs_f64() * 1000.0;
                tracing::warn!(endpoint = %shared.endpoint, error = %e, "etcd latency probe failed");
                let silent = state.last_ok.elapsed();
                let lost = match &e {
                    ProbeFailure::Refused(_) => last || state.refusals >= LOST_AFTER_REFUSALS,
                    ProbeFailure::Unanswered => silent >= shared.patience,
                };
                if lost {
                    state.lost = Some(format!(
                        "etcd {} {} during the backup ({e}; no linearizable read answered for {:.1} s): it lost its leader or its quorum, or is overloaded, and a snapshot from it must not be committed",
                        shared.endpoint,
                        if last {
                            "failed the check at the end of the snapshot"
                        } else {
                            "stopped answering linearizable reads"
                        },
                        silent.as_secs_f64()
                    ));
                    return;
                }
                if shared.mode == Pace::Auto {
                    state.rate = (state.rate * BACKOFF).max(shared.floor());
                }
            }
        }
        record_point(&mut state);
        if last {
            return;
        }
    }
}

/// One step of the controller, after a probe that took `ms` (`filtered`: the lowest of the
/// last few). A slowdown under way collects what etcd answers in without the stream, and
/// at its end decides whose the latency was. Otherwise: back off at once above the target
/// (not twice in a row, so that a decrease can show), and after [`SLOWDOWN_AFTER`] probes
/// above it stop for a slowdown; below it recover in proportion to the headroom, and let
/// a raised target sink while etcd answers well within it.
fn steer(shared: &Shared, state: &mut State, ms: f64, filtered: f64, now: Instant) {
    if let Some(slowdown) = &mut state.slowdown {
        slowdown.lowest_ms = slowdown.lowest_ms.min(ms);
        if now < slowdown.until {
            return;
        }
        let Some(slowdown) = state.slowdown.take() else {
            return;
        };
        state.over = 0;
        state.decreased_last = false;
        if slowdown.lowest_ms > state.target_ms {
            // As slow without the backup: other load, not the backup's reads.
            state.target_ms = slowdown.lowest_ms * AMBIENT_HEADROOM;
            state.highest_target_ms = state.highest_target_ms.max(state.target_ms);
            state.rate = slowdown.rate_before;
            tracing::debug!(
                latency_ms = slowdown.lowest_ms,
                target_ms = state.target_ms,
                rate_mib_s = state.rate / MIB,
                "pacing: etcd is as slow without the backup; target raised"
            );
        } else {
            tracing::debug!(
                latency_ms = slowdown.lowest_ms,
                rate_mib_s = state.rate / MIB,
                "pacing: etcd is fast without the backup; backoff stands"
            );
        }
        return;
    }
    let ceiling = shared.cap.unwrap_or(MAX_RATE);
    let target = state.target_ms;
    let off_target = (target - filtered) / target;
    if off_target < 0.0 {
        if state.over == 0 {
            state.rate_before_over = state.rate;
        }
        state.over += 1;
        let spaced = state
            .last_slowdown
            .is_none_or(|at| now.duration_since(at) >= SLOWDOWN_EVERY);
        if state.over >= SLOWDOWN_AFTER && spaced {
            state.slowdown = Some(Slowdown {
                until: now + SLOWDOWN,
                lowest_ms: f64::INFINITY,
                rate_before: state.rate_before_over,
            });
            state.last_slowdown = Some(now);
            state.slowdowns += 1;
            return;
        }
        if !state.decreased_last {
            state.rate = (state.rate * BACKOFF).max(shared.floor());
            state.decreased_last = true;
            tracing::debug!(
                latency_ms = filtered,
                rate_mib_s = state.rate / MIB,
                "pacing: backing off"
            );
        } else {
            state.decreased_last = false;
        }
    } else {
        state.over = 0;
        state.decreased_last = false;
        let step = RECOVERY.max(state.rate * RECOVERY_SHARE);
        state.rate = (state.rate + step * off_target).min(ceiling);
        if filtered < target / 2.0 {
            state.target_ms = (target * TARGET_DECAY).max(shared.target_ms);
        }
    }
}

/// About one timeline point a second of streaming, thinned when it grows long.
fn record_point(state: &mut State) {
    let Some(since) = state.streaming_since else {
        return;
    };
    let at_s = since.elapsed().as_secs_f64();
    let next = state
        .timeline
        .last()
        .map_or(0.0, |p| p.at_s + state.timeline_step);
    if at_s < next {
        return;
    }
    if state.timeline.len() >= TIMELINE_POINTS {
        let kept: Vec<RatePoint> = state.timeline.iter().step_by(2).cloned().collect();
        state.timeline = kept;
        state.timeline_step *= 2.0;
    }
    let point = RatePoint {
        at_s: round2(at_s),
        rate: state.rate.is_finite().then_some(state.rate as u64),
        read: state.read,
        latency_ms: round2(state.last_ms),
    };
    tracing::debug!(at_s = point.at_s, rate = ?point.rate, read = point.read, latency_ms = point.latency_ms, "pacing");
    state.timeline.push(point);
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The `p` quantile (0..=1) of `values` (nearest rank; 0 for none).
fn percentile(values: &mut [f32], p: f64) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f32::total_cmp);
    let rank = ((values.len() as f64 * p).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(cap: Option<f64>) -> Shared {
        Shared {
            mode: Pace::Auto,
            cap,
            baseline_ms: 1.0,
            target_ms: 2.0,
            patience: Duration::from_secs(5),
            endpoint: "e".into(),
            state: Mutex::new(streaming_state()),
        }
    }

    fn streaming_state() -> State {
        State {
            streaming_since: Some(Instant::now()),
            ..State::new(START_RATE, 1.0, 2.0)
        }
    }

    #[test]
    fn backs_off_fast_and_recovers_slowly() {
        let shared = shared(Some(96.0 * MIB));
        let mut state = streaming_state();
        let now = Instant::now();
        // No slowdown in this test: one was just taken.
        state.last_slowdown = Some(now);
        let step = |state: &mut State, ms: f64| steer(&shared, state, ms, ms, now);
        step(&mut state, 5.0);
        assert_eq!(state.rate, START_RATE * BACKOFF);
        // The next probe above target waits for the decrease to show.
        step(&mut state, 5.0);
        assert_eq!(state.rate, START_RATE * BACKOFF);
        step(&mut state, 5.0);
        assert_eq!(state.rate, START_RATE * BACKOFF * BACKOFF);
        // At the target there is no headroom: no change; at half of it, half a step.
        let before = state.rate;
        step(&mut state, 2.0);
        assert_eq!(state.rate, before);
        step(&mut state, 1.0);
        assert!((state.rate - before * (1.0 + RECOVERY_SHARE * 0.5)).abs() < 1.0);
        // Low rates recover by a fixed step at least.
        state.rate = 8.0 * MIB;
        step(&mut state, 1.0);
        assert_eq!(state.rate, 8.0 * MIB + RECOVERY * 0.5);
        // Never below the floor, never above the cap.
        for _ in 0..50 {
            step(&mut state, 100.0);
        }
        assert_eq!(state.rate, MIN_RATE);
        assert!(state.slowdown.is_none());
        for _ in 0..1000 {
            step(&mut state, 0.0);
        }
        assert_eq!(state.rate, 96.0 * MIB);
        assert_eq!(state.target_ms, 2.0, "the target stays the baseline's");
    }

    #[test]
    fn a_cap_below_the_floor_is_never_exceeded() {
        let shared = shared(Some(1.0 * MIB));
        let mut state = state_with(1.0 * MIB);
        let now = Instant::now();
        state.last_slowdown = Some(now);
        for ms in [9.0, 9.0, 9.0, 0.0, 0.0, 9.0, 9.0, 0.0] {
            steer(&shared, &mut state, ms, ms, now);
            assert!(state.rate <= 1.0 * MIB, "{}", state.rate);
        }
        assert_eq!(state.rate, 1.0 * MIB);
    }

    #[test]
    fn a_slowdown_tells_other_load_from_the_backups_own() {
        let shared = shared(None);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Four probes above the target: three backoffs' worth, then a slowdown.
        let mut state = streaming_state();
        for i in 0..SLOWDOWN_AFTER {
            steer(&shared, &mut state, 9.0, 9.0, at(250 * u64::from(i)));
        }
        let until = state.slowdown.as_ref().map(|s| s.until);
        assert_eq!(until, Some(at(750) + SLOWDOWN), "the stream stops");
        assert_eq!(state.slowdowns, 1);
        let backed_off = state.rate;
        assert!(backed_off < START_RATE);
        // Without the backup etcd is as slow: other load. The rate goes back to where it
        // was before etcd rose, and the target to what etcd answers in now.
        steer(&shared, &mut state, 8.0, 8.0, at(1000));
        steer(&shared, &mut state, 7.0, 7.0, at(1250));
        assert!(state.slowdown.is_none());
        assert_eq!(state.rate, START_RATE);
        assert_eq!(state.target_ms, 7.0 * AMBIENT_HEADROOM);
        // Within it, the rate recovers; once etcd is well within it, the target sinks
        // back, never below the baseline's.
        steer(&shared, &mut state, 9.0, 9.0, at(1500));
        assert!(state.rate > START_RATE);
        for i in 0..100 {
            steer(&shared, &mut state, 1.0, 1.0, at(1750 + 250 * i));
        }
        assert_eq!(state.target_ms, 2.0);
        assert_eq!(state.highest_target_ms, 10.5);
        // No second slowdown within SLOWDOWN_EVERY of the first.
        let mut state = State {
            last_slowdown: Some(t0),
            ..state_with(START_RATE)
        };
        for i in 0..10 {
            steer(&shared, &mut state, 9.0, 9.0, at(250 * i));
        }
        assert!(state.slowdown.is_none());

        // etcd is fast without the backup: the latency was the backup's; the backoff stands.
        let mut state = streaming_state();
        for i in 0..SLOWDOWN_AFTER {
            steer(&shared, &mut state, 9.0, 9.0, at(250 * u64::from(i)));
        }
        let backed_off = state.rate;
        steer(&shared, &mut state, 3.0, 3.0, at(1000));
        steer(&shared, &mut state, 1.5, 3.0, at(1250));
        assert!(state.slowdown.is_none());
        assert_eq!(state.rate, backed_off);
        assert_eq!(state.target_ms, 2.0);
        assert_eq!(state.slowdowns, 1);
    }

    fn state_with(rate: f64) -> State {
        State {
            rate,
            ..streaming_state()
        }
    }

    #[test]
    fn the_scan_pauses_only_while_etcd_is_slower_than_the_target() {
        let facts = |target_ms| PacingFacts {
            mode: "auto".into(),
            rate_cap: None,
            baseline_ms: 1.0,
            target_ms,
            during: LatencySummary::default(),
            slowdowns: 0,
            raised_target_ms: None,
            mean_rate: 0,
            timeline: Vec::new(),
        };
        assert!(RequestPacer::after_stream(&facts(None)).is_none());
        let mut pacer = RequestPacer::after_stream(&facts(Some(3.0))).unwrap();
        let ms = Duration::from_millis;
        for _ in 0..100 {
            assert_eq!(
                pacer.owe(ms(3)),
                None,
                "answers within the target: no pause"
            );
        }
        // Slower: four times as long, owed until there is enough to sleep.
        assert_eq!(pacer.owe(ms(1)), None);
        assert_eq!(pacer.owe(ms(4)), Some(ms(16)));
        assert_eq!(
            pacer.owe(Duration::from_micros(3100)),
            Some(Duration::from_micros(12_400))
        );
        assert_eq!(pacer.owe(ms(1)), None);
    }

    #[test]
    fn percentiles_and_timeline_bounds() {
        let mut v: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        assert_eq!(percentile(&mut v, 0.5), 50.0);
        assert_eq!(percentile(&mut v, 0.99), 99.0);
        assert_eq!(percentile(&mut v, 1.0), 100.0);
        assert_eq!(percentile(&mut [], 0.99), 0.0);
        let mut state = streaming_state();
        state.streaming_since = Some(Instant::now() - Duration::from_secs(10_000));
        state.timeline = (0..TIMELINE_POINTS)
            .map(|i| RatePoint {
                at_s: i as f64,
                rate: None,
                read: 0,
                latency_ms: 0.0,
            })
            .collect();
        record_point(&mut state);
        assert_eq!(state.timeline.len(), TIMELINE_POINTS / 2 + 1);
        assert_eq!(state.timeline_step, 2.0);
        assert_eq!(state.timeline[1].at_s, 2.0);
    }
}
