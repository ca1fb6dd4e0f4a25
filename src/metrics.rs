// SPDX-License-Identifier: GPL-2.0-only
//! The Prometheus / OpenMetrics endpoint (`--metrics-addr ADDR`).
//!
//! A scrape of `GET /metrics` asks the scheduler thread for the same
//! cumulative [`Snapshot`] a stats client gets, and encodes it with
//! `prometheus-client`: counters are totals since the scheduler (re)started
//! (Prometheus takes rates itself and sees a restart as a counter reset),
//! gauges are values now. The body is the Prometheus text format 0.0.4, or
//! OpenMetrics when the scraper asks for it in `Accept`.
//!
//! What is exported, all prefixed `scx_agentcg_`:
//! - the scheduler's event counters (`dispatches_total{kind}` and one
//!   `<event>_total` per counter of the stats) and the tracked cgroup and
//!   BPF map sizes;
//! - per cell (`cell`): CPUs owned, CPU seconds used, borrowed and lent;
//! - per session (`session`, `profile`, `class`): active, CPU seconds,
//!   active/idle seconds and transitions, and with --mem-arbitration its
//!   state, memory.low/min and holds;
//! - per step (`step`, `profile`): CPUs and boosted wake-ups;
//! - per cgroup with a cpu.max (`cgroup`): quota, usage, throttling;
//! - per cgroup that met memory pressure (`cgroup`): thrash score, penalty,
//!   stall time; --mem-arbitration and --mem-escalation counters.
//!
//! The listener is bound once, before the first scheduler instance, so a
//! restart of the scheduler keeps the address; while no instance answers
//! (between restarts) a scrape gets 503.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Result};
use crossbeam::channel::{bounded, Receiver, Sender};
use log::{info, warn};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::stats::{metrics_between, Snapshot};

/// A scrape's request to the scheduler thread: where to send the snapshot.
pub type Request = Sender<Snapshot>;

/// How long a scrape waits for the scheduler thread.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

/// The profile and class of each session, by session path.
pub type SessionProfiles = std::collections::BTreeMap<String, (String, String)>;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Parse `--metrics-addr`: HOST:PORT, e.g. 127.0.0.1:9464 or [::1]:9464.
pub fn parse_addr(s: &str) -> std::result::Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|e| {
        format!(
            "{s:?} is not an address to listen on ({e}): give IP:PORT, e.g. 127.0.0.1:9464 \
             (loopback) or 0.0.0.0:9464 (every interface)"
        )
    })
}

struct Builder {
    reg: Registry,
}

impl Builder {
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c: Counter = Counter::default();
        c.inc_by(v);
        self.reg.register(name, help, c);
    }

    fn gauge(&mut self, name: &str, help: &str, v: i64) {
        let g: Gauge = Gauge::default();
        g.set(v);
        self.reg.register(name, help, g);
    }

    fn gauge_f(&mut self, name: &str, help: &str, v: f64) {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(v);
        self.reg.register(name, help, g);
    }

    fn gauge_family_f(&mut self, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
        let f = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (l, v) in rows {
            f.get_or_create(&l).set(v);
        }
        self.reg.register(name, help, f);
    }

    fn seconds_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let f = Family::<Labels, Counter<f64, AtomicU64>>::default();
        for (l, ns) in rows {
            f.get_or_create(&l).inc_by(ns as f64 / 1e9);
        }
        self.reg.register_with_unit(name, help, Unit::Seconds, f);
    }

    fn counter_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
        let f = Family::<Labels, Counter>::default();
        for (l, v) in rows {
            f.get_or_create(&l).inc_by(v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge_family(&mut self, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
        let f = Family::<Labels, Gauge>::default();
        for (l, v) in rows {
            f.get_or_create(&l).set(v);
        }
        self.reg.register(name, help, f);
    }
}

/// The registry of one scrape, from the scheduler's snapshot @snap and
/// the sessions' profiles.
pub fn registry(snap: &Snapshot, profiles: &SessionProfiles) -> Registry {
    // a client's first read: every counter as its total since start
    let m = metrics_between(&Snapshot::default(), snap);
    let mut b = Builder { reg: Registry::with_prefix("scx_agentcg") };

    let kinds = [
        ("tree", m.dsp_tree),
        ("sticky", m.dsp_sticky),
        ("prev", m.dsp_prev),
        ("idle_local", m.dsp_idle_local),
        ("kthread", m.dsp_kthread),
        ("last", m.dsp_last),
        ("pinned", m.dsp_pinned),
        ("fallback", m.dsp_fallback),
    ];
    b.counter_family(
        "dispatches",
        "Dispatches by kind (tree: from a cgroup queue, sticky: the CPU's current cgroup, prev: a task kept its CPU, \
         idle_local: an idle CPU found at wake-up, kthread, last: a CPU's only task, pinned, fallback)",
        kinds.iter().map(|(k, v)| (labels(&[("kind", k)]), *v)).collect(),
    );
    for (name, help, v) in [
        ("cpu_local_dispatches", "Dispatches from a cgroup queue of a task that last ran on that CPU", m.dsp_cpu_local),
        ("activations", "Cgroup activations (became runnable)", m.activations),
        ("hweight_updates", "Hierarchical weight recomputations", m.hweight_updates),
        ("requeues", "Tree picks requeued because the cgroup's key had moved", m.requeues),
        ("pick_empty", "Tree picks of cgroups whose queue was already empty", m.pick_empty),
        ("pick_giveups", "Dispatches that ran out of tree retries", m.pick_giveups),
        ("rescues", "Cgroups with queued tasks put back in the tree by the safety net", m.rescues),
        ("wake_preempts", "Wake-ups that preempted a CPU serving a later cgroup", m.wake_preempts),
        ("bw_throttles", "cpu.max: times a cgroup ran out of quota", m.bw_throttles),
        ("borrows", "Cells: dispatches of another cell's cgroup (borrowing)", m.borrows),
        ("lent_reclaims", "Cells: lent CPUs taken back by their own cell's wake-ups", m.reclaims),
        ("boosts", "Policy: boosted wake-ups of interactive steps", m.boosts),
        ("boosts_no_credit", "Policy: boostable wake-ups refused for lack of burst credit", m.boosts_no_credit),
        ("cell_applies", "Cells: layouts applied", m.cell_applies),
        ("rebalances", "Cells: demand rebalances", m.rebalances),
        ("thrash_penalties", "Thrash penalties engaged", m.thrash_penalties),
        ("thrash_capped", "Tasks of penalised cgroups queued on their capped CPUs", m.thrash_capped),
        ("yield_pinned", "Tasks of yielding profiles queued on the yield CPUs", m.yield_pinned),
        ("thrash_global_reclaims", "Global direct reclaims seen by the reclaim tracepoint hooks", m.thrash_global_reclaims),
    ] {
        b.counter(name, help, v);
    }
    for (name, help, v) in [
        ("cpus", "Possible CPUs", m.nr_cpus),
        ("cgroups", "Cgroups the scheduler tracks", m.nr_cgroups),
        ("active_cgroups", "Cgroups active (own or descendant tasks runnable)", m.nr_active_cgroups),
        ("runnable_cgroups", "Cgroups with runnable tasks of their own", m.nr_runnable_cgroups),
        ("map_cgroup_nodes", "BPF map entries: per-cgroup tree nodes", m.map_cgroup_nodes),
        ("map_cgroup_cfgs", "BPF map entries: cgroups configured by the cells layout", m.map_cgroup_cfgs),
        ("map_bw_timers", "BPF map entries: cpu.max refill timers", m.map_bw_timers),
    ] {
        b.gauge(name, help, v as i64);
    }
    b.gauge_f(
        "cell_apply_latency_seconds",
        "Cells: first tree change to its layout applied, last apply",
        m.cell_apply_latency_us as f64 / 1e6,
    );

    // cells
    b.gauge_family(
        "cell_cpus",
        "CPUs a cell owns (cell: the session name, system for cell 0)",
        m.cells.iter().map(|(n, c)| (labels(&[("cell", n)]), c.cpus as i64)).collect(),
    );
    let cell_rows = |f: fn(&crate::stats::CellSample) -> u64| -> Vec<(Labels, u64)> {
        snap.cells.iter().map(|(n, c)| (labels(&[("cell", n)]), f(c))).collect()
    };
    b.seconds_family("cell_cpu", "CPU time of the cell's tasks", cell_rows(|c| c.used_ns));
    b.seconds_family("cell_borrowed", "CPU time of the cell's tasks on other cells' CPUs", cell_rows(|c| c.borrowed_ns));
    b.seconds_family("cell_lent", "CPU time of other cells' tasks on the cell's CPUs", cell_rows(|c| c.lent_ns));

    // sessions
    let none = (String::from("none"), String::from("none"));
    let sess_labels = |path: &str| -> Labels {
        let (p, c) = profiles.get(path).unwrap_or(&none);
        labels(&[("session", path), ("profile", p), ("class", c)])
    };
    let mut active = Vec::new();
    let (mut up, mut down, mut holds) = (Vec::new(), Vec::new(), Vec::new());
    let (mut act_s, mut idle_s, mut cpu_s) = (Vec::new(), Vec::new(), Vec::new());
    let (mut low, mut min) = (Vec::new(), Vec::new());
    let mut state = Vec::new();
    for (path, s) in &m.sessions {
        let l = sess_labels(path);
        active.push((l.clone(), s.active as i64));
        up.push((l.clone(), s.idle_to_active));
        down.push((l.clone(), s.active_to_idle));
        act_s.push((l.clone(), s.active_ms * 1_000_000));
        idle_s.push((l.clone(), s.idle_ms * 1_000_000));
        cpu_s.push((l.clone(), snap.cgroups.get(path).map_or(0, |c| c.usage_ns)));
        if !s.mem_state.is_empty() {
            let mut ls = l.clone();
            ls.push(("state".into(), s.mem_state.clone()));
            state.push((ls, 1));
            low.push((l.clone(), (s.mem_low_mb << 20) as i64));
            min.push((l.clone(), (s.mem_min_mb << 20) as i64));
            holds.push((l, s.mem_holds));
        }
    }
    b.gauge_family("session_active", "A task of the session is runnable (1) or not (0)", active);
    b.seconds_family("session_cpu", "CPU time of the session's tasks", cpu_s);
    b.seconds_family("session_active_time", "Time the session was active", act_s);
    b.seconds_family("session_idle_time", "Time the session was idle, after its first activity", idle_s);
    b.counter_family("session_idle_to_active", "Idle to active transitions (gaps under 50 ms do not count)", up);
    b.counter_family("session_active_to_idle", "Active to idle transitions", down);
    b.gauge_family(
        "session_mem_state",
        "--mem-arbitration: the session's state (running, held, frozen, killing) as a label, value 1",
        state,
    );
    b.gauge_family("session_memory_low_bytes", "--mem-arbitration: memory.low given to the session", low);
    b.gauge_family("session_memory_min_bytes", "--mem-arbitration: memory.min given to the session", min);
    b.counter_family("session_mem_holds", "--mem-arbitration: times the session was held back", holds);

    // --observe: the tracepoints' and cgroup files' view of each session
    let mode = if snap.mode.is_empty() { "schedule" } else { snap.mode.as_str() };
    b.gauge_family(
        "mode",
        "What this process does: schedule (the scheduler is attached) or observe (--observe) as a label, value 1",
        vec![(labels(&[("mode", mode)]), 1)],
    );
    if !snap.observed.is_empty() {
        let rows = |f: &dyn Fn(&crate::stats::ObservedSample) -> u64| -> Vec<(Labels, u64)> {
            snap.observed.iter().map(|(p, o)| (sess_labels(p), f(o))).collect()
        };
        let rows_f = |f: &dyn Fn(&crate::stats::ObservedSample) -> f64| -> Vec<(Labels, f64)> {
            snap.observed.iter().map(|(p, o)| (sess_labels(p), f(o))).collect()
        };
        b.counter_family("session_wakeups", "--observe: wake-ups of the session's tasks", rows(&|o| o.wakeups));
        b.seconds_family("session_wake_latency_sum", "--observe: wake-to-run time, summed over the measured wake-ups", rows(&|o| o.wake_lat_ns));
        b.counter_family("session_wake_latency_count", "--observe: wake-ups whose wake-to-run time was measured", rows(&|o| o.wake_lat_n));
        b.gauge_family_f("session_wake_latency_max_seconds", "--observe: largest wake-to-run time", rows_f(&|o| o.wake_lat_max_ns as f64 / 1e9));
        b.gauge_family("session_memory_current_bytes", "--observe: memory.current", rows(&|o| o.mem_current).into_iter().map(|(l, v)| (l, v as i64)).collect());
        let mut ev = Vec::new();
        for (p, o) in &snap.observed {
            for (k, v) in &o.mem_events {
                let mut l = sess_labels(p);
                l.push(("event".into(), k.clone()));
                ev.push((l, *v));
            }
        }
        b.counter_family("session_memory_events", "--observe: memory.events counters (event label)", ev);
        b.gauge_family_f("session_memory_pressure_some_avg10_ratio", "--observe: memory.pressure some avg10", rows_f(&|o| o.mem_some_avg10 / 100.0));
        b.seconds_family("session_memory_pressure_some", "--observe: memory.pressure some total", rows(&|o| o.mem_some_total_us * 1000));
        b.gauge_family_f("session_cpu_pressure_some_avg10_ratio", "--observe: cpu.pressure some avg10", rows_f(&|o| o.cpu_some_avg10 / 100.0));
    }

    // steps
    let step_labels = |n: &str, p: &str| labels(&[("step", n), ("profile", p)]);
    b.gauge_family(
        "step_cpus",
        "CPUs in the step's mask",
        m.steps.iter().map(|(n, s)| (step_labels(n, &s.profile), s.cpus as i64)).collect(),
    );
    b.counter_family(
        "step_boosts",
        "Boosted wake-ups of the step",
        m.steps.iter().map(|(n, s)| (step_labels(n, &s.profile), s.boosts)).collect(),
    );

    // cpu.max
    let cg = |n: &str| labels(&[("cgroup", n)]);
    let bw: Vec<_> = snap.cgroups.iter().filter(|(_, c)| c.bw_quota_ns > 0).collect();
    b.gauge_family_f(
        "cpu_max_quota_cpus",
        "cpu.max quota over period, in CPUs",
        bw.iter()
            .map(|(n, c)| (cg(n), c.bw_quota_ns as f64 / c.bw_period_ns.max(1) as f64))
            .collect(),
    );
    b.seconds_family("cpu_max_usage", "CPU time of the limited subtree", bw.iter().map(|(n, c)| (cg(n), c.bw_usage_ns)).collect());
    b.seconds_family(
        "cpu_max_throttled",
        "Time spent throttled",
        bw.iter().map(|(n, c)| (cg(n), c.bw_throttled_ns)).collect(),
    );
    b.counter_family(
        "cpu_max_throttles",
        "Times the cgroup ran out of quota",
        bw.iter().map(|(n, c)| (cg(n), c.bw_nr_throttled)).collect(),
    );

    // memory pressure
    b.gauge_family_f(
        "thrash_score_ratio",
        "Thrash score: share of time lost to memory.high throttling and reclaim (EWMA), 0 to 1",
        m.memory.iter().map(|(n, c)| (cg(n), c.thrash_score as f64 / 1000.0)).collect(),
    );
    b.gauge_family(
        "thrash_penalised",
        "Thrash penalty on (1) or off (0)",
        m.memory.iter().map(|(n, c)| (cg(n), c.penalised as i64)).collect(),
    );
    b.counter_family(
        "thrash_penalty_entries",
        "Times the thrash penalty engaged",
        m.memory.iter().map(|(n, c)| (cg(n), c.penalty_entries)).collect(),
    );
    b.seconds_family(
        "memory_stall",
        "Time lost to memory pressure, all tasks",
        m.memory.iter().map(|(n, c)| (cg(n), c.stall_ms * 1_000_000)).collect(),
    );

    // memory actions
    let arb = &m.mem_arbitration;
    if !arb.is_empty() {
        let g = |k: &str| arb.get(k).copied().unwrap_or(0);
        b.gauge_f("mem_arbitration_fill_ratio", "Fill of the shared memory limit, 0 to 1", g("fill_permille") as f64 / 1000.0);
        b.gauge("mem_arbitration_swap", "Swap with room left (1) or not (0)", g("swap") as i64);
        b.counter_family(
            "mem_arbitration_actions",
            "--mem-arbitration actions (hold, freeze, thaw, reclaim, kill) and failed writes (error)",
            [("hold", "holds"), ("freeze", "frozen"), ("thaw", "thawed"), ("reclaim", "reclaims"), ("kill", "killed"), ("error", "errors")]
                .iter()
                .map(|(a, k)| (labels(&[("action", a)]), g(k)))
                .collect(),
        );
        b.counter("mem_arbitration_reclaimed_bytes", "Memory pushed out by memory.reclaim", g("reclaimed_mb") << 20);
    }
    if !m.mem_escalation.is_empty() {
        b.counter_family(
            "mem_escalation_actions",
            "--mem-escalation actions and failed writes (errors)",
            m.mem_escalation.iter().map(|(k, v)| (labels(&[("action", k)]), *v)).collect(),
        );
    }
    b.reg
}

/// Encode @reg: OpenMetrics if @openmetrics, else the Prometheus text format.
pub fn encode(reg: &Registry, openmetrics: bool) -> String {
    let mut out = String::new();
    let res = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, reg)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, reg)
    };
    if let Err(e) = res {
        warn!("metrics: encoding failed: {e}");
    }
    out
}

/// Does an `Accept` header ask for OpenMetrics?
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|t| t.trim().starts_with("application/openmetrics-text"))
}

/// Bind @addr and serve scrapes on a thread until @shutdown. The
/// scheduler thread answers the returned receiver's requests.
pub fn spawn(addr: SocketAddr, shutdown: Arc<AtomicBool>) -> Result<Receiver<Request>> {
    let server = tiny_http::Server::http(addr).map_err(|e| {
        anyhow!("--metrics-addr {addr}: cannot listen there ({e}); pick a free port or another address")
    })?;
    info!("metrics: serving Prometheus metrics on http://{addr}/metrics");
    let (tx, rx) = bounded::<Request>(4);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                match server.recv_timeout(Duration::from_millis(250)) {
                    Ok(Some(req)) => serve(req, &tx),
                    Ok(None) => {}
                    Err(e) => warn!("metrics: accepting a connection: {e}"),
                }
            }
        })?;
    Ok(rx)
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid static header")
}

fn serve(req: tiny_http::Request, tx: &Sender<Request>) {
    let text = |code: u16, body: &str| {
        tiny_http::Response::from_string(body.to_string())
            .with_status_code(code)
            .with_header(header("Content-Type", "text/plain; charset=utf-8"))
    };
    if *req.method() != tiny_http::Method::Get && *req.method() != tiny_http::Method::Head {
        let _ = req.respond(text(405, "only GET /metrics is served\n"));
        return;
    }
    if req.url().split('?').next() != Some("/metrics") {
        let _ = req.respond(text(404, "not found: the metrics are at /metrics\n"));
        return;
    }
    let openmetrics = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Accept"))
        .is_some_and(|h| wants_openmetrics(h.value.as_str()));
    let (stx, srx) = bounded::<Snapshot>(1);
    let snap = tx.try_send(stx).ok().and_then(|_| srx.recv_timeout(SNAPSHOT_TIMEOUT).ok());
    let Some(snap) = snap else {
        let _ = req.respond(text(503, "the scheduler is not answering (starting or restarting): try again\n"));
        return;
    };
    let body = encode(&registry(&snap, &snap.session_profiles), openmetrics);
    let ctype = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    let _ = req.respond(tiny_http::Response::from_string(body).with_header(header("Content-Type", ctype)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupSample;
    use crate::stats::CellSample;

    fn snap() -> Snapshot {
        let mut s = Snapshot { nr_cpus: 4, at_ns: 5_000_000_000, ..Default::default() };
        s.counters = vec![0; 64];
        s.counters[crate::bpf_intf::agentcg_stat_idx_STAT_BOOST as usize] = 7;
        s.cells.insert(
            "chat".into(),
            CellSample { id: 1, cpus: 2, cpulist: "2-3".into(), used_ns: 1_500_000_000, ..Default::default() },
        );
        s.sessions = vec!["agentcg/chat".into()];
        s.cgroups.insert(
            "agentcg/chat".into(),
            CgroupSample { usage_ns: 2_000_000_000, act_active: true, act_nr_up: 3, ..Default::default() },
        );
        s.cgroups.insert(
            "agentcg/build".into(),
            CgroupSample { bw_quota_ns: 50_000_000, bw_period_ns: 100_000_000, bw_nr_throttled: 9, ..Default::default() },
        );
        s.session_profiles.insert("agentcg/chat".into(), ("chat".into(), "interactive".into()));
        s
    }

    #[test]
    fn a_scrape_has_labelled_session_cell_and_cpu_max_rows() {
        let s = snap();
        let body = encode(&registry(&s, &s.session_profiles), false);
        for want in [
            "scx_agentcg_boosts_total 7",
            "scx_agentcg_cpus 4",
            "scx_agentcg_cell_cpus{cell=\"chat\"} 2",
            "scx_agentcg_cell_cpu_seconds_total{cell=\"chat\"} 1.5",
            "scx_agentcg_session_active{session=\"agentcg/chat\",profile=\"chat\",class=\"interactive\"} 1",
            "scx_agentcg_session_cpu_seconds_total{session=\"agentcg/chat\",profile=\"chat\",class=\"interactive\"} 2.0",
            "scx_agentcg_session_idle_to_active_total{session=\"agentcg/chat\",profile=\"chat\",class=\"interactive\"} 3",
            "scx_agentcg_cpu_max_quota_cpus{cgroup=\"agentcg/build\"} 0.5",
            "scx_agentcg_cpu_max_throttles_total{cgroup=\"agentcg/build\"} 9",
            "# TYPE scx_agentcg_dispatches_total counter",
        ] {
            assert!(body.contains(want), "missing {want:?} in:\n{body}");
        }
        assert!(!body.contains("# EOF"), "the 0.0.4 text has no EOF marker");
        let om = encode(&registry(&s, &s.session_profiles), true);
        assert!(om.ends_with("# EOF\n"), "{om}");
        // OpenMetrics names the counter family without its _total sample suffix
        assert!(om.contains("# TYPE scx_agentcg_dispatches counter\n"), "{om}");
    }

    #[test]
    fn an_observation_has_wakeup_memory_and_mode_rows() {
        let mut s = snap();
        s.mode = "observe".into();
        s.observed.insert(
            "agentcg/chat".into(),
            crate::stats::ObservedSample {
                wakeups: 40,
                wake_lat_n: 4,
                wake_lat_ns: 2_000_000,
                wake_lat_max_ns: 1_500_000,
                mem_current: 64 << 20,
                mem_events: [("oom_kill".to_string(), 1)].into_iter().collect(),
                mem_some_avg10: 12.5,
                ..Default::default()
            },
        );
        let body = encode(&registry(&s, &s.session_profiles), false);
        let l = "{session=\"agentcg/chat\",profile=\"chat\",class=\"interactive\"";
        for want in [
            "scx_agentcg_mode{mode=\"observe\"} 1".to_string(),
            format!("scx_agentcg_session_wakeups_total{l}}} 40"),
            format!("scx_agentcg_session_wake_latency_sum_seconds_total{l}}} 0.002"),
            format!("scx_agentcg_session_wake_latency_count_total{l}}} 4"),
            format!("scx_agentcg_session_memory_current_bytes{l}}} 67108864"),
            format!("scx_agentcg_session_memory_events_total{l},event=\"oom_kill\"}} 1"),
            format!("scx_agentcg_session_memory_pressure_some_avg10_ratio{l}}} 0.125"),
        ] {
            assert!(body.contains(&want), "missing {want:?} in:\n{body}");
        }
        let plain = encode(&registry(&snap(), &s.session_profiles), false);
        assert!(plain.contains("scx_agentcg_mode{mode=\"schedule\"} 1"), "{plain}");
        assert!(!plain.contains("session_wakeups"), "{plain}");
    }

    #[test]
    fn a_session_without_a_profile_is_labelled_none_and_arbitration_rows_need_the_flag() {
        let mut s = snap();
        s.session_profiles.clear();
        let body = encode(&registry(&s, &s.session_profiles), false);
        assert!(body.contains("session=\"agentcg/chat\",profile=\"none\",class=\"none\""), "{body}");
        assert!(!body.contains("mem_arbitration_fill"), "{body}");
        s.arbitration = Some(Default::default());
        let body = encode(&registry(&s, &s.session_profiles), false);
        assert!(body.contains("scx_agentcg_mem_arbitration_fill_ratio 0.0"), "{body}");
        assert!(body.contains("scx_agentcg_mem_arbitration_actions_total{action=\"kill\"} 0"), "{body}");
    }

    #[test]
    fn accept_and_addresses_are_understood() {
        assert!(wants_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4;q=1,*/*;q=0.1"));
        assert_eq!(parse_addr("127.0.0.1:9464").unwrap().port(), 9464);
        assert!(parse_addr("[::1]:9464").is_ok());
        let e = parse_addr("localhost").unwrap_err();
        assert!(e.contains("IP:PORT"), "{e}");
    }
}
