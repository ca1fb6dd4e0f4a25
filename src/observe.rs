//! `--observe`: run no scheduler and write no cgroup file, but keep what an
//! operator needs to decide whether to enforce: the sessions (children of
//! `--cell-parent-cgroup` and registered cgroups, with the registry
//! answering as usual), their CPU time, runs, wake-ups, wake-to-run latency
//! and activity (src/bpf/observe.bpf.c, from the sched_switch and
//! sched_wakeup tracepoints), their memory (memory.current, memory.events)
//! and pressure (memory.pressure, cpu.pressure), through the stats socket
//! and `--metrics-addr`. Going from observing to enforcing is a restart
//! without `--observe`.
//!
//! Not available here, because the scheduler makes them: cells, profiles
//! in effect, boosts, cpu.max in BPF, thrash scores and penalties, memory
//! arbitration and escalation.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::MapCore;
use log::{info, warn};

use crate::cgroups::{self, CgroupSample, CGROUP2_ROOT};
use crate::policy::Policy;
use crate::registry::{Pending, Registry};
use crate::stats::{ObservedSample, Snapshot};

/// `some avg10` and `total` (us) of a PSI file's text.
pub fn psi_some(text: &str) -> (f64, u64) {
    let Some(line) = text.lines().find(|l| l.starts_with("some ")) else {
        return (0.0, 0);
    };
    let field = |k: &str| line.split_whitespace().find_map(|f| f.strip_prefix(k));
    (
        field("avg10=").and_then(|v| v.parse().ok()).unwrap_or(0.0),
        field("total=").and_then(|v| v.parse().ok()).unwrap_or(0),
    )
}

/// The counters of a flat keyed file such as memory.events.
pub fn keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A session's memory and pressure, read from cgroupfs (missing files,
/// e.g. without the memory controller, read as zero).
pub fn read_memory(dir: &Path, into: &mut ObservedSample) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    into.mem_current = read("memory.current").trim().parse().unwrap_or(0);
    into.mem_events = keyed(&read("memory.events"));
    (into.mem_some_avg10, into.mem_some_total_us) = psi_some(&read("memory.pressure"));
    (into.cpu_some_avg10, _) = psi_some(&read("cpu.pressure"));
}

/// The tracepoint object, loaded and attached.
pub struct Observer {
    skel: &'static mut crate::observe_skel::ObserveSkel<'static>,
}

impl Observer {
    pub fn start() -> Result<Self> {
        use crate::observe_skel::*;
        use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
        // the object lives as long as the process (loaded once)
        let obj: &'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
        let open = ObserveSkelBuilder::default().open(obj).context("opening the observe BPF object")?;
        let skel = Box::leak(Box::new(open.load().context("loading the observe BPF object")?));
        skel.attach().context("attaching to the sched_switch and sched_wakeup tracepoints")?;
        kick_cpus();
        Ok(Observer { skel })
    }

    /// Make @ids the sessions BPF counts (new ones start at zero, gone
    /// ones are dropped).
    pub fn set_sessions(&mut self, ids: &BTreeSet<u64>) {
        let map = &self.skel.maps.obs_sessions;
        let have: BTreeSet<u64> = map
            .keys()
            .filter_map(|k| k.get(..8).map(|b| u64::from_ne_bytes(b.try_into().unwrap())))
            .collect();
        let zero = vec![0u8; std::mem::size_of::<crate::bpf_intf::obs_session>()];
        for id in ids.difference(&have) {
            if let Err(e) = map.update(&id.to_ne_bytes(), &zero, libbpf_rs::MapFlags::NO_EXIST) {
                warn!("observe: cannot count session cgroup {id}: {e}");
            }
        }
        for id in have.difference(ids) {
            let _ = map.delete(&id.to_ne_bytes());
        }
    }

    /// Each session's counters, runs still on a CPU included.
    pub fn read(&self) -> BTreeMap<u64, crate::bpf_intf::obs_session> {
        let now = cgroups::monotonic_ns();
        let map = &self.skel.maps.obs_sessions;
        let mut out = BTreeMap::new();
        for k in map.keys() {
            let Ok(Some(v)) = map.lookup(&k, libbpf_rs::MapFlags::ANY) else { continue };
            if k.len() < 8 || v.len() < std::mem::size_of::<crate::bpf_intf::obs_session>() {
                continue;
            }
            // SAFETY: the value is a struct obs_session (plain integers).
            let s: crate::bpf_intf::obs_session =
                unsafe { std::ptr::read_unaligned(v.as_ptr() as *const crate::bpf_intf::obs_session) };
            out.insert(u64::from_ne_bytes(k[..8].try_into().unwrap()), s);
        }
        if let Ok(Some(cpus)) = self.skel.maps.obs_cpus.lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY) {
            for v in cpus.iter().filter(|v| v.len() >= 16) {
                let since = u64::from_ne_bytes(v[..8].try_into().unwrap());
                let session = u64::from_ne_bytes(v[8..16].try_into().unwrap());
                if let Some(s) = out.get_mut(&session) {
                    s.run_ns += now.saturating_sub(since);
                }
            }
        }
        out
    }
}

/// Make every CPU switch tasks once: a task already on a CPU when the
/// tracepoints attach is counted from its next switch-in, and a spinner
/// alone on its CPU may not switch for seconds. A thread pinned to each CPU
/// that sleeps and wakes a few times takes the CPU and gives it back.
fn kick_cpus() {
    let n = libbpf_rs::num_possible_cpus().unwrap_or(1);
    let threads: Vec<_> = (0..n)
        .map(|cpu| {
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return; // offline
                    }
                }
                for _ in 0..3 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// The sessions now: path below the cgroup2 root -> (name, cgroup id).
fn sessions(root: &Path, parent: Option<&str>, reg: &Registry) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    if let Some(p) = parent {
        let p = p.trim_matches('/');
        for s in crate::cells::scan_sessions(&root.join(p)).unwrap_or_default() {
            out.insert(format!("{p}/{}", s.name), (s.name, s.ino));
        }
    }
    for e in reg.entries() {
        out.entry(e.rel.clone()).or_insert((e.reg.session.clone(), e.ino));
    }
    out
}

/// The stats snapshot of an observation.
fn snapshot(
    obs: &Observer,
    root: &Path,
    sess: &BTreeMap<String, (String, u64)>,
    policy: &Policy,
    reg: &Registry,
    started: Instant,
) -> Snapshot {
    let now = cgroups::monotonic_ns();
    let counts = obs.read();
    let mut snap = Snapshot {
        at_ns: started.elapsed().as_nanos() as u64,
        nr_cpus: libbpf_rs::num_possible_cpus().unwrap_or(0) as u64,
        memcg_ops: "off".into(),
        mode: "observe".into(),
        ..Default::default()
    };
    for (rel, (name, id)) in sess {
        let Some(c) = counts.get(id) else { continue };
        let (up, down, act_ns, idle_ns, act_now) = cgroups::activity_now(
            c.act.active_at,
            c.act.idle_at,
            (c.act.nr_up, c.act.nr_down, c.act.active_ns, c.act.idle_ns),
            now,
            crate::bpf_intf::agentcg_consts_AGENTCG_ACT_DEBOUNCE_NS as u64,
        );
        snap.cgroups.insert(
            rel.clone(),
            CgroupSample {
                usage_ns: c.run_ns,
                nr_dispatches: c.nr_runs,
                act_nr_up: up,
                act_nr_down: down,
                act_active_ns: act_ns,
                act_idle_ns: idle_ns,
                act_active: act_now,
                ..Default::default()
            },
        );
        let mut o = ObservedSample {
            wakeups: c.nr_wakeups,
            wake_lat_n: c.nr_wake_lat,
            wake_lat_ns: c.wake_lat_ns,
            wake_lat_max_ns: c.wake_lat_max_ns,
            ..Default::default()
        };
        read_memory(&root.join(rel), &mut o);
        snap.observed.insert(rel.clone(), o);
        let profile = match reg.entries().find(|e| &e.rel == rel) {
            Some(e) => policy.profile_index(&e.reg.profile),
            None => policy.resolve(rel, Some(name), None),
        };
        if let Some(i) = profile {
            let p = &policy.profiles[i];
            snap.session_profiles.insert(rel.clone(), (p.name.clone(), p.class.as_str().to_string()));
        }
        snap.sessions.push(rel.clone());
    }
    snap
}

/// Observe until @shutdown: serve the stats socket, @metrics_rx and the
/// registry (@reg, @registry_rx), and never attach a scheduler.
pub fn run(
    opts: &crate::Opts,
    shutdown: Arc<AtomicBool>,
    metrics_rx: Option<crossbeam::channel::Receiver<crate::metrics::Request>>,
    reg: &mut Registry,
    registry_rx: Option<crossbeam::channel::Receiver<Pending>>,
) -> Result<()> {
    let policy = crate::load_policy(opts.policy.as_deref())?;
    let root = Path::new(CGROUP2_ROOT);
    if let Some(p) = &opts.cell_parent_cgroup {
        crate::cells::manager::validate_parent(root, p)?;
    }
    let mut obs = Observer::start()?;
    let stats_server = scx_stats::prelude::StatsServer::new(crate::stats::server_data())
        .launch()
        .context("starting the stats server")?;
    crate::restrict_stats_socket();
    info!(
        "observe: attached to sched_switch and sched_wakeup only; no scheduler, no cgroup file written; \
         sessions are {} (restart without --observe to enforce)",
        match (&opts.cell_parent_cgroup, &opts.registry_socket) {
            (Some(p), Some(_)) => format!("the children of {p} and the registered cgroups"),
            (Some(p), None) => format!("the children of {p}"),
            (None, _) => "the registered cgroups".to_string(),
        }
    );
    let (res_ch, req_ch) = stats_server.channels();
    let metrics_rx = metrics_rx.unwrap_or_else(crossbeam::channel::never);
    let registry_rx = registry_rx.unwrap_or_else(crossbeam::channel::never);
    let profiles: Vec<String> = policy.profiles.iter().map(|p| p.name.clone()).collect();
    let started = Instant::now();
    let mut sess = BTreeMap::new();
    let mut next_scan = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        if Instant::now() >= next_scan {
            reg.prune();
            sess = sessions(root, opts.cell_parent_cgroup.as_deref(), reg);
            // a session whose directory was re-created is another cgroup
            sess.retain(|rel, (_, id)| std::fs::metadata(root.join(rel.as_str())).is_ok_and(|m| m.ino() == *id));
            obs.set_sessions(&sess.values().map(|(_, id)| *id).collect());
            next_scan = Instant::now() + Duration::from_millis(250);
        }
        crossbeam::select! {
            recv(req_ch) -> r => {
                r?;
                res_ch.send(snapshot(&obs, root, &sess, &policy, reg, started))?;
            }
            recv(metrics_rx) -> r => {
                if let Ok(tx) = r {
                    let _ = tx.send(snapshot(&obs, root, &sess, &policy, reg, started));
                }
            }
            recv(registry_rx) -> r => {
                if let Ok((req, tx)) = r {
                    let parent = opts.cell_parent_cgroup.as_deref().unwrap_or("").trim_matches('/').to_string();
                    let children: Vec<String> = sess
                        .keys()
                        .filter_map(|rel| rel.strip_prefix(&format!("{parent}/")).map(String::from))
                        .collect();
                    let (reply, changed) = reg.apply(&req, &profiles, &crate::registry::taken_by_parent(&parent, &children));
                    let _ = tx.send(reply);
                    if changed {
                        next_scan = Instant::now();
                    }
                }
            }
            default(Duration::from_millis(100)) => {}
        }
    }
    info!("observe: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_and_events_parse() {
        let t = "some avg10=12.50 avg60=3.00 avg300=0.10 total=987654\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(psi_some(t), (12.5, 987654));
        assert_eq!(psi_some(""), (0.0, 0));
        let e = keyed("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n");
        assert_eq!(e["high"], 12);
        assert_eq!(e["oom_kill"], 1);
        assert_eq!(e.len(), 6);
    }
}
