// SPDX-License-Identifier: GPL-2.0-only
//! scx_agentcg: a sched_ext scheduler for machines that run many AI-agent
//! sessions. The BPF side (src/bpf/main.bpf.c) makes every scheduling
//! decision; this side validates options, loads and attaches the scheduler,
//! and serves statistics.

mod bpf_skel;
pub use bpf_skel::*;
pub mod bpf_intf;

mod bandwidth;
mod cgroups;
mod stats;

use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use crossbeam::channel::RecvTimeoutError;
use libbpf_rs::{MapCore, MapFlags, OpenObject};
use log::{debug, info, warn};
use scx_stats::prelude::*;
use scx_utils::build_id;
use scx_utils::compat;
use scx_utils::libbpf_clap_opts::LibbpfOpts;
use scx_utils::{scx_ops_attach, scx_ops_load, scx_ops_open, uei_exited, uei_report};
use scx_utils::UserExitInfo;

use crate::bandwidth::{BandwidthSource, Limit};
use crate::cgroups::{CgroupSample, CGROUP2_ROOT};
use crate::stats::Snapshot;

pub const SCHEDULER_NAME: &str = "scx_agentcg";

/// How many cgroup directories one stats snapshot may visit.
const MAX_CGROUPS_SCANNED: usize = 20_000;

/// scx_agentcg: a sched_ext scheduler for AI-agent sessions.
///
/// Cgroup CPU control with flattened hierarchical weights (derived from the
/// scx_flatcg algorithm) and protection against many child cgroups of a
/// low-weight parent waking together. All scheduling decisions are made in
/// BPF; see src/bpf/main.bpf.c for the design.
#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
pub struct Opts {
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
        for (flag, v) in [("--stats", self.stats), ("--monitor", self.monitor)] {
            if let Some(secs) = v {
                if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
                    bail!("{flag} {secs} is not a valid interval: give seconds between 0 and 3600");
                }
            }
        }
        Ok(())
    }

    pub fn cgroup_slice_ns(&self) -> u64 {
        if self.cgroup_slice_us == 0 {
            self.slice_us * 1000
        } else {
            self.cgroup_slice_us * 1000
        }
    }
}

struct Scheduler<'a> {
    skel: BpfSkel<'a>,
    struct_ops: Option<libbpf_rs::Link>,
    stats_server: StatsServer<(), Snapshot>,
    started: Instant,
    /// cgroupfs bandwidth source: poll interval and what was applied
    bw_poll: Option<Duration>,
    bw_applied: BTreeMap<u64, Limit>,
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
            build_id::full_version(env!("CARGO_PKG_VERSION")),
            nr_cpus
        );

        let mut skel_builder = BpfSkelBuilder::default();
        skel_builder.obj_builder.debug(opts.verbose);
        let open_opts = opts.libbpf.clone().into_bpf_open_opts();
        let mut skel = scx_ops_open!(skel_builder, open_object, agentcg_ops, open_opts)?;

        skel.struct_ops.agentcg_ops_mut().exit_dump_len = opts.exit_dump_len;
        // The last runnable task of a CPU goes through enqueue/dispatch too,
        // so it is charged and its slice is ours to set. Never
        // SCX_OPS_HAS_CGROUP_WEIGHT: 7.x kernels reject it.
        skel.struct_ops.agentcg_ops_mut().flags = *compat::SCX_OPS_ENQ_LAST;

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

        let rodata = skel.maps.rodata_data.as_mut().unwrap();
        rodata.nr_cpus = nr_cpus as u32;
        rodata.slice_ns = opts.slice_us * 1000;
        rodata.cgrp_slice_ns = opts.cgroup_slice_ns();
        rodata.wake_preempt = !opts.no_wake_preempt;
        rodata.herd_control = !opts.no_herd_control;
        rodata.use_kernel_bandwidth = bw_source == BandwidthSource::Kernel;

        let mut skel = scx_ops_load!(skel, agentcg_ops, uei)?;
        let struct_ops = Some(scx_ops_attach!(skel, agentcg_ops)?);
        info!(
            "attached: slice {} us, cgroup slice {} us, wake preemption {}, herd control {}",
            opts.slice_us,
            opts.cgroup_slice_ns() / 1000,
            if opts.no_wake_preempt { "off" } else { "on" },
            if opts.no_herd_control { "off" } else { "on" }
        );

        let stats_server = StatsServer::new(stats::server_data())
            .launch()
            .context("starting the stats server")?;

        let mut sched = Self {
            skel,
            struct_ops,
            stats_server,
            started: Instant::now(),
            bw_poll: (bw_source == BandwidthSource::Cgroupfs)
                .then(|| Duration::from_millis(opts.bandwidth_poll_ms)),
            bw_applied: BTreeMap::new(),
        };
        if sched.bw_poll.is_some() {
            sched.poll_bandwidth();
        }
        Ok(sched)
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
                },
            );
        }
        (out, active, runnable)
    }

    fn snapshot(&self) -> Snapshot {
        let (cgroups, nr_active, nr_runnable) = self.read_cgroups();
        Snapshot {
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
        let mut next_poll = Instant::now();
        while !shutdown.load(Ordering::Relaxed) && !self.exited() {
            if let Some(intv) = self.bw_poll {
                if Instant::now() >= next_poll {
                    self.poll_bandwidth();
                    next_poll = Instant::now() + intv;
                }
            }
            match req_ch.recv_timeout(tick) {
                Ok(()) => res_ch.send(self.snapshot())?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(e) => Err(e)?,
            }
        }
        let _ = self.struct_ops.take();
        uei_report!(&self.skel, uei)
    }
}

impl Drop for Scheduler<'_> {
    fn drop(&mut self) {
        info!("unregistering {SCHEDULER_NAME}");
    }
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
        println!("{} {}", SCHEDULER_NAME, build_id::full_version(env!("CARGO_PKG_VERSION")));
        return Ok(());
    }
    if opts.help_stats {
        stats::server_data().describe_meta(&mut std::io::stdout(), None)?;
        return Ok(());
    }
    opts.validate()?;
    init_log(opts.verbose)?;

    let shutdown = Arc::new(AtomicBool::new(false));
    let shutdown_clone = shutdown.clone();
    ctrlc::set_handler(move || {
        shutdown_clone.store(true, Ordering::Relaxed);
    })
    .context("installing the SIGINT/SIGTERM handler")?;

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

    let mut open_object = MaybeUninit::uninit();
    loop {
        let mut sched = Scheduler::init(&opts, &mut open_object)?;
        if !sched.run(shutdown.clone())?.should_restart() {
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
        assert_eq!(
            parse(&["--bandwidth-source", "cgroupfs"]).unwrap().bandwidth_source,
            BandwidthSource::Cgroupfs
        );
    }
}
