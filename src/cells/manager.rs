// SPDX-License-Identifier: GPL-2.0-only
//! Keeping the BPF side's cells in step with the managed cgroup tree.
//!
//! The manager watches the managed parent (inotify on the parent and on each
//! session directory), and on every change (a lone change at once, a burst
//! coalesced: see [`Debounce`]) recomputes the whole layout: which sessions
//! have cells, each cell's CPUs, each step's mask and profile. It stages
//! that in the BPF object's `.bss` and in the `cgrp_cfgs` map and runs the
//! `agentcg_apply_cells` syscall program, which installs it at once (see
//! src/bpf/cells.bpf.h).
//!
//! Everything that decides (splits, masks, profiles) is a plain function of
//! the scanned tree, tested without BPF: see [`plan`].

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{
    scan_sessions, split_cpus, step_masks, CellTable, CpuSet, Debounce, Rebalancer, Reservation,
    SessionDir, SessionReq, StepReq, StepShare,
};
use crate::bpf_intf;
use crate::policy::{CpuMode, CpuShare, Policy, StepClass};
use crate::yielding::yield_cpus;

/// What one apply decides for one configured cgroup (a `cgrp_cfgs` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupAssign {
    pub cell: u32,
    pub domain: u32,
    /// 1-based index into the policy's profiles, 0 = none
    pub profile: u32,
    pub herd_level: u32,
}

/// A step cgroup as scanned.
#[derive(Clone, Debug, PartialEq)]
pub struct StepDir {
    pub name: String,
    pub ino: u64,
    /// first command name of a task in it, if any
    pub comm: Option<String>,
    /// class recorded by `scx_agentcg run --class` (xattr user.agentcg.class)
    pub class: Option<String>,
}

/// One session as scanned, with the inputs the split needs.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionScan {
    pub name: String,
    /// its path relative to the cgroup2 root (what selectors match)
    pub rel: String,
    /// its depth below the root: the level herd control stops at
    pub level: u32,
    /// the profile its registration names (src/registry.rs), over selectors
    pub profile: Option<String>,
    pub ino: u64,
    pub cell: Option<u32>,
    pub weight: u32,
    pub cpuset: Option<CpuSet>,
    pub steps: Vec<StepDir>,
}

impl SessionScan {
    /// A session as listed, before its cgroup files and steps are read.
    fn new(name: &str, rel: String, level: u32, profile: Option<String>, ino: u64) -> Self {
        SessionScan {
            name: name.to_string(),
            rel,
            level,
            profile,
            ino,
            cell: None,
            weight: 100,
            cpuset: None,
            steps: Vec::new(),
        }
    }
}

/// Per-step outcome, for the stats.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    pub session: String,
    /// the session's path relative to the cgroup2 root
    pub session_rel: String,
    pub name: String,
    pub cpus: usize,
    pub reservation: String,
    pub profile: Option<String>,
}

/// A complete layout, ready to be staged.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// domain masks: cells first (index = cell id), then step masks
    pub domains: Vec<CpuSet>,
    pub domain_cell: Vec<u32>,
    pub nr_cells: u32,
    pub assign: BTreeMap<u64, CgroupAssign>,
    /// cell id -> session name ("system" for cell 0)
    pub cell_names: BTreeMap<u32, String>,
    /// cell id -> the session's path relative to the cgroup2 root
    pub cell_paths: BTreeMap<u32, String>,
    pub steps: BTreeMap<u64, StepPlan>,
    /// sessions whose profile keeps them on the fair class (path below
    /// the cgroup2 root): --partial leaves their tasks there
    pub fair_sessions: Vec<String>,
    /// where yield_to_interactive profiles run while interactive work is
    /// runnable (src/yielding.rs)
    pub yield_cpus: CpuSet,
    pub notes: Vec<String>,
}

impl Plan {
    /// Each CPU's cell and the domains it belongs to (its cell's first).
    pub fn cpu_domains(&self, nr_cpus: usize) -> Vec<(u32, Vec<u32>)> {
        let max = bpf_intf::agentcg_consts_AGENTCG_CPU_DOMAINS as usize;
        (0..nr_cpus)
            .map(|cpu| {
                let cell = (0..self.nr_cells as usize)
                    .find(|&c| self.domains[c].contains(cpu))
                    .unwrap_or(0) as u32;
                let mut doms = vec![cell];
                for d in self.nr_cells as usize..self.domains.len() {
                    if doms.len() < max && self.domains[d].contains(cpu) {
                        doms.push(d as u32);
                    }
                }
                (cell, doms)
            })
            .collect()
    }
}

/// The inputs of [`plan`] that do not come from the tree.
pub struct PlanCfg<'a> {
    pub online: CpuSet,
    pub system_min: usize,
    pub policy: &'a Policy,
    /// per-cell demand from the rebalancer (cell id -> CPUs), if any
    pub demand: Option<&'a BTreeMap<u32, f64>>,
}

fn profile_for(
    policy: &Policy,
    rel: &str,
    session: &str,
    comm: Option<&str>,
    class: Option<&str>,
) -> Option<usize> {
    policy.resolve(rel, Some(session), comm).or_else(|| {
        // no selector: the class the launcher recorded picks the first
        // profile of that class
        let class = class?;
        policy.profiles.iter().position(|p| p.class.as_str() == class)
    })
}

/// Compute the whole layout from a scan of the managed tree.
pub fn plan(cfg: &PlanCfg, sessions: &[SessionScan]) -> Plan {
    let mut out = Plan::default();
    let session_profile = |s: &SessionScan| match &s.profile {
        Some(name) => cfg.policy.profile_index(name),
        None => profile_for(cfg.policy, &s.rel, &s.name, None, None),
    };
    // a session kept on the fair class (cpu_mode = "cfs") gets no cell:
    // its tasks never see this scheduler's CPU masks
    let fair = |s: &SessionScan| {
        session_profile(s).is_some_and(|i| cfg.policy.profiles[i].cpu_mode == CpuMode::Cfs)
    };
    out.fair_sessions = sessions.iter().filter(|s| fair(s)).map(|s| s.rel.clone()).collect();
    let placed: Vec<&SessionScan> = sessions.iter().filter(|s| s.cell.is_some() && !fair(s)).collect();
    let reqs: Vec<SessionReq> = placed
        .iter()
        .map(|s| SessionReq {
            weight: s.weight,
            cpuset: s.cpuset,
            demand: cfg.demand.and_then(|d| d.get(&s.cell.unwrap()).copied()),
        })
        .collect();
    let system_demand = cfg.demand.and_then(|d| d.get(&0).copied());
    let split = split_cpus(&cfg.online, cfg.system_min, &reqs, system_demand);
    out.notes.extend(split.notes.iter().cloned());

    let nr_cells = placed.iter().map(|s| s.cell.unwrap() + 1).max().unwrap_or(1);
    out.nr_cells = nr_cells;
    out.domains = vec![CpuSet::new(); nr_cells as usize];
    out.domain_cell = (0..nr_cells).collect();
    out.domains[0] = split.system;
    out.cell_names.insert(0, "system".into());

    let mut interactive = CpuSet::new();
    for s in sessions {
        let rel = s.rel.clone();
        let session_level = s.level;
        let sprof = session_profile(s);
        let (cell, mask) = match s.cell.and_then(|c| {
            placed
                .iter()
                .position(|p| p.ino == s.ino)
                .map(|i| (c, split.cells[i]))
        }) {
            Some((c, m)) if !m.is_empty() => (c, m),
            Some(_) => {
                out.notes.push(format!("session {} has no CPUs of its own: it runs in the system cell", s.name));
                (0, out.domains[0])
            }
            None => (0, out.domains[0]),
        };
        if cell != 0 {
            if sprof.is_some_and(|i| cfg.policy.profiles[i].class == StepClass::Interactive) {
                interactive = interactive.or(&mask);
            }
            out.domains[cell as usize] = mask;
            out.cell_names.insert(cell, s.name.clone());
            out.cell_paths.insert(cell, rel.clone());
        }
        out.assign.insert(
            s.ino,
            CgroupAssign {
                cell,
                domain: cell,
                profile: sprof.map(|i| i as u32 + 1).unwrap_or(0),
                herd_level: session_level,
            },
        );

        // steps: profiles, and masks (in a session's own cell only)
        let mut step_reqs = Vec::new();
        let mut step_prof = BTreeMap::new();
        for st in &s.steps {
            let srel = format!("{rel}/{}", st.name);
            let prof =
                profile_for(cfg.policy, &srel, &s.name, st.comm.as_deref(), st.class.as_deref())
                    .or(sprof);
            step_prof.insert(st.ino, prof);
            let share = match prof.map(|i| cfg.policy.profiles[i].cpus) {
                Some(CpuShare::Pct(p)) => StepShare::Pct(p.clamp(1, 100)),
                Some(CpuShare::Exclusive(n)) => StepShare::Exclusive(n),
                None => StepShare::Pct(100),
            };
            // cgroup ids grow with creation: first come, first served
            step_reqs.push(StepReq { id: st.ino, share, since: st.ino });
        }
        let masks = if cell != 0 { step_masks(&mask, &step_reqs) } else { Vec::new() };
        let mut shared = mask;
        for m in &masks {
            if let Reservation::Granted(_) = m.reservation {
                shared = shared.andnot(&m.mask);
            }
        }
        let mut dedup: BTreeMap<CpuSet, u32> = BTreeMap::new();
        let mut domain_of = |m: CpuSet, out: &mut Plan, what: &str| -> u32 {
            if m == mask || m.is_empty() {
                return cell;
            }
            if let Some(d) = dedup.get(&m) {
                return *d;
            }
            let max = bpf_intf::agentcg_consts_AGENTCG_MAX_DOMAINS as usize;
            if out.domains.len() >= max {
                out.notes.push(format!("too many step masks: {what} uses its whole cell"));
                return cell;
            }
            let d = out.domains.len() as u32;
            out.domains.push(m);
            out.domain_cell.push(cell);
            dedup.insert(m, d);
            d
        };
        // with reservations, the session's own tasks keep off reserved CPUs
        let sdomain = domain_of(shared, &mut out, &s.name);
        if let Some(a) = out.assign.get_mut(&s.ino) {
            a.domain = sdomain;
        }
        for st in &s.steps {
            let prof = step_prof[&st.ino];
            let (domain, cpus, reservation) = match masks.iter().find(|m| m.id == st.ino) {
                Some(m) => {
                    let reservation = match m.reservation {
                        Reservation::None => "none".to_string(),
                        Reservation::Granted(n) => format!("granted {n}"),
                        Reservation::Denied { wanted } => {
                            out.notes.push(format!(
                                "step {}/{} asked for {wanted} exclusive CPUs but its cell has none left: it shares",
                                s.name, st.name
                            ));
                            format!("denied {wanted}")
                        }
                    };
                    let what = format!("step {}/{}", s.name, st.name);
                    (domain_of(m.mask, &mut out, &what), m.mask.len(), reservation)
                }
                None => (cell, mask.len(), "none".to_string()),
            };
            out.assign.insert(
                st.ino,
                CgroupAssign {
                    cell,
                    domain,
                    profile: prof.map(|i| i as u32 + 1).unwrap_or(0),
                    herd_level: session_level,
                },
            );
            out.steps.insert(
                st.ino,
                StepPlan {
                    session: s.name.clone(),
                    session_rel: rel.clone(),
                    name: st.name.clone(),
                    cpus,
                    reservation,
                    profile: prof.map(|i| cfg.policy.profiles[i].name.clone()),
                },
            );
        }
    }
    out.yield_cpus = yield_cpus(&cfg.online, &split.system, &interactive, cfg.policy.yield_cpus_pct);
    out
}

/// Read a session's weight and cpuset from cgroupfs.
pub fn read_session(dir: &Path) -> (u32, Option<CpuSet>) {
    let weight = std::fs::read_to_string(dir.join("cpu.weight"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100);
    let cpuset = std::fs::read_to_string(dir.join("cpuset.cpus"))
        .ok()
        .filter(|s| !s.trim().is_empty())
        .and_then(|s| CpuSet::parse_list(s.trim()).ok());
    (weight, cpuset)
}

/// The class `scx_agentcg run --class` recorded on a step (user xattr).
pub fn read_class(dir: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let name = c"user.agentcg.class";
    let mut buf = [0u8; 32];
    // SAFETY: valid C strings and a buffer of the length passed.
    let n = unsafe {
        libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr() as *mut libc::c_void, buf.len())
    };
    if n <= 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&buf[..n as usize]).trim().to_string())
}

fn first_comm(dir: &Path) -> Option<String> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    let pid = procs.lines().next()?.trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim().to_string())
}

/// Step directories directly below a session.
pub fn scan_steps(session_dir: &Path) -> Vec<StepDir> {
    let Ok(rd) = std::fs::read_dir(session_dir) else {
        return Vec::new();
    };
    let mut out: Vec<StepDir> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| {
            let path = e.path();
            let ino = std::fs::metadata(&path).ok()?.ino();
            Some(StepDir {
                name: e.file_name().to_string_lossy().into_owned(),
                ino,
                comm: first_comm(&path),
                class: read_class(&path),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Options of the cells feature (from the command line).
#[derive(Clone, Debug)]
pub struct CellOpts {
    /// --cell-parent-cgroup: its children are sessions (None: only
    /// registered sessions)
    pub parent: Option<String>,
    pub exclude: Vec<String>,
    pub max_cells: u32,
    pub system_min_cpus: usize,
    pub rebalancing: bool,
}

/// Check the managed parent before anything is loaded.
pub fn validate_parent(root: &Path, parent: &str) -> Result<PathBuf> {
    if parent.is_empty() || parent.starts_with('/') || parent.split('/').any(|c| c == ".." || c == ".") {
        bail!(
            "--cell-parent-cgroup {parent:?} is not a path relative to the cgroup2 root: \
             give it like \"agentcg\" or \"agents/pool1\""
        );
    }
    if !root.join("cgroup.controllers").exists() {
        bail!(
            "{} is not a cgroup2 mount: scx_agentcg needs the unified cgroup2 hierarchy \
             (boot with systemd.unified_cgroup_hierarchy=1)",
            root.display()
        );
    }
    let dir = root.join(parent.trim_end_matches('/'));
    if !dir.is_dir() {
        bail!(
            "--cell-parent-cgroup: cgroup {} does not exist: create it (mkdir {}) \
             and enable controllers for its children (echo '+cpu +cpuset' > {}/cgroup.subtree_control)",
            parent,
            dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Manager state kept across applies.
pub struct CellManager {
    pub opts: CellOpts,
    /// the cgroup2 mount
    pub root: PathBuf,
    /// the managed parent's directory and level, if there is one
    pub dir: Option<PathBuf>,
    pub parent_level: u32,
    pub table: CellTable,
    pub debounce: Debounce,
    pub rebalancer: Rebalancer,
    pub demand: Option<BTreeMap<u32, f64>>,
    pub last_plan: Plan,
    pub written: BTreeSet<u64>,
    pub nr_applies: u64,
    pub last_latency_us: u64,
    pub first_event: Option<Instant>,
    pub prev_used: BTreeMap<u32, u64>,
    pub prev_at: Option<Instant>,
}

impl CellManager {
    pub fn new(opts: CellOpts, root: &Path) -> Result<Self> {
        let dir = match &opts.parent {
            Some(p) => Some(validate_parent(root, p)?),
            None => None,
        };
        let parent_level = opts.parent.as_deref().map_or(0, |p| p.trim_matches('/').split('/').count() as u32);
        let table = CellTable::new(opts.max_cells, opts.exclude.clone());
        Ok(Self {
            opts,
            root: root.to_path_buf(),
            dir,
            parent_level,
            table,
            debounce: Debounce::new(Duration::from_millis(2), Duration::from_millis(15)),
            rebalancer: Rebalancer::default(),
            demand: None,
            last_plan: Plan::default(),
            written: BTreeSet::new(),
            nr_applies: 0,
            last_latency_us: 0,
            first_event: None,
            prev_used: BTreeMap::new(),
            prev_at: None,
        })
    }

    /// A change was seen in the tree: apply at once or after the burst.
    pub fn event(&mut self, now: Instant) {
        if self.first_event.is_none() {
            self.first_event = Some(now);
        }
        self.debounce.event(now);
    }

    /// The managed parent relative to the cgroup2 root ("" without one).
    pub fn parent_rel(&self) -> &str {
        self.opts.parent.as_deref().unwrap_or("").trim_matches('/')
    }

    /// Scan the managed parent, add the @registered sessions, and compute
    /// the layout. A registered cgroup that is also a child of the parent
    /// is the parent's (the registry refuses such names up front).
    pub fn scan_and_plan(&mut self, online: CpuSet, policy: &Policy, registered: &[Registered]) -> Result<Plan> {
        let mut listing = match &self.dir {
            Some(d) => scan_sessions(d).with_context(|| format!("reading the managed parent {}", d.display()))?,
            None => Vec::new(),
        };
        let parent_rel = self.parent_rel().to_string();
        let mut scans: Vec<SessionScan> = listing
            .iter()
            .map(|sd| SessionScan::new(&sd.name, format!("{parent_rel}/{}", sd.name), self.parent_level + 1, None, sd.ino))
            .collect();
        for r in registered {
            if listing.iter().any(|sd| sd.ino == r.ino || sd.name == r.name) {
                continue;
            }
            listing.push(SessionDir { name: r.name.clone(), ino: r.ino });
            let level = r.rel.split('/').count() as u32;
            scans.push(SessionScan::new(&r.name, r.rel.clone(), level, Some(r.profile.clone()), r.ino));
        }
        let changes = self.table.reconcile(&listing);
        for n in &changes.not_placed {
            log::warn!("session {n}: no cell left (--max-cells {}): it runs in the system cell", self.opts.max_cells);
        }
        for (name, _, cell) in &changes.added {
            log::debug!("session {name}: cell {cell}");
        }
        for (name, _, cell) in &changes.removed {
            log::debug!("session {name} is gone: cell {cell} freed");
        }
        for sc in &mut scans {
            let path = self.root.join(&sc.rel);
            let (weight, cpuset) = read_session(&path);
            sc.cell = self.table.cell_of(sc.ino);
            sc.weight = weight;
            sc.cpuset = cpuset;
            sc.steps = scan_steps(&path);
        }
        let cfg = PlanCfg {
            online,
            system_min: self.opts.system_min_cpus,
            policy,
            demand: self.demand.as_ref(),
        };
        Ok(plan(&cfg, &scans))
    }
}

/// A session from the registry, as the cells see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub name: String,
    /// its cgroup relative to the cgroup2 root
    pub rel: String,
    pub ino: u64,
    pub profile: String,
}

/// Watch the managed parent and its sessions for created and removed
/// directories; every event is reported on the returned channel. The
/// thread ends when the receiver is dropped.
pub fn spawn_watcher(dir: PathBuf) -> Result<crossbeam::channel::Receiver<()>> {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let ino = Inotify::init(InitFlags::IN_CLOEXEC)
        .context("inotify_init failed (raise fs.inotify.max_user_instances?)")?;
    let flags = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ONLYDIR;
    let top = ino
        .add_watch(&dir, flags)
        .with_context(|| format!("watching {}", dir.display()))?;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                let _ = ino.add_watch(&e.path(), flags);
            }
        }
    }
    let (tx, rx) = crossbeam::channel::unbounded();
    std::thread::Builder::new()
        .name("cells-watch".into())
        .spawn(move || loop {
            let Ok(events) = ino.read_events() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            for ev in &events {
                // a new session: watch it for its steps
                if ev.wd == top && ev.mask.contains(AddWatchFlags::IN_ISDIR) {
                    if let Some(name) = &ev.name {
                        let _ = ino.add_watch(&dir.join(name), flags);
                    }
                }
            }
            if tx.send(()).is_err() {
                return;
            }
        })
        .context("starting the cells watcher thread")?;
    Ok(rx)
}

/// Stage @plan in the BPF object and install it with the apply program.
/// `written` holds the cgroup ids configured by the previous apply; those
/// no longer in the plan are removed.
pub fn stage(
    skel: &mut crate::BpfSkel,
    plan: &Plan,
    nr_cpus: usize,
    written: &mut BTreeSet<u64>,
) -> Result<()> {
    use libbpf_rs::{MapCore, MapFlags};
    let words = bpf_intf::agentcg_consts_AGENTCG_MASK_WORDS as usize;
    {
        let bss = skel.maps.bss_data.as_mut().context("no .bss in the BPF object")?;
        let cfg = &mut bss.cells_staged;
        // SAFETY: cells_cfg is plain integers; all-zero is a valid value.
        *cfg = unsafe { std::mem::zeroed() };
        cfg.nr_domains = plan.domains.len() as u32;
        cfg.nr_cells = plan.nr_cells;
        for (d, m) in plan.domains.iter().enumerate() {
            cfg.domain_mask[d][..words].copy_from_slice(&m.words()[..words]);
            cfg.domain_cell[d] = plan.domain_cell[d];
        }
        for (cpu, (cell, doms)) in plan.cpu_domains(nr_cpus).into_iter().enumerate() {
            cfg.cpu_cell[cpu] = cell;
            cfg.cpu_nr_domains[cpu] = doms.len() as u32;
            for (i, d) in doms.iter().enumerate() {
                cfg.cpu_domains[cpu][i] = *d;
            }
        }
    }
    for (id, a) in &plan.assign {
        let val = bpf_intf::cgrp_cfg {
            cell: a.cell,
            domain: a.domain,
            profile: a.profile,
            herd_level: a.herd_level,
        };
        // SAFETY: cgrp_cfg is plain integers.
        let bytes = unsafe {
            std::slice::from_raw_parts(&val as *const _ as *const u8, std::mem::size_of_val(&val))
        };
        skel.maps
            .cgrp_cfgs
            .update(&id.to_ne_bytes(), bytes, MapFlags::ANY)
            .with_context(|| format!("configuring cgroup {id}"))?;
    }
    for id in written.iter().filter(|id| !plan.assign.contains_key(id)) {
        let _ = skel.maps.cgrp_cfgs.delete(&id.to_ne_bytes());
    }
    *written = plan.assign.keys().copied().collect();
    let out = skel
        .progs
        .agentcg_apply_cells
        .test_run(libbpf_rs::ProgramInput::default())
        .context("running the cells apply program")?;
    if out.return_value != 0 {
        bail!("the cells apply program failed (error {})", out.return_value as i32);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &str) -> CpuSet {
        CpuSet::parse_list(list).unwrap()
    }

    fn session(name: &str, ino: u64, cell: Option<u32>, steps: Vec<StepDir>) -> SessionScan {
        SessionScan { cell, steps, ..SessionScan::new(name, format!("agentcg/{name}"), 2, None, ino) }
    }

    fn step(name: &str, ino: u64, class: Option<&str>) -> StepDir {
        StepDir { name: name.into(), ino, comm: None, class: class.map(|c| c.into()) }
    }

    #[test]
    fn sessions_get_disjoint_cells_and_steps_inherit() {
        let policy = Policy::builtin();
        let cfg = PlanCfg {
            online: set("0-7"),
            system_min: 2,
            policy: &policy,
            demand: None,
        };
        let p = plan(
            &cfg,
            &[
                session("a", 10, Some(1), vec![step("s1", 11, None)]),
                session("b", 20, Some(2), vec![]),
                session("x", 30, None, vec![]),
            ],
        );
        assert_eq!(p.nr_cells, 3);
        assert!(p.domains[1].and(&p.domains[2]).is_empty());
        assert!(p.domains[0].len() >= 2);
        assert_eq!(p.assign[&10].cell, 1);
        assert_eq!(p.assign[&11], CgroupAssign { cell: 1, domain: 1, profile: 0, herd_level: 2 });
        assert_eq!(p.assign[&30].cell, 0);
        let cpus = p.cpu_domains(8);
        for (cpu, (cell, doms)) in cpus.iter().enumerate() {
            assert!(p.domains[*cell as usize].contains(cpu));
            assert_eq!(doms[0], *cell);
        }
    }

    #[test]
    fn step_profiles_give_step_masks() {
        let text = r#"
[profile.bg]
class = "background"
cpus_pct = 25
[profile.ex]
class = "tool"
cpus = "exclusive:1"
[[select]]
profile = "bg"
path = "agentcg/*/bg_*"
[[select]]
profile = "ex"
path = "agentcg/*/ex_*"
"#;
        let policy = Policy::parse_str(text, "t.toml").unwrap();
        let cfg = PlanCfg {
            online: set("0-7"),
            system_min: 0,
            policy: &policy,
            demand: None,
        };
        let p = plan(
            &cfg,
            &[session(
                "a",
                10,
                Some(1),
                vec![step("bg_1", 11, None), step("ex_1", 12, None), step("int", 13, Some("interactive"))],
            )],
        );
        let cell = p.domains[1];
        let bg = p.assign[&11];
        let ex = p.assign[&12];
        let int = p.assign[&13];
        assert!(bg.domain >= p.nr_cells && ex.domain >= p.nr_cells);
        let bgm = p.domains[bg.domain as usize];
        let exm = p.domains[ex.domain as usize];
        assert!(bgm.and(&cell) == bgm && exm.and(&cell) == exm);
        assert_eq!(exm.len(), 1);
        assert!(bgm.and(&exm).is_empty(), "the reservation is not shared");
        // siblings keep off the reserved CPU
        assert!(int.domain >= p.nr_cells);
        assert!(p.domains[int.domain as usize].and(&exm).is_empty());
        assert_eq!(p.domains[int.domain as usize].len(), cell.len() - 1);
        assert_eq!(p.assign[&10].domain, int.domain);
        assert_eq!(p.steps[&12].reservation, "granted 1");
        // the class recorded by the launcher picks a profile of that class
        assert_eq!(p.steps[&11].profile.as_deref(), Some("bg"));
    }

    #[test]
    fn a_registered_session_anywhere_gets_its_profile_and_its_own_level() {
        let text = r#"
[profile.bg]
class = "background"
[profile.chat]
class = "interactive"
[[select]]
profile = "chat"
path = "kubepods.slice/*/*"
"#;
        let policy = Policy::parse_str(text, "t.toml").unwrap();
        let cfg = PlanCfg { online: set("0-7"), system_min: 2, policy: &policy, demand: None };
        let mut s = session("pod-a", 40, Some(1), vec![step("tool", 41, None)]);
        s.rel = "kubepods.slice/pod1/cri-c1".into();
        s.level = 3;
        s.profile = Some("bg".into());
        let p = plan(&cfg, &[s.clone()]);
        // the registration's profile (bg, the first) wins over the selector
        assert_eq!(p.assign[&40], CgroupAssign { cell: 1, domain: 1, profile: 1, herd_level: 3 });
        assert_eq!(p.assign[&41].profile, 1, "its steps inherit it");
        assert_eq!(p.assign[&41].herd_level, 3);
        assert_eq!(p.cell_names[&1], "pod-a");
        assert_eq!(p.cell_paths[&1], "kubepods.slice/pod1/cri-c1");
        assert_eq!(p.steps[&41].session_rel, "kubepods.slice/pod1/cri-c1");
        // a profile the policy lost: none, not another one
        s.profile = Some("gone".into());
        assert_eq!(plan(&cfg, &[s]).assign[&40].profile, 0);
    }

    #[test]
    fn a_session_kept_on_the_fair_class_gets_no_cell() {
        let text = "[profile.web]\nclass = \"tool\"\ncpu_mode = \"cfs\"\n[profile.chat]\nclass = \"interactive\"\n";
        let policy = Policy::parse_str(text, "t.toml").unwrap();
        let cfg = PlanCfg { online: set("0-7"), system_min: 2, policy: &policy, demand: None };
        let mut a = session("a", 40, Some(1), vec![]);
        a.profile = Some("web".into());
        let mut b = session("b", 50, Some(2), vec![]);
        b.profile = Some("chat".into());
        let p = plan(&cfg, &[a.clone(), b.clone()]);
        assert_eq!(p.fair_sessions, vec![a.rel.clone()]);
        assert_eq!(p.assign[&40].cell, 0, "the fair session stays in the system cell");
        assert_ne!(p.assign[&50].cell, 0, "the other one has its cell");
        assert!(!p.cell_names.values().any(|n| n == "a"));
        // the same session on the scx class has a cell
        a.profile = Some("chat".into());
        let p = plan(&cfg, &[a, b]);
        assert!(p.fair_sessions.is_empty());
        assert_ne!(p.assign[&40].cell, 0);
    }
}
