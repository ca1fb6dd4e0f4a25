// SPDX-License-Identifier: GPL-2.0-only
//! scx_agentcg: a sched_ext scheduler for machines that run many AI-agent
//! sessions. The BPF side (src/bpf/main.bpf.c) makes every scheduling
//! decision; this side validates options, loads and attaches the scheduler,
//! and serves statistics.

mod bpf_skel;
pub use bpf_skel::*;
pub mod bpf_intf;

mod bandwidth;
mod cells;
mod cgroups;
mod escalation;
mod hook;
mod launcher;
mod memcg_ops;
mod memcg_ops_skel;
mod memory;
mod metrics;
mod observe;
mod observe_skel;
mod partial;
mod policy;
mod registry;
mod registry_cli;
mod registry_client;
mod registry_proto;
mod stats;
mod thrash;
mod timerslack;
mod yielding;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use log::{debug, info, warn};
use scx_stats::prelude::*;
use scx_utils::build_id;
use scx_utils::compat;
use scx_utils::libbpf_clap_opts::LibbpfOpts;
use scx_utils::{scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report};
use scx_utils::UserExitInfo;

use crate::bandwidth::{BandwidthSource, Limit};
use crate::cells::manager::{CellManager, CellOpts};
use crate::cells::CpuSet;
use crate::cgroups::{CgroupSample, CGROUP2_ROOT};
use crate::policy::Policy;
use crate::stats::{CellSample, Snapshot, StepSample};

/// Set by SIGHUP: reload the policy file.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

pub const SCHEDULER_NAME: &str = "scx_agentcg";

/// Version with the build id (the git commit) and the target triple.
fn version() -> String {
    build_id::full_version(&format!(
        "{}-{}",
        env!("CARGO_PKG_VERSION"),
        env!("AGENTCG_BUILD_ID")
    ))
}

/// Where scx_stats puts the socket (its default path).
const STATS_SOCKET: &str = "/var/run/scx/root/stats";

/// How many cgroup directories one stats snapshot may visit.
const MAX_CGROUPS_SCANNED: usize = 20_000;

/// scx_agentcg: a sched_ext scheduler for AI-agent sessions.
///
/// Cgroup CPU control with flattened hierarchical weights (derived from the
/// scx_flatcg algorithm) and protection against many child cgroups of a
/// low-weight parent waking together. All scheduling decisions are made in
/// BPF; see src/bpf/main.bpf.c for the design.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a command as a step of an agent session:
    /// scx_agentcg run --session S [--step T] [--class C] -- CMD [ARGS]
    Run(launcher::RunArgs),
    /// Talk to a running scheduler's session registry (--registry-socket):
    /// scx_agentcg registry list | register --id ID --cgroup PATH --profile P | unregister --id ID | send
    Registry(registry_cli::RegistryArgs),
    /// OCI runtime hook (runc, crun, podman, CRI-O): registers the
    /// container with the registry from its state on stdin (poststart) and
    /// unregisters it (poststop). See docs/containers.md.
    Hook(hook::HookArgs),
}

#[derive(Debug, Parser)]
#[command(disable_version_flag = true, args_conflicts_with_subcommands = true)]
pub struct Opts {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Manage agent sessions as cells: every direct child of this cgroup
    /// (a path relative to the cgroup2 root, e.g. "agentcg") is a session
    /// with CPUs of its own; its sub-cgroups (steps) run on them.
    #[clap(long)]
    pub cell_parent_cgroup: Option<String>,

    /// Keep this session (a child name of --cell-parent-cgroup) in the
    /// system cell. Repeatable.
    #[clap(long = "cell-exclude")]
    pub cell_exclude: Vec<String>,

    /// Most cells, the system cell included (2 to 64).
    #[clap(long, default_value = "32")]
    pub max_cells: u32,

    /// CPUs the system cell (everything outside sessions) always keeps.
    #[clap(long, default_value = "1")]
    pub system_cell_min_cpus: usize,

    /// Let a busy cell run on idle CPUs of other cells; the owner takes
    /// them back as soon as its own tasks wake.
    #[clap(long)]
    pub enable_borrowing: bool,

    /// Re-split CPUs between cells by measured demand (EWMA of each cell's
    /// utilisation), with a cooldown.
    #[clap(long)]
    pub enable_rebalancing: bool,

    /// Step policy file (TOML): profiles and the selectors that map session
    /// and step cgroups to them. SIGHUP reloads it.
    #[clap(long)]
    pub policy: Option<std::path::PathBuf>,

    /// Schedule only the tasks of the managed tree (--cell-parent-cgroup);
    /// everything else stays on the fair class.
    #[clap(long)]
    pub partial: bool,

    /// Task time slice in microseconds.
    #[clap(short = 's', long, default_value = "3000")]
    pub slice_us: u64,

    /// How long a CPU keeps serving the cgroup it picked, in microseconds
    /// (0 = the task slice).
    #[clap(long, default_value = "0")]
    pub cgroup_slice_us: u64,

    /// Do not preempt a CPU when a task of a cgroup that is behind its share
    /// wakes up and no CPU is idle.
    #[clap(long)]
    pub no_wake_preempt: bool,

    /// Turn off herd control (ancestors' group vtime holding back children
    /// of a parent that ran ahead of its share). For comparisons only.
    #[clap(long)]
    pub no_herd_control: bool,

    /// Measure memory pressure (thrash score) but never penalise a cgroup
    /// for it. For comparisons.
    #[clap(long)]
    pub no_thrash_penalty: bool,

    /// Memory-stall hooks of the thrash score: "auto" (PSI brackets where
    /// the kernel has them, else the direct-reclaim tracepoints) or
    /// "reclaim" (the tracepoints only). For tests of the fallback.
    #[clap(long, value_enum, default_value = "auto", hide = true)]
    pub thrash_hooks: thrash::ThrashHooks,

    /// The memcg BPF ops (an unmerged kernel interface): "auto" loads them
    /// where the running kernel has struct memcg_bpf_ops, "on" fails where
    /// it does not, "off" never loads them.
    #[clap(long, value_enum, default_value = "auto")]
    pub memcg_ops: memcg_ops::MemcgOpsMode,

    /// Mainline memory escalation for sessions (needs --cell-parent-cgroup):
    /// memory.high/max from the policy, then freeze and kill a session that
    /// stays under memory pressure ([escalation] in the policy file).
    #[clap(long)]
    pub mem_escalation: bool,

    /// Memory arbitration between sessions (needs --cell-parent-cgroup):
    /// memory.low/min for interactive sessions, background sessions held
    /// back in the scheduler, then frozen, as the shared memory.max nears,
    /// resumed when there is room again, and killed only as the last resort
    /// before the kernel's OOM killer ([memory] in the policy file).
    #[clap(long)]
    pub mem_arbitration: bool,

    /// Give tasks of interactive steps this timer slack (ns) through
    /// /proc/PID/timerslack_ns (needs --cell-parent-cgroup). 0: off.
    #[clap(long, default_value = "0")]
    pub timer_slack_ns: u64,

    /// Run the memcg_ops delay-curve self-test (the BPF version on the
    /// Rust version's test table) and exit. Loads, never attaches.
    #[clap(long, hide = true)]
    pub selftest_memcg_curve: bool,

    /// Where cpu.max comes from: the kernel's ops.cgroup_set_bandwidth
    /// (6.17+), or userspace reading cpu.max / cpu.max.burst ("cgroupfs");
    /// "auto" uses the kernel where it has the op.
    #[clap(long, value_enum, default_value = "auto")]
    pub bandwidth_source: BandwidthSource,

    /// How often the cgroupfs bandwidth source re-reads cpu.max, in
    /// milliseconds.
    #[clap(long, default_value = "100")]
    pub bandwidth_poll_ms: u64,

    /// Exit debug dump buffer length. 0 indicates default.
    #[clap(long, default_value = "0")]
    pub exit_dump_len: u32,

    /// Enable stats monitoring with the specified interval (seconds).
    #[clap(long)]
    pub stats: Option<f64>,

    /// Serve Prometheus metrics at http://ADDR/metrics (IP:PORT, e.g.
    /// 127.0.0.1:9464; off by default): the scheduler's counters and the
    /// per-cell, per-session (session, profile, class), per-step and
    /// per-cgroup ones, from the same numbers as the stats.
    #[clap(long, value_name = "ADDR", value_parser = metrics::parse_addr)]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Observe only: attach no scheduler and write no cgroup file; count
    /// the sessions' CPU time, wake-ups, wake-to-run latency and activity
    /// from the scheduler tracepoints and read their memory and pressure,
    /// for the stats, --monitor and --metrics-addr. Enforcing is a restart
    /// without this flag. See src/observe.rs for what it does not have.
    #[clap(long)]
    pub observe: bool,

    /// Accept sessions identified by a cgroup anywhere in the tree (a
    /// container's scope) over this unix socket (root only, 0600): an OCI
    /// hook (`scx_agentcg hook`), a node agent or `scx_agentcg registry`
    /// registers them with a profile of the policy. Without a PATH:
    /// /var/run/scx_agentcg/registry.sock. See docs/containers.md.
    #[clap(long, value_name = "PATH", num_args = 0..=1,
           default_missing_value = registry_proto::DEFAULT_SOCKET)]
    pub registry_socket: Option<std::path::PathBuf>,

    /// Run in stats monitoring mode with the specified interval (seconds).
    /// The scheduler is not launched.
    #[clap(long)]
    pub monitor: Option<f64>,

    /// Show descriptions for statistics.
    #[clap(long)]
    pub help_stats: bool,

    /// Enable verbose output, including libbpf details.
    #[clap(short = 'v', long)]
    pub verbose: bool,

    /// Print the scheduler version (with the build id) and exit.
    #[clap(short = 'V', long)]
    pub version: bool,

    #[clap(flatten, next_help_heading = "Libbpf Options")]
    pub libbpf: LibbpfOpts,
}

impl Opts {
    /// Reject values that would make the scheduler misbehave, before
    /// anything is loaded.
    pub fn validate(&self) -> Result<()> {
        if !(100..=100_000).contains(&self.slice_us) {
            bail!(
                "--slice-us {} is out of range: use 100 to 100000 microseconds",
                self.slice_us
            );
        }
        if self.cgroup_slice_us != 0 && !(100..=1_000_000).contains(&self.cgroup_slice_us) {
            bail!(
                "--cgroup-slice-us {} is out of range: use 0 (same as --slice-us) or 100 to 1000000 microseconds",
                self.cgroup_slice_us
            );
        }
        if !(10..=10_000).contains(&self.bandwidth_poll_ms) {
            bail!(
                "--bandwidth-poll-ms {} is out of range: use 10 to 10000 milliseconds",
                self.bandwidth_poll_ms
            );
        }
        if !(2..=bpf_intf::agentcg_consts_AGENTCG_MAX_CELLS).contains(&self.max_cells) {
            bail!(
                "--max-cells {} is out of range: use 2 to {} (the system cell counts)",
                self.max_cells,
                bpf_intf::agentcg_consts_AGENTCG_MAX_CELLS
            );
        }
        if self.timer_slack_ns > 1_000_000_000 {
            bail!(
                "--timer-slack-ns {} is out of range: use 0 (off) to 1000000000 (1 s)",
                self.timer_slack_ns
            );
        }
        if self.system_cell_min_cpus == 0 {
            bail!("--system-cell-min-cpus 0: the system cell needs at least one CPU");
        }
        if self.cell_parent_cgroup.is_none() && self.registry_socket.is_none() {
            for (flag, set) in [
                ("--enable-borrowing", self.enable_borrowing),
                ("--enable-rebalancing", self.enable_rebalancing),
                ("--partial", self.partial),
            ] {
                if set {
                    bail!("{flag} needs sessions: --cell-parent-cgroup (a managed tree) or --registry-socket (registered cgroups)");
                }
            }
        }
        if self.cell_parent_cgroup.is_none() {
            for (flag, set) in [
                ("--cell-exclude", !self.cell_exclude.is_empty()),
                ("--mem-escalation", self.mem_escalation),
                ("--mem-arbitration", self.mem_arbitration),
                ("--timer-slack-ns", self.timer_slack_ns != 0),
            ] {
                if set {
                    bail!("{flag} needs --cell-parent-cgroup (the managed tree of agent sessions)");
                }
            }
        }
        if self.observe {
            for (flag, set) in [
                ("--mem-escalation", self.mem_escalation),
                ("--mem-arbitration", self.mem_arbitration),
                ("--partial", self.partial),
                ("--timer-slack-ns", self.timer_slack_ns != 0),
                ("--enable-borrowing", self.enable_borrowing),
                ("--enable-rebalancing", self.enable_rebalancing),
                ("--memcg-ops on", self.memcg_ops == memcg_ops::MemcgOpsMode::On),
            ] {
                if set {
                    bail!("{flag} acts on the system and --observe changes nothing: drop one of them");
                }
            }
        }
        if self.mem_escalation && self.mem_arbitration {
            bail!(
                "--mem-escalation and --mem-arbitration both freeze and kill sessions: use one \
                 (--mem-arbitration pauses sessions before they reach the limit; --mem-escalation reacts to pressure)"
            );
        }
        if self.metrics_addr.is_some() && self.monitor.is_some() {
            bail!(
                "--metrics-addr serves the running scheduler's numbers and --monitor runs no scheduler: \
                 give --metrics-addr to the scheduler's own command line"
            );
        }
        for (flag, v) in [("--stats", self.stats), ("--monitor", self.monitor)] {
            if let Some(secs) = v {
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                    bail!("{flag} {secs} is not a valid interval: give seconds between 0 and 3600");
                }
            }
        }
        Ok(())
    }

    /// Are there sessions at all: a managed parent or a registry.
    pub fn has_sessions(&self) -> bool {
        self.cell_parent_cgroup.is_some() || self.registry_socket.is_some()
    }

    pub fn cgroup_slice_ns(&self) -> u64 {
        if self.cgroup_slice_us == 0 {
            self.slice_us * 1000
        } else {
            self.cgroup_slice_us * 1000
        }
    }
}

/// Only root (scxtop, --monitor as root) may talk to the scheduler.
fn restrict_stats_socket() {
    use std::os::unix::fs::PermissionsExt;
    let sock = std::path::Path::new(STATS_SOCKET);
    if let Err(e) = std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600)) {
        warn!("{}: cannot restrict permissions: {e}", sock.display());
    }
}

/// Load and check the policy file (or the built-in default).
fn load_policy(path: Option<&std::path::Path>) -> Result<Policy> {
    match path {
        None => Ok(Policy::builtin()),
        Some(p) => Policy::load(p).map_err(|e| anyhow::anyhow!("invalid policy file:\n{e}")),
    }
}

/// Selectors pick steps of the sessions under --cell-parent-cgroup; without
/// that tree they would match nothing, silently. A file with profiles and
/// tables only ([thrash]) is fine on its own.
fn check_policy_scope(policy: &Policy, has_sessions: bool, partial: bool) -> Result<()> {
    if !partial {
        let fair: Vec<&str> = policy
            .profiles
            .iter()
            .filter(|p| p.cpu_mode == policy::CpuMode::Cfs)
            .map(|p| p.name.as_str())
            .collect();
        if !fair.is_empty() {
            bail!(
                "profile {} says cpu_mode = \"cfs\", which needs --partial (without it every task runs \
                 under scx_agentcg): add --partial, or drop the key",
                fair.join(", ")
            );
        }
    }
    if !has_sessions && !policy.selectors.is_empty() {
        bail!(
            "the policy file has {} [[select]] entries, but selectors only apply to the steps of \
             sessions (under --cell-parent-cgroup, or registered with --registry-socket): add one of \
             those, or drop the selectors (a file with only profiles and [thrash] works without it)",
            policy.selectors.len()
        );
    }
    Ok(())
}

/// A profile as the BPF side applies it.
fn profile_cfg(p: &policy::Profile) -> bpf_intf::profile_cfg {
    let mult = (p.weight * bpf_intf::agentcg_consts_AGENTCG_MULT_ONE as f64).round();
    bpf_intf::profile_cfg {
        class: p.class.code(),
        weight_mult: mult.clamp(1.0, u32::MAX as f64) as u32,
        slice_ns: p.slice_us.unwrap_or(0) * 1000,
        credit_max_ns: if p.wakeup_boost { p.burst_credit_ms * 1_000_000 } else { 0 },
        refill_pct: p.burst_refill_pct,
        boost: p.wakeup_boost as u32,
        thrash_weight_pct: p.thrash_weight_pct,
        thrash_slice_pct: p.thrash_slice_pct,
        yield_: p.yield_to_interactive as u32,
        pad: 0,
    }
}

struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    opts: &'a Opts,
    policy: Policy,
    cells: Option<CellManager>,
    cells_rx: Option<crossbeam::channel::Receiver<()>>,
    nr_cpus: usize,
    struct_ops: Option<libbpf_rs::Link>,
    stats_server: StatsServer<(), Snapshot>,
    started: Instant,
    /// cgroupfs bandwidth source: poll interval and what was applied
    bw_poll: Option<Duration>,
    bw_applied: BTreeMap<u64, Limit>,
    /// "loaded", "unsupported" or "off" (--memcg-ops)
    memcg_ops_state: String,
    memcg_ops_link: Option<memcg_ops::Attached>,
    /// the --mem-escalation thread, its counters and its copy of the policy
    esc_stop: Arc<AtomicBool>,
    esc_stats: Option<Arc<std::sync::Mutex<escalation::EscalationStats>>>,
    esc_policy: Option<Arc<std::sync::Mutex<Option<Policy>>>>,
    esc_thread: Option<std::thread::JoinHandle<()>>,
    /// the --mem-arbitration thread, its counters and its copy of the policy
    arb_stats: Option<Arc<std::sync::Mutex<memory::arbiter::ArbitrationStats>>>,
    arb_policy: Option<Arc<std::sync::Mutex<Policy>>>,
    arb_thread: Option<std::thread::JoinHandle<()>>,
    /// scrapes of --metrics-addr waiting for a snapshot
    metrics_rx: Option<crossbeam::channel::Receiver<metrics::Request>>,
    /// --registry-socket: the registrations (kept across restarts: main
    /// lends them to each Scheduler) and the requests waiting for an answer
    registry: Option<registry::Registry>,
    registry_rx: Option<crossbeam::channel::Receiver<registry::Pending>>,
}

impl<'a> Scheduler<'a> {
    fn init(opts: &'a Opts, open_object: &'a mut MaybeUninit<OpenObject>) -> Result<Self> {
        scx_utils::try_set_rlimit_infinity();
        let nr_cpus = libbpf_rs::num_possible_cpus().context("counting possible CPUs")?;
        if nr_cpus > bpf_intf::agentcg_consts_AGENTCG_MAX_CPUS as usize {
            bail!(
                "this machine has {nr_cpus} possible CPUs; scx_agentcg supports at most {}",
                bpf_intf::agentcg_consts_AGENTCG_MAX_CPUS
            );
        }

        info!(
            "{} {} on {} CPUs",
            SCHEDULER_NAME,
            version(),
            nr_cpus
        );

        let mut skel_builder = BpfSkelBuilder::default();
        skel_builder.obj_builder.debug(opts.verbose);
        let open_opts = opts.libbpf.clone().into_bpf_open_opts();
        // everything from the user is checked before anything is loaded
        let policy = load_policy(opts.policy.as_deref())?;
        check_policy_scope(&policy, opts.has_sessions(), opts.partial)?;
        let cells = match opts.has_sessions() {
            true => Some(CellManager::new(
                CellOpts {
                    parent: opts.cell_parent_cgroup.clone(),
                    exclude: opts.cell_exclude.clone(),
                    max_cells: opts.max_cells,
                    system_min_cpus: opts.system_cell_min_cpus,
                    rebalancing: opts.enable_rebalancing,
                },
                std::path::Path::new(CGROUP2_ROOT),
            )?),
            false => None,
        };

        let memcg_probe = match memcg_ops::probe_memcg_ops() {
            Ok(p) => p,
            Err(e) => {
                warn!("memcg_ops: cannot read the kernel's BTF ({e:#}); taking it as unsupported");
                memcg_ops::MemcgOpsProbe { present: false, usable: false, reason: format!("the kernel's BTF could not be read ({e:#})") }
            }
        };
        let want_memcg_ops =
            memcg_ops::decide(opts.memcg_ops, &memcg_probe).map_err(|e| anyhow::anyhow!(e))?;
        let escalator = if opts.mem_escalation {
            let parent = opts.cell_parent_cgroup.as_deref().unwrap_or_default();
            let cgroot = std::path::Path::new(CGROUP2_ROOT);
            if cgroups::writable(&cgroot.join(parent.trim_matches('/'))) {
                let e = escalation::Escalator::new(cgroot.to_path_buf(), parent, policy.escalation.clone())?;
                *e.policy_handle().lock().unwrap() = Some(policy.clone());
                Some(e)
            } else {
                warn!(
                    "--mem-escalation: the cgroup filesystem is read-only here; memory escalation is off \
                     (everything else runs)"
                );
                None
            }
        } else {
            None
        };

        let mut skel = scx_ops_open!(skel_builder, open_object, agentcg_ops, open_opts)?;

        skel.struct_ops.agentcg_ops_mut().exit_dump_len = opts.exit_dump_len;
        // The last runnable task of a CPU goes through enqueue/dispatch too,
        // so it is charged and its slice is ours to set. Never
        // SCX_OPS_HAS_CGROUP_WEIGHT: 7.x kernels reject it.
        let mut flags = *compat::SCX_OPS_ENQ_LAST;
        if opts.partial {
            flags |= *compat::SCX_OPS_SWITCH_PARTIAL;
        }
        skel.struct_ops.agentcg_ops_mut().flags = flags;

        let kernel_has_bw =
            compat::struct_has_field("sched_ext_ops", "cgroup_set_bandwidth").unwrap_or(false);
        let bw_source = bandwidth::resolve_source(opts.bandwidth_source, kernel_has_bw)?;
        if !kernel_has_bw {
            skel.struct_ops.agentcg_ops_mut().cgroup_set_bandwidth = std::ptr::null_mut();
        }
        match bw_source {
            BandwidthSource::Kernel => info!("cpu.max: delivered by the kernel (ops.cgroup_set_bandwidth)"),
            _ => info!(
                "cpu.max: read from cgroupfs every {} ms ({})",
                opts.bandwidth_poll_ms,
                if kernel_has_bw {
                    "--bandwidth-source cgroupfs"
                } else {
                    "this kernel has no ops.cgroup_set_bandwidth"
                }
            ),
        }

        let hooks = thrash_hooks(&mut skel, opts.thrash_hooks);
        info!(
            "memory pressure: {}; thrash penalty {}",
            hooks,
            if opts.no_thrash_penalty { "off (--no-thrash-penalty)" } else { "on" }
        );

        let rodata = skel.maps.rodata_data.as_mut().unwrap();
        rodata.thrash_penalty_on = !opts.no_thrash_penalty as u32;
        rodata.thrash_enter_permille = policy.thrash.enter_permille;
        rodata.thrash_exit_permille = policy.thrash.exit_permille;
        rodata.thrash_weight_pct = policy.thrash.weight_pct;
        rodata.thrash_slice_pct = policy.thrash.slice_pct;
        rodata.thrash_cpus_pct = policy.thrash.cpus_pct;
        rodata.nr_cpus = nr_cpus as u32;
        rodata.slice_ns = opts.slice_us * 1000;
        rodata.cgrp_slice_ns = opts.cgroup_slice_ns();
        rodata.wake_preempt = !opts.no_wake_preempt;
        rodata.herd_control = !opts.no_herd_control;
        rodata.use_kernel_bandwidth = bw_source == BandwidthSource::Kernel;
        rodata.borrowing = opts.enable_borrowing;
        let guard_cgid = match (&cells, opts.mem_arbitration) {
            (Some(CellManager { dir: Some(dir), .. }), true) => {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(dir).with_context(|| format!("--mem-arbitration: {}", dir.display()))?.ino()
            }
            _ => 0,
        };
        write_mem_cfg(&mut skel.maps.data_data.as_mut().unwrap().mem_cfg, &policy.memory, guard_cgid);

        let mut skel = scx_ops_load!(skel, agentcg_ops, uei)?;
        let struct_ops = Some(scx_ops_attach!(skel, agentcg_ops)?);
        info!(
            "attached: slice {} us, cgroup slice {} us, wake preemption {}, herd control {}",
            opts.slice_us,
            opts.cgroup_slice_ns() / 1000,
            if opts.no_wake_preempt { "off" } else { "on" },
            if opts.no_herd_control { "off" } else { "on" }
        );

        let (memcg_ops_link, memcg_ops_state) = if want_memcg_ops {
            let target = std::path::Path::new(CGROUP2_ROOT)
                .join(opts.cell_parent_cgroup.as_deref().unwrap_or("").trim_matches('/'));
            match memcg_ops::load(&skel, &policy, &target) {
                Ok(link) => {
                    info!("memcg_ops: loaded (struct memcg_bpf_ops)");
                    (Some(link), "loaded".to_string())
                }
                // under auto an interface that will not load is not ours to
                // insist on: the scheduler runs without it
                Err(e) if opts.memcg_ops == memcg_ops::MemcgOpsMode::Auto => {
                    warn!(
                        "memcg_ops: not loaded, running without them ({e:#}); mainline memory handling only \
                         (--memcg-ops on makes this an error, off skips the attempt)"
                    );
                    (None, "failed".to_string())
                }
                Err(e) => return Err(e.context("--memcg-ops on")),
            }
        } else {
            match opts.memcg_ops {
                memcg_ops::MemcgOpsMode::Off => info!("memcg_ops: off (--memcg-ops off)"),
                _ => info!(
                    "memcg_ops: unsupported: {} (an unmerged interface); mainline memory handling only",
                    memcg_probe.reason
                ),
            }
            (
                None,
                if opts.memcg_ops == memcg_ops::MemcgOpsMode::Off { "off" } else { "unsupported" }.to_string(),
            )
        };
        let esc_stop = Arc::new(AtomicBool::new(false));
        let (esc_stats, esc_policy, esc_thread) = match escalator {
            Some(e) => {
                let (st, pol) = (e.stats_handle(), e.policy_handle());
                let cfg = &policy.escalation;
                info!(
                    "mem-escalation: on for the sessions of {} (throttle at full avg10 > {} %, freeze at > {} % after {} ms, kill after {} ms frozen, thaw below {} %)",
                    opts.cell_parent_cgroup.as_deref().unwrap_or_default(),
                    cfg.throttle_full_pct,
                    cfg.freeze_full_pct,
                    cfg.freeze_after_ms,
                    cfg.kill_after_ms,
                    cfg.thaw_below_pct
                );
                (Some(st), Some(pol), Some(e.spawn(esc_stop.clone())?))
            }
            None => (None, None, None),
        };

        let (arb_stats, arb_policy, arb_thread) = if guard_cgid != 0 {
            let maps = memory::arbiter::Maps {
                cgrp_ctxs: libbpf_rs::MapHandle::try_from(&skel.maps.cgrp_ctxs)?,
                mem_ctls: libbpf_rs::MapHandle::try_from(&skel.maps.mem_ctls)?,
                mem_order: libbpf_rs::MapHandle::try_from(&skel.maps.mem_order)?,
            };
            let pol = Arc::new(std::sync::Mutex::new(policy.clone()));
            let a = memory::arbiter::Arbiter::new(
                std::path::Path::new(CGROUP2_ROOT).to_path_buf(),
                opts.cell_parent_cgroup.as_deref().unwrap_or_default(),
                policy.memory.clone(),
                pol.clone(),
                maps,
            )?;
            let m = &policy.memory;
            info!(
                "mem-arbitration: on for the sessions of {}: in-kernel guard polls {} every {} us; \
                 pause at {} %, resume below {} %, freeze after {} ms, kill at {} % as the last resort{}; \
                 interactive sessions get memory.low/min{}",
                opts.cell_parent_cgroup.as_deref().unwrap_or_default(),
                mem_signal(),
                m.poll_us,
                m.guard_pct,
                m.resume_pct,
                m.freeze_after_ms,
                m.kill_pct,
                if m.pause { "" } else { " (pause = false: none of this)" },
                if m.oom_prefer_background {
                    "; the OOM killer prefers background sessions (oom_score_adj, memory.oom.group)"
                } else {
                    ""
                }
            );
            (Some(a.stats_handle()), Some(pol), Some(a.spawn(esc_stop.clone())?))
        } else {
            (None, None, None)
        };

        let stats_server = StatsServer::new(stats::server_data())
            .launch()
            .context("starting the stats server")?;
        restrict_stats_socket();

        let cells_rx = match cells.as_ref().and_then(|m| m.dir.clone()) {
            Some(dir) => Some(cells::manager::spawn_watcher(dir)?),
            None => None,
        };
        let mut sched = Self {
            skel,
            opts,
            policy,
            cells,
            cells_rx,
            nr_cpus,
            struct_ops,
            stats_server,
            started: Instant::now(),
            bw_poll: (bw_source == BandwidthSource::Cgroupfs)
                .then(|| Duration::from_millis(opts.bandwidth_poll_ms)),
            bw_applied: BTreeMap::new(),
            memcg_ops_state,
            memcg_ops_link,
            esc_stop,
            esc_stats,
            esc_policy,
            esc_thread,
            arb_stats,
            arb_policy,
            arb_thread,
            metrics_rx: None,
            registry: None,
            registry_rx: None,
        };
        if sched.bw_poll.is_some() {
            sched.poll_bandwidth();
        }
        sched.write_profiles()?;
        if let Some(m) = &sched.cells {
            let whose = match (&m.dir, &opts.registry_socket) {
                (Some(d), Some(_)) => format!("the children of {} and the registered cgroups", d.display()),
                (Some(d), None) => format!("the children of {}", d.display()),
                (None, _) => "the registered cgroups".to_string(),
            };
            info!(
                "cells: sessions are {whose} (max {} cells, system cell >= {} CPUs, borrowing {}, rebalancing {}{})",
                opts.max_cells,
                opts.system_cell_min_cpus,
                if opts.enable_borrowing { "on" } else { "off" },
                if opts.enable_rebalancing { "on" } else { "off" },
                if opts.partial { ", partial: only the managed tree runs here" } else { "" }
            );
            sched.apply_cells(true);
        }
        Ok(sched)
    }

    /// Write the policy's profiles to the BPF side (index i + 1).
    fn write_profiles(&mut self) -> Result<()> {
        let max = bpf_intf::agentcg_consts_AGENTCG_MAX_PROFILES as usize;
        if self.policy.profiles.len() >= max {
            bail!("the policy has {} profiles; at most {} are supported", self.policy.profiles.len(), max - 1);
        }
        for i in 1..max {
            let cfg = self
                .policy
                .profiles
                .get(i - 1)
                .map(profile_cfg)
                // SAFETY: an all-zero profile_cfg (plain integers) is "no profile".
                .unwrap_or(unsafe { std::mem::zeroed() });
            // SAFETY: profile_cfg is plain integers.
            let bytes = unsafe {
                std::slice::from_raw_parts(&cfg as *const _ as *const u8, std::mem::size_of_val(&cfg))
            };
            self.skel
                .maps
                .profiles
                .update(&(i as u32).to_ne_bytes(), bytes, MapFlags::ANY)
                .context("writing policy profiles")?;
        }
        let boost = self.policy.profiles.iter().any(|p| p.wakeup_boost && p.burst_credit_ms > 0);
        self.skel.maps.bss_data.as_mut().unwrap().boost_on = boost as u32;
        Ok(())
    }

    /// SIGHUP: reload the policy; a bad file keeps the old policy.
    fn reload_policy(&mut self) {
        let Some(path) = self.opts.policy.clone() else {
            info!("SIGHUP: no --policy file to reload");
            return;
        };
        match load_policy(Some(&path)).and_then(|p| check_policy_scope(&p, self.opts.has_sessions(), self.opts.partial).map(|_| p)) {
            Ok(p) => {
                if let Some(h) = &self.esc_policy {
                    if let Ok(mut g) = h.lock() {
                        *g = Some(p.clone());
                    }
                }
                if let Some(h) = &self.arb_policy {
                    if let Ok(mut g) = h.lock() {
                        *g = p.clone();
                    }
                    let data = self.skel.maps.data_data.as_mut().unwrap();
                    let guard = data.mem_cfg.guard_cgid;
                    write_mem_cfg(&mut data.mem_cfg, &p.memory, guard);
                }
                let fixed = self.policy.thrash.changes(&p.thrash);
                // what BPF runs with: the [thrash] of the load
                let loaded_thrash = self.policy.thrash;
                self.policy = p;
                self.policy.thrash = loaded_thrash;
                if let Some(m) = self.memcg_ops_link.as_mut() {
                    m.set_curves(&self.policy);
                }
                let names: Vec<String> = self.policy.profiles.iter().map(|p| p.name.clone()).collect();
                for e in self.registry.iter().flat_map(|r| r.without_profile(&names)) {
                    warn!(
                        "registry: session {} names profile {}, which the reloaded policy has no more: \
                         it runs without a profile until it is registered with another",
                        e.reg.session, e.reg.profile
                    );
                }
                match self.write_profiles() {
                    Ok(()) => info!("policy {} reloaded ({} profiles)", path.display(), self.policy.profiles.len()),
                    Err(e) => warn!("policy reload: {e:#}"),
                }
                if !fixed.is_empty() {
                    warn!(
                        "policy reload: [thrash] changed ({}), but it is fixed when the scheduler loads: it stays as it \
                         was until scx_agentcg restarts; the rest of the policy is applied",
                        fixed.join(", ")
                    );
                }
                self.apply_cells(true);
            }
            Err(e) => warn!("policy reload failed, keeping the previous policy: {e:#}"),
        }
    }

    /// --timer-slack-ns: the tasks of interactive steps get the slack (new
    /// tasks within a rescan period; others keep theirs).
    fn apply_timer_slack(&self) {
        let (Some(m), ns) = (&self.cells, self.opts.timer_slack_ns) else {
            return;
        };
        if ns == 0 {
            return;
        }
        for sp in m.last_plan.steps.values() {
            let interactive = sp
                .profile
                .as_deref()
                .and_then(|n| self.policy.profile_index(n))
                .map(|i| self.policy.profiles[i].class == policy::StepClass::Interactive)
                .unwrap_or(false);
            if !interactive {
                continue;
            }
            let dir = m.root.join(&sp.session_rel).join(&sp.name);
            let (ok, _, errors) = timerslack::apply(timerslack::tids_of_cgroup(&dir).into_iter(), ns);
            if ok > 0 {
                debug!("--timer-slack-ns: {} tasks of {}", ok, dir.display());
            }
            for e in errors.iter().take(1) {
                warn!("--timer-slack-ns: {}: {e}", dir.display());
            }
        }
    }

    fn online_cpus(&self) -> CpuSet {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|s| CpuSet::parse_list(s.trim()).ok())
            .map(|s| s.first_n(self.nr_cpus))
            .unwrap_or_else(|| (0..self.nr_cpus).collect())
    }

    /// Recompute the cell layout and install it if it changed (or @force).
    fn apply_cells(&mut self, force: bool) {
        let online = self.online_cpus();
        let Some(m) = self.cells.as_mut() else {
            return;
        };
        m.debounce.clear(Instant::now());
        let registered: Vec<cells::manager::Registered> = self
            .registry
            .iter()
            .flat_map(|r| r.entries())
            .map(|e| cells::manager::Registered {
                name: e.reg.session.clone(),
                rel: e.rel.clone(),
                ino: e.ino,
                profile: e.reg.profile.clone(),
            })
            .collect();
        let plan = match m.scan_and_plan(online, &self.policy, &registered) {
            Ok(p) => p,
            Err(e) => {
                warn!("cells: {e:#}; keeping the current layout");
                m.first_event = None;
                return;
            }
        };
        let same = plan.domains == m.last_plan.domains
            && plan.assign == m.last_plan.assign
            && plan.yield_cpus == m.last_plan.yield_cpus;
        if same && !force {
            m.first_event = None;
            return;
        }
        if let Err(e) = cells::manager::stage(&mut self.skel, &plan, self.nr_cpus, &mut m.written) {
            warn!("cells: {e:#}; will retry");
            return;
        }
        let yielding: Vec<&str> =
            self.policy.profiles.iter().filter(|p| p.yield_to_interactive).map(|p| p.name.as_str()).collect();
        let bss = self.skel.maps.bss_data.as_mut().unwrap();
        bss.yield_cpus = plan.yield_cpus.words();
        bss.yield_on = !yielding.is_empty() as u32;
        if !yielding.is_empty() && plan.yield_cpus != m.last_plan.yield_cpus {
            info!(
                "yield: while interactive work is runnable, profile {} runs on CPUs {}",
                yielding.join(", "),
                plan.yield_cpus
            );
        }
        m.nr_applies += 1;
        if let Some(t) = m.first_event.take() {
            m.last_latency_us = t.elapsed().as_micros() as u64;
        }
        if plan.domains != m.last_plan.domains || plan.cell_names != m.last_plan.cell_names {
            let desc: Vec<String> = plan
                .cell_names
                .iter()
                .map(|(c, n)| format!("{n}={}", plan.domains[*c as usize]))
                .collect();
            info!("cells applied: {}", desc.join(" "));
        }
        for n in plan.notes.iter().filter(|n| !m.last_plan.notes.contains(n)) {
            info!("cells: {n}");
        }
        m.last_plan = plan;
        if self.opts.partial {
            self.switch_partial();
        }
        self.write_step_memory();
    }

    /// Answer one registry request; a change re-plans the cells at once.
    fn registry_request(&mut self, req: &registry_proto::Request) -> registry_proto::Reply {
        let Some(reg) = self.registry.as_mut() else {
            return registry_proto::Reply::err("no registry");
        };
        let profiles: Vec<String> = self.policy.profiles.iter().map(|p| p.name.clone()).collect();
        // the managed parent's children are its sessions already
        let parent = self.cells.as_ref().map(|m| m.parent_rel().to_string()).unwrap_or_default();
        let children: Vec<String> = match self.cells.as_ref().and_then(|m| m.dir.as_ref()) {
            Some(d) => cells::scan_sessions(d).map(|v| v.into_iter().map(|s| s.name).collect()).unwrap_or_default(),
            None => Vec::new(),
        };
        let (reply, changed) = reg.apply(req, &profiles, &registry::taken_by_parent(&parent, &children));
        if changed {
            self.apply_cells(false);
        }
        reply
    }

    /// --partial: the managed tree's tasks and the registered sessions' go
    /// to SCHED_EXT, except the sessions whose profile keeps them on the
    /// fair class (cpu_mode = "cfs"), whose tasks go back there.
    fn switch_partial(&self) {
        let Some(m) = &self.cells else {
            return;
        };
        let fair: Vec<std::path::PathBuf> = m.last_plan.fair_sessions.iter().map(|r| m.root.join(r)).collect();
        if let Some(d) = &m.dir {
            partial::set_tree_class(d, true, &fair);
        }
        for e in self.registry.iter().flat_map(|r| r.entries()) {
            partial::set_tree_class(&m.root.join(&e.rel), true, &fair);
        }
        for d in &fair {
            partial::set_tree_class(d, false, &[]);
        }
    }

    /// With the memcg BPF ops loaded: every step's class and protection
    /// budget in the step_mems map, each value written whole (BPF never
    /// writes that map, so nothing of BPF's is lost); steps no longer in
    /// the plan are dropped from it.
    fn write_step_memory(&mut self) {
        let (Some(m), Some(_)) = (&self.cells, &self.memcg_ops_link) else {
            return;
        };
        let steps: Vec<(u64, u32, Option<u64>)> = m
            .last_plan
            .steps
            .iter()
            .filter_map(|(cgid, sp)| {
                let p = &self.policy.profiles[self.policy.profile_index(sp.profile.as_deref()?)?];
                Some((*cgid, p.class.code(), p.protect_low))
            })
            .collect();
        let n_interactive = steps.iter().filter(|s| s.1 == policy::StepClass::Interactive.code()).count();
        // protection for all interactive steps together: a quarter of memory
        let total = memory_total_bytes() / 4;
        let map = &self.skel.maps.step_mems;
        let live: std::collections::BTreeSet<u64> = steps.iter().map(|s| s.0).collect();
        for key in map.keys() {
            if key.len() == 8 && !live.contains(&u64::from_ne_bytes(key[..8].try_into().unwrap())) {
                let _ = map.delete(&key);
            }
        }
        for (cgid, class, protect) in steps {
            let key = cgid.to_ne_bytes();
            let v = bpf_intf::step_mem {
                class,
                pad: 0,
                protect_bytes: match (class == policy::StepClass::Interactive.code(), protect) {
                    (true, Some(per)) => memcg_ops::protect_budget(total, per, n_interactive as u32),
                    _ => 0,
                },
            };
            // SAFETY: step_mem is plain integers; the slice covers exactly the value.
            let bytes = unsafe {
                std::slice::from_raw_parts(&v as *const _ as *const u8, std::mem::size_of_val(&v))
            };
            if let Err(e) = map.update(&key, bytes, MapFlags::ANY) {
                warn!("memcg_ops: step cgroup {cgid}: {e}");
            }
        }
    }

    /// --enable-rebalancing: feed per-cell utilisation to the rebalancer.
    fn rebalance(&mut self) {
        let Some(m) = self.cells.as_mut() else {
            return;
        };
        let now = Instant::now();
        let bss = self.skel.maps.bss_data.as_ref().unwrap();
        let nr = m.last_plan.nr_cells as usize;
        let elapsed = m.prev_at.map(|t| now.duration_since(t).as_secs_f64()).unwrap_or(0.0);
        let mut util = Vec::with_capacity(nr);
        let mut cpus = Vec::with_capacity(nr);
        for c in 0..nr {
            let used = bss.cell_stats[c].used_ns;
            let prev = m.prev_used.insert(c as u32, used).unwrap_or(used);
            util.push(if elapsed > 0.0 { cgroups::counter_delta(used, prev) as f64 / 1e9 / elapsed } else { 0.0 });
            cpus.push(m.last_plan.domains[c].len());
        }
        m.prev_at = Some(now);
        if elapsed <= 0.0 || !m.opts.rebalancing {
            return;
        }
        if let Some(demand) = m.rebalancer.observe(&util, &cpus, now) {
            debug!("rebalancing cells by demand {demand:?}");
            m.demand = Some(demand.iter().enumerate().map(|(c, d)| (c as u32, *d)).collect());
            self.apply_cells(false);
        }
    }

    /// cgroupfs bandwidth source: read every cgroup's cpu.max and apply
    /// what changed since the last poll.
    fn poll_bandwidth(&mut self) {
        let mut cur = BTreeMap::new();
        for dir in cgroups::walk(std::path::Path::new(CGROUP2_ROOT), MAX_CGROUPS_SCANNED) {
            match bandwidth::read_limit(&dir.path) {
                Ok(Some(lim)) => {
                    cur.insert(dir.id, lim);
                }
                Ok(None) => {}
                Err(e) => debug!("{}: {e}", dir.path.display()),
            }
        }
        let mut failed = Vec::new();
        for (cgid, lim) in bandwidth::changes(&self.bw_applied, &cur) {
            let mut args = bpf_intf::bw_args {
                cgid,
                period_us: lim.period_us,
                quota_us: lim.quota_arg(),
                burst_us: lim.burst_us,
            };
            let input = libbpf_rs::ProgramInput {
                // SAFETY: bw_args is plain data; the slice covers exactly it.
                context_in: Some(unsafe {
                    std::slice::from_raw_parts_mut(
                        &mut args as *mut _ as *mut u8,
                        std::mem::size_of_val(&args),
                    )
                }),
                ..Default::default()
            };
            match self.skel.progs.agentcg_set_bandwidth.test_run(input) {
                Ok(out) if out.return_value == 0 => {
                    debug!("cpu.max of cgroup {cgid}: {:?}", lim);
                }
                Ok(out) => {
                    warn!(
                        "applying cpu.max to cgroup {cgid} failed (error {}); retrying at the next poll",
                        out.return_value as i32
                    );
                    failed.push(cgid);
                }
                Err(e) => {
                    warn!("applying cpu.max to cgroup {cgid} failed: {e}; retrying at the next poll");
                    failed.push(cgid);
                }
            }
        }
        self.bw_applied = bandwidth::settle(&self.bw_applied, cur, &failed);
    }

    /// Per-CPU counters summed over CPUs.
    fn read_counters(&self) -> Vec<u64> {
        let n = bpf_intf::agentcg_stat_idx_AGENTCG_NR_STATS;
        (0..n)
            .map(|idx| {
                let key = (idx as u32).to_ne_bytes();
                match self.skel.maps.stats.lookup_percpu(&key, MapFlags::ANY) {
                    Ok(Some(vals)) => vals
                        .iter()
                        .map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8])))
                        .sum(),
                    _ => 0,
                }
            })
            .collect()
    }

    /// Read the BPF context of every cgroup in the tree.
    fn read_cgroups(&self) -> (BTreeMap<String, CgroupSample>, u64, u64) {
        let mut out = BTreeMap::new();
        let (mut active, mut runnable) = (0, 0);
        let root = std::path::Path::new(CGROUP2_ROOT);
        let now = cgroups::monotonic_ns();
        for dir in cgroups::walk(root, MAX_CGROUPS_SCANNED) {
            let Ok(f) = std::fs::File::open(&dir.path) else {
                continue;
            };
            let key = f.as_raw_fd().to_ne_bytes();
            let Ok(Some(val)) = self.skel.maps.cgrp_ctxs.lookup(&key, MapFlags::ANY) else {
                continue;
            };
            if val.len() < std::mem::size_of::<bpf_intf::cgrp_ctx>() {
                continue;
            }
            // SAFETY: the map value is a struct cgrp_ctx (plain integers).
            let c: bpf_intf::cgrp_ctx =
                unsafe { std::ptr::read_unaligned(val.as_ptr() as *const bpf_intf::cgrp_ctx) };
            if c.nr_active > 0 {
                active += 1;
            }
            if c.nr_runnable > 0 {
                runnable += 1;
            }
            let (up, down, act_ns, idle_ns, act_now) = cgroups::activity_now(
                c.act.active_at,
                c.act.idle_at,
                (c.act.nr_up, c.act.nr_down, c.act.active_ns, c.act.idle_ns),
                now,
                bpf_intf::agentcg_consts_AGENTCG_ACT_DEBOUNCE_NS as u64,
            );
            out.insert(
                dir.rel,
                CgroupSample {
                    usage_ns: c.usage_ns,
                    nr_dispatches: c.nr_dispatches,
                    weight: c.weight,
                    hweight: c.hweight_own,
                    nr_runnable: c.nr_runnable,
                    bw_quota_ns: c.bw_quota_ns,
                    bw_period_ns: c.bw_period_ns,
                    bw_burst_ns: c.bw_burst_ns,
                    bw_nr_periods: c.bw_nr_periods,
                    bw_nr_throttled: c.bw_nr_throttled,
                    bw_throttled_ns: c.bw_throttled_ns,
                    bw_throttled: c.bw_throttled != 0,
                    bw_usage_ns: c.bw_usage_ns,
                    bw_max_period_usage_ns: c.bw_max_period_usage,
                    nr_boosts: c.nr_boosts,
                    thr_score: c.thr_score,
                    thr_peak_score: c.thr_peak_score as u32,
                    thr_penalised: c.thr_penalised != 0,
                    thr_penalised_ns: c.thr_penalised_ns
                        + if c.thr_penalised != 0 { now.saturating_sub(c.thr_penalised_at) } else { 0 },
                    thr_nr_penalties: c.thr_nr_penalties,
                    thr_stall_ns: c.thr_stall_total_ns,
                    act_nr_up: up,
                    act_nr_down: down,
                    act_active_ns: act_ns,
                    act_idle_ns: idle_ns,
                    act_active: act_now,
                },
            );
        }
        (out, active, runnable)
    }

    fn snapshot(&self) -> Snapshot {
        let (cgroups, nr_active, nr_runnable) = self.read_cgroups();
        let (mut cells, mut steps) = (BTreeMap::new(), BTreeMap::new());
        let (mut applies, mut latency, mut rebalances) = (0, 0, 0);
        let mut sessions = Vec::new();
        let mut session_profiles = BTreeMap::new();
        if let Some(m) = &self.cells {
            let bss = self.skel.maps.bss_data.as_ref().unwrap();
            for (id, name) in &m.last_plan.cell_names {
                let st = &bss.cell_stats[*id as usize];
                let mask = m.last_plan.domains[*id as usize];
                cells.insert(
                    name.clone(),
                    CellSample {
                        id: *id,
                        cpus: mask.len() as u32,
                        cpulist: mask.to_string(),
                        used_ns: st.used_ns,
                        borrowed_ns: st.borrowed_ns,
                        lent_ns: st.lent_ns,
                    },
                );
            }
            for sp in m.last_plan.steps.values() {
                let key = format!("{}/{}", sp.session, sp.name);
                let boosts = cgroups
                    .get(&format!("{}/{}", sp.session_rel, sp.name))
                    .map(|c| c.nr_boosts)
                    .unwrap_or(0);
                steps.insert(
                    key,
                    StepSample {
                        profile: sp.profile.clone().unwrap_or_default(),
                        cpus: sp.cpus as u32,
                        reservation: sp.reservation.clone(),
                        nr_boosts: boosts,
                    },
                );
            }
            for (id, name) in &m.last_plan.cell_names {
                if *id != 0 {
                    let Some(path) = m.last_plan.cell_paths.get(id).cloned() else { continue };
                    let registered = self
                        .registry
                        .iter()
                        .flat_map(|r| r.entries())
                        .find(|e| e.rel == path)
                        .map(|e| self.policy.profile_index(&e.reg.profile));
                    let prof = match registered {
                        Some(i) => i,
                        None => self.policy.resolve(&path, Some(name), None),
                    };
                    if let Some(i) = prof {
                        let p = &self.policy.profiles[i];
                        session_profiles.insert(path.clone(), (p.name.clone(), p.class.as_str().to_string()));
                    }
                    sessions.push(path);
                }
            }
            applies = m.nr_applies;
            latency = m.last_latency_us;
            rebalances = m.rebalancer.count;
        }
        let maps = &self.skel.maps;
        let map_entries = [
            maps.node_stashes.keys().count() as u64,
            maps.cgrp_cfgs.keys().count() as u64,
            maps.bw_timers.keys().count() as u64,
        ];
        Snapshot {
            sessions,
            session_profiles,
            mode: "schedule".into(),
            observed: BTreeMap::new(),
            memcg_ops: self.memcg_ops_state.clone(),
            escalation: self.esc_stats.as_ref().and_then(|h| h.lock().ok().map(|g| g.clone())),
            arbitration: self.arb_stats.as_ref().and_then(|h| h.lock().ok().map(|g| g.clone())),
            map_entries,
            cells,
            steps,
            cell_applies: applies,
            cell_apply_latency_us: latency,
            rebalances,
            at_ns: self.started.elapsed().as_nanos() as u64,
            nr_cpus: self.skel.maps.rodata_data.as_ref().unwrap().nr_cpus as u64,
            nr_runnable_cgroups: nr_runnable,
            nr_active_cgroups: nr_active,
            counters: self.read_counters(),
            cgroups,
            hweight_one: bpf_intf::agentcg_consts_AGENTCG_HWEIGHT_ONE as u64,
        }
    }

    fn exited(&mut self) -> bool {
        uei_exited!(&self.skel, uei)
    }

    fn run(&mut self, shutdown: Arc<AtomicBool>) -> Result<UserExitInfo> {
        let (res_ch, req_ch) = self.stats_server.channels();
        let tick = self.bw_poll.unwrap_or(Duration::from_millis(250)).min(Duration::from_millis(250));
        let never = crossbeam::channel::never();
        let cells_rx = self.cells_rx.clone().unwrap_or_else(|| never.clone());
        let metrics_rx = self.metrics_rx.clone().unwrap_or_else(crossbeam::channel::never);
        let registry_rx = self.registry_rx.clone().unwrap_or_else(crossbeam::channel::never);
        let mut next_prune = Instant::now();
        let mut next_poll = Instant::now();
        // the tree is rescanned now and then for what inotify cannot see
        // (cpu.weight, cpuset.cpus, step commands)
        let rescan = Duration::from_secs(1);
        let mut next_rescan = Instant::now() + rescan;
        let mut next_slack = Instant::now();
        let rebalance = Duration::from_millis(500);
        let mut next_rebalance = Instant::now() + rebalance;
        while !shutdown.load(Ordering::Relaxed) && !self.exited() {
            let now = Instant::now();
            if RELOAD.swap(false, Ordering::Relaxed) {
                self.reload_policy();
            }
            if self.opts.timer_slack_ns != 0 && now >= next_slack {
                self.apply_timer_slack();
                next_slack = now + Duration::from_millis(500);
            }
            if let Some(intv) = self.bw_poll {
                if now >= next_poll {
                    self.poll_bandwidth();
                    next_poll = now + intv;
                }
            }
            if now >= next_prune {
                // registered cgroups that are gone leave at once
                if self.registry.as_mut().is_some_and(|r| !r.prune().is_empty()) {
                    if let Some(m) = self.cells.as_mut() {
                        m.event(now);
                    }
                }
                next_prune = now + Duration::from_millis(250);
            }
            if let Some(m) = &self.cells {
                if m.debounce.due(now) {
                    self.apply_cells(false);
                } else if now >= next_rescan {
                    self.apply_cells(false);
                    next_rescan = now + rescan;
                    if self.opts.partial {
                        self.switch_partial();
                    }
                }
                if now >= next_rebalance {
                    self.rebalance();
                    next_rebalance = now + rebalance;
                }
            }
            let mut timeout = tick;
            if let Some(d) = self.cells.as_ref().and_then(|m| m.debounce.next_deadline()) {
                timeout = timeout.min(d.saturating_duration_since(Instant::now()));
            }
            crossbeam::select! {
                recv(req_ch) -> r => {
                    r?;
                    res_ch.send(self.snapshot())?;
                }
                recv(metrics_rx) -> r => {
                    if let Ok(tx) = r {
                        let _ = tx.send(self.snapshot());
                    }
                }
                recv(registry_rx) -> r => {
                    if let Ok((req, tx)) = r {
                        let _ = tx.send(self.registry_request(&req));
                    }
                }
                recv(cells_rx) -> r => {
                    if r.is_ok() {
                        while cells_rx.try_recv().is_ok() {}
                        if let Some(m) = self.cells.as_mut() {
                            m.event(Instant::now());
                        }
                    }
                }
                default(timeout) => {}
            }
        }
        self.esc_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.esc_thread.take() {
            let _ = t.join(); // thaws what it froze
        }
        if let Some(t) = self.arb_thread.take() {
            let _ = t.join(); // thaws, withdraws protection
        }
        let _ = self.memcg_ops_link.take();
        let _ = self.struct_ops.take();
        uei_report!(&self.skel, uei)
    }
}

impl Drop for Scheduler<'_> {
    fn drop(&mut self) {
        info!("unregistering {SCHEDULER_NAME}");
    }
}

/// Load the scheduler object (never attached) and run the memcg_ops delay
/// curve self-test in it.
fn memcg_selftest(open_object: &mut MaybeUninit<OpenObject>) -> Result<usize> {
    let nr_cpus = libbpf_rs::num_possible_cpus().context("counting possible CPUs")?;
    let skel_builder = BpfSkelBuilder::default();
    let mut skel = scx_ops_open!(skel_builder, open_object, agentcg_ops, None::<libbpf_rs::libbpf_sys::bpf_object_open_opts>)?;
    thrash_hooks(&mut skel, thrash::ThrashHooks::Auto);
    skel.maps.rodata_data.as_mut().unwrap().nr_cpus = nr_cpus as u32;
    let skel = scx_ops_load!(skel, agentcg_ops, uei)?;
    memcg_ops::selftest(&skel)
}

/// MemTotal of /proc/meminfo in bytes (0 if unreadable).
/// The BPF memory guard's settings from `[memory]`; @guard_cgid 0 (or
/// pause = false) keeps it idle.
fn write_mem_cfg(c: &mut bpf_skel::types::mem_cfg, m: &memory::MemoryConfig, guard_cgid: u64) {
    c.guard_cgid = guard_cgid;
    c.poll_ns = m.poll_us * 1000;
    c.gap_ns = m.pause_gap_ms * 1_000_000;
    c.hold_max_ns = memory::HOLD_MAX_MS * 1_000_000;
    c.rest_ns = memory::HOLD_REST_MS * 1_000_000;
    // pause = false: a guard line no fill reaches
    c.guard_permille = if m.pause { memory::MemoryConfig::permille(m.guard_pct) } else { u32::MAX };
    c.resume_permille = memory::MemoryConfig::permille(m.resume_pct);
}

pub fn memory_total_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// What the in-kernel guard reads, and what this kernel offers beside it.
fn mem_signal() -> String {
    let has = |name: &str| compat::ksym_exists(name).unwrap_or(false);
    let kfuncs = ["bpf_get_mem_cgroup", "bpf_mem_cgroup_usage", "bpf_put_mem_cgroup"];
    format!(
        "the page counters (memcg->memory usage and max, CO-RE reads from a bpf_timer: the value \
         bpf_mem_cgroup_usage() returns, with no reference to take or drop; this kernel {} the memcg kfuncs)",
        if kfuncs.iter().all(|k| has(k)) { "also has" } else { "lacks" }
    )
}

/// Turn off the memory-pressure hooks this kernel lacks; say what is used.
fn thrash_hooks(skel: &mut bpf_skel::OpenBpfSkel, mode: thrash::ThrashHooks) -> String {
    let has = |name: &str| compat::ksym_exists(name).unwrap_or(false);
    let mut used = Vec::new();
    let mut missing = Vec::new();
    let psi = has("psi_memstall_enter") && has("psi_memstall_leave");
    if psi && mode == thrash::ThrashHooks::Auto {
        used.push("PSI memory stalls (fentry psi_memstall_enter/leave: reclaim, memory.high throttling, refaults)");
        skel.progs.agentcg_reclaim_begin.set_autoload(false);
        skel.progs.agentcg_reclaim_end.set_autoload(false);
    } else {
        skel.progs.agentcg_memstall_enter.set_autoload(false);
        skel.progs.agentcg_memstall_leave.set_autoload(false);
        if !psi {
            missing.push("psi_memstall_enter/leave");
        }
        if has("btf_trace_mm_vmscan_direct_reclaim_begin") && has("btf_trace_mm_vmscan_direct_reclaim_end") {
            used.push("direct reclaim (tracepoints mm_vmscan_direct_reclaim_*)");
        } else {
            skel.progs.agentcg_reclaim_begin.set_autoload(false);
            skel.progs.agentcg_reclaim_end.set_autoload(false);
            missing.push("mm_vmscan_direct_reclaim_*");
        }
    }
    let mut s = if used.is_empty() {
        "no hook available, thrash scores stay 0".to_string()
    } else {
        used.join(", ")
    };
    if !missing.is_empty() {
        s += &format!(" (this kernel lacks {}: not used)", missing.join(", "));
    }
    if psi && mode == thrash::ThrashHooks::Reclaim {
        s += " (--thrash-hooks reclaim: the PSI brackets are not used)";
    }
    s
}

fn init_log(verbose: bool) -> Result<()> {
    let level = if verbose {
        simplelog::LevelFilter::Debug
    } else {
        simplelog::LevelFilter::Info
    };
    let mut cfg = simplelog::ConfigBuilder::new();
    if cfg.set_time_offset_to_local().is_err() {
        // no local time zone in minimal environments: keep UTC
    }
    cfg.set_time_level(simplelog::LevelFilter::Error)
        .set_location_level(simplelog::LevelFilter::Off)
        .set_target_level(simplelog::LevelFilter::Off)
        .set_thread_level(simplelog::LevelFilter::Off);
    simplelog::TermLogger::init(
        level,
        cfg.build(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Auto,
    )?;
    Ok(())
}

fn main() -> Result<()> {
    let opts = Opts::parse();


    if opts.version {
        println!("{} {}", SCHEDULER_NAME, version());
        return Ok(());
    }
    if opts.help_stats {
        stats::server_data().describe_meta(&mut std::io::stdout(), None)?;
        return Ok(());
    }
    init_log(opts.verbose)?;
    match &opts.command {
        Some(Command::Run(args)) => std::process::exit(launcher::run(args)?),
        Some(Command::Registry(args)) => std::process::exit(registry_cli::run(args)?),
        Some(Command::Hook(args)) => std::process::exit(hook::run(args, std::io::stdin().lock())),
        None => {}
    }
    opts.validate()?;
    if opts.selftest_memcg_curve {
        let mut open_object = MaybeUninit::uninit();
        let n = memcg_selftest(&mut open_object)?;
        println!("memcg_ops delay curve self-test: the BPF curve matches the Rust one on all {n} cases");
        return Ok(());
    }

    let shutdown = Arc::new(AtomicBool::new(false));
    let shutdown_clone = shutdown.clone();
    ctrlc::set_handler(move || {
        shutdown_clone.store(true, Ordering::Relaxed);
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGHUP,
            nix::sys::signal::SigHandler::Handler(on_sighup),
        )
    }
    .context("installing the SIGHUP handler")?;

    if let Some(intv) = opts.monitor.or(opts.stats) {
        let shutdown_copy = shutdown.clone();
        let jh = std::thread::spawn(move || {
            match stats::monitor(Duration::from_secs_f64(intv), shutdown_copy) {
                Ok(_) => debug!("stats monitor thread finished"),
                Err(e) => warn!("stats monitor thread finished with an error: {e}"),
            }
        });
        if opts.monitor.is_some() {
            let _ = jh.join();
            return Ok(());
        }
    }

    if !std::path::Path::new("/sys/kernel/sched_ext").exists() {
        bail!(
            "this kernel has no sched_ext (/sys/kernel/sched_ext is missing): \
             boot a kernel built with CONFIG_SCHED_CLASS_EXT=y"
        );
    }

    // bound once: the address outlives scheduler restarts
    let metrics_rx = match opts.metrics_addr {
        Some(addr) => Some(metrics::spawn(addr, shutdown.clone())?),
        None => None,
    };
    // bound once too; the registrations survive a restart
    let registry_rx = match &opts.registry_socket {
        Some(path) => Some(registry::spawn(path, shutdown.clone())?),
        None => None,
    };
    let mut reg = opts.registry_socket.as_ref().map(|_| registry::Registry::new(std::path::Path::new(CGROUP2_ROOT)));
    if opts.observe {
        let mut r = reg.unwrap_or_else(|| registry::Registry::new(std::path::Path::new(CGROUP2_ROOT)));
        return observe::run(&opts, shutdown, metrics_rx, &mut r, registry_rx);
    }
    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        sched.metrics_rx = metrics_rx.clone();
        sched.registry = reg.take();
        sched.registry_rx = registry_rx.clone();
        if sched.registry.as_ref().is_some_and(|r| r.len() > 0) {
            sched.apply_cells(true);
        }
        let ret = sched.run(shutdown.clone());
        reg = sched.registry.take();
        if !ret?.should_restart() {
            break;
        }
        info!("restarting {SCHEDULER_NAME} as the kernel asked");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Opts> {
        let mut v = vec!["scx_agentcg"];
        v.extend_from_slice(args);
        let o = Opts::try_parse_from(v)?;
        o.validate()?;
        Ok(o)
    }

    #[test]
    fn defaults_are_valid() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.slice_us, 3000);
        assert_eq!(o.cgroup_slice_ns(), 3_000_000);
        assert!(!o.no_wake_preempt);
    }

    #[test]
    fn policy_selectors_need_the_managed_tree() {
        let with = Policy::parse_str(
            "[profile.a]\nclass = \"tool\"\n[[select]]\nprofile = \"a\"\npath = \"x\"\n",
            "p.toml",
        )
        .unwrap();
        let e = check_policy_scope(&with, false, false).unwrap_err().to_string();
        assert!(e.contains("--cell-parent-cgroup"), "{e}");
        assert!(check_policy_scope(&with, true, false).is_ok());
        let without = Policy::parse_str("[thrash]\nenter_permille = 300\n", "p.toml").unwrap();
        assert!(check_policy_scope(&without, false, false).is_ok());
        assert!(check_policy_scope(&Policy::builtin(), false, false).is_ok());
    }

    #[test]
    fn a_fair_profile_needs_partial() {
        let fair = Policy::parse_str("[profile.web]\nclass = \"tool\"\ncpu_mode = \"cfs\"\n", "p.toml").unwrap();
        let e = check_policy_scope(&fair, true, false).unwrap_err().to_string();
        assert!(e.contains("web") && e.contains("--partial"), "{e}");
        assert!(check_policy_scope(&fair, true, true).is_ok());
    }

    #[test]
    fn cgroup_slice_defaults_to_task_slice() {
        assert_eq!(parse(&["--slice-us", "500"]).unwrap().cgroup_slice_ns(), 500_000);
        assert_eq!(
            parse(&["-s", "500", "--cgroup-slice-us", "2000"]).unwrap().cgroup_slice_ns(),
            2_000_000
        );
    }

    #[test]
    fn bad_values_are_rejected_with_the_flag_name() {
        let e = parse(&["--slice-us", "5"]).unwrap_err().to_string();
        assert!(e.contains("--slice-us 5"), "{e}");
        let e = parse(&["--cgroup-slice-us", "50"]).unwrap_err().to_string();
        assert!(e.contains("--cgroup-slice-us"), "{e}");
        let e = parse(&["--stats", "0"]).unwrap_err().to_string();
        assert!(e.contains("--stats"), "{e}");
        let e = parse(&["--monitor=-1"]).unwrap_err().to_string();
        assert!(e.contains("--monitor"), "{e}");
        assert!(parse(&["--slice-us", "abc"]).is_err());
        let e = parse(&["--bandwidth-poll-ms", "1"]).unwrap_err().to_string();
        assert!(e.contains("--bandwidth-poll-ms"), "{e}");
        assert!(parse(&["--bandwidth-source", "sometimes"]).is_err());
        assert!(parse(&["--no-such-flag"]).is_err());
    }

    #[test]
    fn usual_scx_flags_parse() {
        let o = parse(&["--stats", "1", "--exit-dump-len", "4096", "-v", "--help-stats"]).unwrap();
        assert_eq!(o.stats, Some(1.0));
        assert_eq!(o.exit_dump_len, 4096);
        assert!(o.verbose && o.help_stats);
        assert!(parse(&["-V"]).unwrap().version);
        assert!(parse(&["--monitor", "0.5"]).unwrap().monitor.is_some());
        assert!(parse(&["--metrics-addr", "127.0.0.1:9464"]).unwrap().metrics_addr.is_some());
        let e = parse(&["--metrics-addr", "127.0.0.1:9464", "--monitor", "1"]).unwrap_err().to_string();
        assert!(e.contains("--monitor runs no scheduler"), "{e}");
        let e = parse(&["--metrics-addr", "9464"]).unwrap_err().to_string();
        assert!(e.contains("IP:PORT"), "{e}");
        let o = parse(&["--registry-socket"]).unwrap();
        assert_eq!(o.registry_socket.as_deref(), Some(std::path::Path::new(registry_proto::DEFAULT_SOCKET)));
        assert!(o.has_sessions());
        // registered sessions are sessions: the cell flags work with them alone
        assert!(parse(&["--registry-socket", "/tmp/r.sock", "--partial", "--enable-borrowing"]).is_ok());
        let e = parse(&["--partial"]).unwrap_err().to_string();
        assert!(e.contains("--cell-parent-cgroup (a managed tree) or --registry-socket"), "{e}");
        let e = parse(&["--registry-socket", "/tmp/r.sock", "--mem-arbitration"]).unwrap_err().to_string();
        assert!(e.contains("--mem-arbitration needs --cell-parent-cgroup"), "{e}");
        assert!(matches!(
            Opts::try_parse_from(["scx_agentcg", "registry", "register", "--id", "c1", "--cgroup", "/a", "--profile", "bg", "--label", "k=v"])
                .unwrap()
                .command,
            Some(Command::Registry(_))
        ));
        assert!(Opts::try_parse_from(["scx_agentcg", "registry", "register", "--id", "c1", "--cgroup", "/a", "--profile", "bg", "--label", "kv"]).is_err());
        assert_eq!(
            parse(&["--bandwidth-source", "cgroupfs"]).unwrap().bandwidth_source,
            BandwidthSource::Cgroupfs
        );
    }
}
