// SPDX-License-Identifier: GPL-2.0-only
//! The optional memcg BPF struct_ops (`--memcg-ops`): deciding whether to
//! use it, and the reference math its BPF programs mirror (the
//! `memory.high` delay curve per step class and the protection budget).
//!
//! The memcg BPF ops interface (`struct memcg_bpf_ops`) is an unmerged
//! kernel patch set; scx_agentcg uses it only where the running kernel's
//! BTF has that struct. Everything here is integer arithmetic the BPF side
//! repeats exactly; [`SELFTEST_CASES`] and [`selftest_expected`] are the
//! shared table the BPF self-test runs.

#![allow(dead_code)]

use std::path::Path;

use anyhow::{Context, Result};

/// Whether to attach the memcg BPF ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MemcgOpsMode {
    /// Attach them when the kernel has `struct memcg_bpf_ops`, else run without.
    Auto,
    /// Attach them; refuse to start on a kernel without them.
    On,
    /// Never attach them.
    Off,
}

/// The kernel clamps a `memory.high` delay at 2 s; so does every curve.
pub const MAX_DELAY_MS: u32 = 2000;
/// Largest `start_pct` a curve may have (usage at 11 times `memory.high`).
pub const MAX_START_PCT: u32 = 1000;
/// Largest `slope_ms_per_pct` a curve may have.
pub const MAX_SLOPE_MS_PER_PCT: u32 = 2000;

/// How long a task of a cgroup over its `memory.high` is delayed, as a
/// function of how far over it is (percent of `memory.high`): nothing below
/// `start_pct`, then `base_ms` rising by `slope_ms_per_pct` per percent,
/// at most `max_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayCurve {
    pub start_pct: u32,
    pub base_ms: u32,
    pub slope_ms_per_pct: u32,
    pub max_ms: u32,
}

impl DelayCurve {
    /// Interactive steps: late and gentle.
    pub const INTERACTIVE: DelayCurve = DelayCurve {
        start_pct: 20,
        base_ms: 5,
        slope_ms_per_pct: 1,
        max_ms: 100,
    };
    /// Tool steps (and cgroups without a profile).
    pub const TOOL: DelayCurve = DelayCurve {
        start_pct: 5,
        base_ms: 10,
        slope_ms_per_pct: 5,
        max_ms: 500,
    };
    /// Background steps: early and hard.
    pub const BACKGROUND: DelayCurve = DelayCurve {
        start_pct: 0,
        base_ms: 50,
        slope_ms_per_pct: 20,
        max_ms: 2000,
    };

    /// The default curve of a class code (`StepClass::code()`: 1
    /// interactive, 2 tool, 3 background); 0 (no profile) and anything
    /// else get the tool curve.
    pub fn for_class(code: u32) -> DelayCurve {
        match code {
            1 => Self::INTERACTIVE,
            3 => Self::BACKGROUND,
            _ => Self::TOOL,
        }
    }

    /// Every problem with this curve: (keys involved, the first the one to
    /// change; message). Keys are the policy file's names.
    pub fn problems(&self) -> Vec<(&'static [&'static str], String)> {
        let mut out: Vec<(&'static [&'static str], String)> = Vec::new();
        if self.max_ms > MAX_DELAY_MS {
            out.push((
                &["delay_max_ms"],
                format!("delay_max_ms = {} is above {MAX_DELAY_MS}, the kernel's clamp: use at most {MAX_DELAY_MS}", self.max_ms),
            ));
        }
        if self.start_pct > MAX_START_PCT {
            out.push((
                &["delay_start_pct"],
                format!(
                    "delay_start_pct = {} is out of range: use 0 to {MAX_START_PCT}",
                    self.start_pct
                ),
            ));
        }
        if self.slope_ms_per_pct > MAX_SLOPE_MS_PER_PCT {
            out.push((
                &["delay_slope_ms_per_pct"],
                format!(
                    "delay_slope_ms_per_pct = {} is out of range: use 0 to {MAX_SLOPE_MS_PER_PCT}",
                    self.slope_ms_per_pct
                ),
            ));
        }
        if self.base_ms > self.max_ms {
            out.push((
                &["delay_base_ms", "delay_max_ms"],
                format!(
                    "delay_base_ms = {} is above delay_max_ms = {}: lower delay_base_ms or raise delay_max_ms",
                    self.base_ms, self.max_ms
                ),
            ));
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        crate::policy::problems_result(self.problems())
    }
}

/// The delay (ms) for a cgroup using @usage bytes against its `memory.high`
/// of @high bytes; @credit_ok halves it (the step still has burst credit).
///
/// Exactly, in u64 arithmetic where every `*` and `+` saturates at U64_MAX:
/// 0 if `high == 0` or `usage <= high`; else
/// `overage_pct = (usage - high) * 100 / high`; 0 if
/// `overage_pct < start_pct`; else
/// `d = min(max_ms, base_ms + slope_ms_per_pct * (overage_pct - start_pct))`,
/// `d /= 2` if @credit_ok, and the result is `min(d, 2000)`.
pub fn high_delay_ms(c: &DelayCurve, usage: u64, high: u64, credit_ok: bool) -> u32 {
    if high == 0 || usage <= high {
        return 0;
    }
    let overage_pct = (usage - high).saturating_mul(100) / high;
    let start = c.start_pct as u64;
    if overage_pct < start {
        return 0;
    }
    let rise = (c.slope_ms_per_pct as u64).saturating_mul(overage_pct - start);
    let mut d = (c.base_ms as u64).saturating_add(rise).min(c.max_ms as u64);
    if credit_ok {
        d /= 2;
    }
    d.min(MAX_DELAY_MS as u64) as u32
}

/// The memory protection each interactive cgroup gets: @per_cgroup_bytes,
/// but together no more than @total_bytes: `min(per, total / n)`, 0 when
/// there are no interactive cgroups.
pub fn protect_budget(total_bytes: u64, per_cgroup_bytes: u64, n_interactive: u32) -> u64 {
    if n_interactive == 0 {
        0
    } else {
        per_cgroup_bytes.min(total_bytes / n_interactive as u64)
    }
}

/// Whether @usage is within a (non-zero) protection @budget (memory.low-like).
pub fn below_low(usage: u64, budget: u64) -> bool {
    usage <= budget && budget > 0
}

/// Whether @usage is within half of a (non-zero) protection @budget
/// (memory.min-like).
pub fn below_min(usage: u64, budget: u64) -> bool {
    below_low(usage, budget / 2)
}

/// Inputs of the BPF self-test: (class code, usage bytes, memory.high bytes,
/// credit_ok). Each class and each branch of [`high_delay_ms`] appears;
/// plain literals so the table copies into C as it is.
pub const SELFTEST_CASES: &[(u32, u64, u64, bool)] = &[
    (1, 1000, 0, false),                       // high == 0
    (2, 500, 1000, false),                     // below high
    (2, 1000, 1000, false),                    // exactly at high
    (1, 1100, 1000, false),                    // 10 % over, interactive starts at 20 %
    (1, 1200, 1000, false),                    // at the start: base only
    (1, 1500, 1000, false),                    // on the slope
    (1, 1500, 1000, true),                     // halved by credit (odd: rounds down)
    (1, 3000, 1000, false),                    // capped at max_ms
    (2, 1040, 1000, false),                    // 4 %, tool starts at 5 %
    (2, 1100, 1000, false),                    // on the slope
    (2, 1100, 1000, true),                     // halved
    (2, 2500, 1000, false),                    // capped
    (2, 629145600, 536870912, false),          // 600M against 512M: 17 % truncated
    (3, 1001, 1000, false),                    // 0 % over still counts for background
    (3, 1500, 1000, false),                    // on the slope
    (3, 5000, 1000, true),                     // capped at 2000, then halved
    (0, 1100, 1000, false),                    // no profile: tool curve
    (3, 18446744073709551615, 1048576, false), // overage saturates
];

/// What [`high_delay_ms`] gives for each of [`SELFTEST_CASES`], with the
/// class default curves.
pub fn selftest_expected() -> Vec<u32> {
    SELFTEST_CASES
        .iter()
        .map(|&(class, usage, high, credit)| {
            high_delay_ms(&DelayCurve::for_class(class), usage, high, credit)
        })
        .collect()
}

/// The name of the struct the memcg BPF ops patch set adds.
pub const MEMCG_OPS_STRUCT: &str = "memcg_bpf_ops";

/// The hooks src/bpf/memcg_ops.bpf.c fills in (the v6 interface), which
/// the kernel's struct must have by these names: a struct of another
/// version of the patch set (v7 renamed and dropped hooks) is not used.
pub const MEMCG_OPS_HOOKS: &[&str] =
    &["handle_cgroup_online", "handle_cgroup_offline", "below_low", "below_min", "get_high_delay_ms"];

/// The hooks of [`MEMCG_OPS_HOOKS`] missing from @members (the kernel
/// struct's member names).
pub fn missing_hooks(members: &[String]) -> Vec<&'static str> {
    MEMCG_OPS_HOOKS.iter().copied().filter(|h| !members.iter().any(|m| m == h)).collect()
}

/// What the BTF probe found, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemcgOpsProbe {
    /// the kernel has struct memcg_bpf_ops
    pub present: bool,
    /// ... with every hook the object fills in
    pub usable: bool,
    pub reason: String,
}

/// Look for `struct memcg_bpf_ops` in the running kernel's BTF. No vmlinux
/// BTF at all is not an error: the answer is "absent" with the reason.
pub fn probe_memcg_ops() -> Result<MemcgOpsProbe> {
    let sysfs = Path::new("/sys/kernel/btf/vmlinux");
    let btf = match libbpf_rs::btf::Btf::from_vmlinux() {
        Ok(b) => b,
        Err(e) if !sysfs.exists() => {
            return Ok(MemcgOpsProbe {
                present: false,
                usable: false,
                reason: format!(
                    "the kernel has no BTF ({} is missing: {e})",
                    sysfs.display()
                ),
            })
        }
        Err(e) => return Err(e).context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)"),
    };
    let members: Option<Vec<String>> = btf
        .type_by_kind::<libbpf_rs::btf::types::Struct<'_>>()
        .find(|s| s.name().map(|n| n == MEMCG_OPS_STRUCT).unwrap_or(false))
        .map(|s| {
            (0..s.len())
                .filter_map(|i| s.get(i).and_then(|m| m.name).map(|n| n.to_string_lossy().into_owned()))
                .collect()
        });
    Ok(match members {
        None => MemcgOpsProbe {
            present: false,
            usable: false,
            reason: format!("the kernel's BTF has no struct {MEMCG_OPS_STRUCT}"),
        },
        Some(m) => probe_of_members(&m),
    })
}

/// The probe's answer for a kernel whose struct memcg_bpf_ops has the
/// members @members.
pub fn probe_of_members(members: &[String]) -> MemcgOpsProbe {
    let missing = missing_hooks(members);
    MemcgOpsProbe {
        present: true,
        usable: missing.is_empty(),
        reason: if missing.is_empty() {
            format!("the kernel's BTF has struct {MEMCG_OPS_STRUCT} with the hooks this object fills in")
        } else {
            format!(
                "the kernel's struct {MEMCG_OPS_STRUCT} lacks {} (another version of the patch set than the v6 \
                 this object is built for; it has {})",
                missing.join(", "),
                members.join(", ")
            )
        },
    }
}

/// Whether the running kernel has a `struct memcg_bpf_ops` this object
/// can fill in (false, not an error, when it has no BTF).
pub fn kernel_has_memcg_ops() -> Result<bool> {
    probe_memcg_ops().map(|p| p.usable)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Whether to attach the memcg BPF ops, given the mode and whether the
/// kernel has them; `--memcg-ops on` on a kernel without them is an error.
pub fn decide(mode: MemcgOpsMode, probe: &MemcgOpsProbe) -> Result<bool, String> {
    decide_for(mode, probe, &kernel_release())
}

/// [`decide`] with the kernel release given (for the message).
pub fn decide_for(mode: MemcgOpsMode, probe: &MemcgOpsProbe, release: &str) -> Result<bool, String> {
    match mode {
        MemcgOpsMode::Off => Ok(false),
        MemcgOpsMode::Auto => Ok(probe.usable),
        MemcgOpsMode::On if probe.usable => Ok(true),
        MemcgOpsMode::On => Err(format!(
            "--memcg-ops on: this kernel ({release}): {}; \
             the memcg BPF ops interface is an unmerged patch set; use --memcg-ops auto or off",
            probe.reason
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn mode_parses_like_a_clap_value() {
        assert_eq!(
            MemcgOpsMode::from_str("auto", false),
            Ok(MemcgOpsMode::Auto)
        );
        assert_eq!(MemcgOpsMode::from_str("on", false), Ok(MemcgOpsMode::On));
        assert_eq!(MemcgOpsMode::from_str("off", false), Ok(MemcgOpsMode::Off));
        assert!(MemcgOpsMode::from_str("maybe", false).is_err());
        let names: Vec<String> = MemcgOpsMode::value_variants()
            .iter()
            .map(|v| v.to_possible_value().unwrap().get_name().to_string())
            .collect();
        assert_eq!(names, ["auto", "on", "off"]);
    }

    #[test]
    fn decisions() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let yes = probe_of_members(&names(MEMCG_OPS_HOOKS));
        let no = MemcgOpsProbe { present: false, usable: false, reason: "the kernel's BTF has no struct memcg_bpf_ops".into() };
        // another version of the interface: the struct is there, hooks differ
        let v7 = probe_of_members(&names(&["handle_cgroup_online", "handle_cgroup_offline", "get_high_delay_ms", "memcg_charge"]));
        assert!(yes.usable && v7.present && !v7.usable);
        assert!(v7.reason.contains("lacks below_low, below_min") && v7.reason.contains("memcg_charge"), "{}", v7.reason);
        assert_eq!(decide_for(MemcgOpsMode::Off, &yes, "x"), Ok(false));
        assert_eq!(decide_for(MemcgOpsMode::Auto, &yes, "x"), Ok(true));
        assert_eq!(decide_for(MemcgOpsMode::Auto, &no, "x"), Ok(false));
        // auto on a mismatched interface runs without it
        assert_eq!(decide_for(MemcgOpsMode::Auto, &v7, "x"), Ok(false));
        assert_eq!(decide_for(MemcgOpsMode::On, &yes, "x"), Ok(true));
        let e = decide_for(MemcgOpsMode::On, &no, "6.18.1").unwrap_err();
        assert!(
            e.starts_with("--memcg-ops on: this kernel (6.18.1): the kernel's BTF has no struct memcg_bpf_ops"),
            "{e}"
        );
        assert!(
            e.contains("unmerged patch set") && e.ends_with("use --memcg-ops auto or off"),
            "{e}"
        );
        assert!(decide_for(MemcgOpsMode::On, &v7, "x").unwrap_err().contains("lacks below_low"));
        assert!(decide(MemcgOpsMode::On, &no).unwrap_err().contains("this kernel ("));
    }

    #[test]
    fn probe_answers_on_this_host() {
        // whatever this kernel has, the probe must give an answer and a reason
        let p = probe_memcg_ops().unwrap();
        assert!(
            p.reason.contains("memcg_bpf_ops") || p.reason.contains("no BTF"),
            "{p:?}"
        );
        assert_eq!(kernel_has_memcg_ops().unwrap(), p.usable);
        assert!(p.present || !p.usable);
    }

    #[test]
    fn class_curves() {
        assert_eq!(DelayCurve::for_class(1), DelayCurve::INTERACTIVE);
        assert_eq!(DelayCurve::for_class(2), DelayCurve::TOOL);
        assert_eq!(DelayCurve::for_class(3), DelayCurve::BACKGROUND);
        assert_eq!(DelayCurve::for_class(0), DelayCurve::TOOL);
        assert_eq!(
            DelayCurve::INTERACTIVE,
            DelayCurve {
                start_pct: 20,
                base_ms: 5,
                slope_ms_per_pct: 1,
                max_ms: 100
            }
        );
        assert_eq!(
            DelayCurve::TOOL,
            DelayCurve {
                start_pct: 5,
                base_ms: 10,
                slope_ms_per_pct: 5,
                max_ms: 500
            }
        );
        assert_eq!(
            DelayCurve::BACKGROUND,
            DelayCurve {
                start_pct: 0,
                base_ms: 50,
                slope_ms_per_pct: 20,
                max_ms: 2000
            }
        );
        for c in [
            DelayCurve::INTERACTIVE,
            DelayCurve::TOOL,
            DelayCurve::BACKGROUND,
        ] {
            c.validate().unwrap();
        }
        let e = DelayCurve {
            max_ms: 2001,
            ..DelayCurve::TOOL
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("delay_max_ms = 2001"), "{e}");
        let e = DelayCurve {
            base_ms: 200,
            ..DelayCurve::INTERACTIVE
        }
        .validate()
        .unwrap_err();
        assert!(
            e.contains("delay_base_ms = 200 is above delay_max_ms = 100"),
            "{e}"
        );
    }

    #[test]
    fn delay_branches() {
        let t = DelayCurve::TOOL;
        assert_eq!(high_delay_ms(&t, 5000, 0, false), 0);
        assert_eq!(high_delay_ms(&t, 999, 1000, false), 0);
        assert_eq!(high_delay_ms(&t, 1000, 1000, false), 0);
        assert_eq!(high_delay_ms(&t, 1049, 1000, false), 0);
        assert_eq!(high_delay_ms(&t, 1050, 1000, false), 10);
        assert_eq!(high_delay_ms(&t, 1060, 1000, false), 15);
        assert_eq!(high_delay_ms(&t, 1060, 1000, true), 7);
        assert_eq!(high_delay_ms(&t, 100_000, 1000, false), 500);
        // a curve not clamped by validation is clamped at 2 s all the same
        let wild = DelayCurve {
            start_pct: 0,
            base_ms: 5000,
            slope_ms_per_pct: 0,
            max_ms: 9000,
        };
        assert_eq!(high_delay_ms(&wild, 2000, 1000, false), 2000);
        assert_eq!(high_delay_ms(&wild, 2000, 1000, true), 2000);
        let huge = DelayCurve {
            start_pct: 0,
            base_ms: u32::MAX,
            slope_ms_per_pct: u32::MAX,
            max_ms: u32::MAX,
        };
        assert_eq!(high_delay_ms(&huge, u64::MAX, 1, false), 2000);
        // monotonic in usage
        for c in [
            DelayCurve::INTERACTIVE,
            DelayCurve::TOOL,
            DelayCurve::BACKGROUND,
        ] {
            let mut last = 0;
            for u in (1000..20_000).step_by(7) {
                let d = high_delay_ms(&c, u, 1000, false);
                assert!(d >= last && d <= c.max_ms);
                last = d;
            }
        }
    }

    #[test]
    fn selftest_table() {
        assert_eq!(
            selftest_expected(),
            [0, 0, 0, 0, 5, 35, 17, 100, 0, 35, 17, 500, 70, 50, 1050, 1000, 35, 2000]
        );
        assert_eq!(SELFTEST_CASES.len(), selftest_expected().len());
        for class in 0..=3 {
            assert!(
                SELFTEST_CASES.iter().any(|c| c.0 == class),
                "class {class} missing"
            );
        }
    }

    #[test]
    fn protection() {
        assert_eq!(protect_budget(1 << 30, 256 << 20, 0), 0);
        assert_eq!(protect_budget(1 << 30, 256 << 20, 2), 256 << 20);
        assert_eq!(protect_budget(1 << 30, 256 << 20, 8), 128 << 20);
        assert_eq!(protect_budget(0, 256 << 20, 3), 0);
        assert_eq!(protect_budget(u64::MAX, u64::MAX, 1), u64::MAX);
        assert!(below_low(100, 100) && below_low(0, 1) && !below_low(101, 100));
        assert!(!below_low(0, 0));
        assert!(below_min(50, 100) && !below_min(51, 100));
        assert!(!below_min(0, 1)); // half of 1 is 0: no protection
    }
}

/// The class curves as the BPF side takes them (index = class code; a
/// profile's own curve is used for its class when it sets one).
pub fn bpf_curves(policy: &crate::policy::Policy) -> [crate::bpf_intf::delay_curve; 4] {
    [0u32, 1, 2, 3].map(|code| {
        let c = policy
            .profiles
            .iter()
            .find(|p| p.class.code() == code)
            .map(|p| p.delay)
            .unwrap_or_else(|| DelayCurve::for_class(code));
        crate::bpf_intf::delay_curve {
            start_pct: c.start_pct,
            base_ms: c.base_ms,
            slope_ms_per_pct: c.slope_ms_per_pct,
            max_ms: c.max_ms,
        }
    })
}

/// The memcg BPF ops, loaded and attached: keep it to keep them attached.
pub struct Attached {
    _link: std::os::fd::OwnedFd,
    /// the loaded object (it lives as long as the process)
    skel: &'static mut crate::memcg_ops_skel::MemcgOpsSkel<'static>,
}

impl Attached {
    /// The delay curves of @policy, for a policy reload (SIGHUP): BPF reads
    /// them at every delay it computes.
    pub fn set_curves(&mut self, policy: &crate::policy::Policy) {
        if let Some(bss) = self.skel.maps.bss_data.as_deref_mut() {
            copy_curves(&mut bss.curves, policy);
        }
    }
}

/// The delay curves of @policy into the object's `curves` (the skeleton's
/// own copy of struct delay_curve).
fn copy_curves(dst: &mut [crate::memcg_ops_skel::types::delay_curve], policy: &crate::policy::Policy) {
    for (d, s) in dst.iter_mut().zip(bpf_curves(policy).iter()) {
        d.start_pct = s.start_pct;
        d.base_ms = s.base_ms;
        d.slope_ms_per_pct = s.slope_ms_per_pct;
        d.max_ms = s.max_ms;
    }
}

/// Load the memcg_ops object (sharing the scheduler's mem_pressure map) and
/// attach it to the cgroup @cgroup_dir, whose descendants it covers. Only
/// called where [`probe_memcg_ops`] found the kernel type.
pub fn load(
    sched: &crate::bpf_skel::BpfSkel<'_>,
    policy: &crate::policy::Policy,
    cgroup_dir: &Path,
) -> Result<Attached> {
    use crate::memcg_ops_skel::*;
    use libbpf_rs::skel::{OpenSkel, SkelBuilder};
    use std::os::fd::{AsFd, AsRawFd, FromRawFd};

    // the object lives as long as the process (loaded once per start)
    let obj: &'static mut std::mem::MaybeUninit<libbpf_rs::OpenObject> =
        Box::leak(Box::new(std::mem::MaybeUninit::uninit()));
    let mut open = MemcgOpsSkelBuilder::default()
        .open(obj)
        .context("opening the memcg_ops BPF object")?;
    if let Some(bss) = open.maps.bss_data.as_deref_mut() {
        copy_curves(&mut bss.curves, policy);
    }
    open.maps
        .mem_pressure
        .reuse_fd(sched.maps.mem_pressure.as_fd())
        .context("sharing the scheduler's mem_pressure map with memcg_ops")?;
    open.maps
        .step_mems
        .reuse_fd(sched.maps.step_mems.as_fd())
        .context("sharing the scheduler's step_mems map with memcg_ops")?;
    let skel = Box::leak(Box::new(open.load().context("loading the memcg_ops BPF object")?));
    let dir = std::fs::File::open(cgroup_dir)
        .with_context(|| format!("opening cgroup {}", cgroup_dir.display()))?;
    let map_fd = skel.maps.agentcg_memcg_ops.as_fd().as_raw_fd();
    // a struct_ops link whose target is the cgroup (the interface's way to
    // attach per cgroup; it propagates to descendants)
    // SAFETY: plain syscall wrapper; the fds are valid for the call.
    let fd = unsafe {
        libbpf_rs::libbpf_sys::bpf_link_create(
            map_fd,
            dir.as_raw_fd(),
            libbpf_rs::libbpf_sys::BPF_STRUCT_OPS,
            std::ptr::null(),
        )
    };
    if fd < 0 {
        anyhow::bail!(
            "attaching the memcg BPF ops to {} failed (error {})",
            cgroup_dir.display(),
            -fd
        );
    }
    // SAFETY: fd is a new link fd this function owns.
    Ok(Attached { _link: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }, skel })
}

/// Run the scheduler object's agentcg_selftest_delay program (the BPF
/// delay curve) on [`SELFTEST_CASES`] and compare with [`selftest_expected`].
/// Returns the number of cases, or the mismatches.
pub fn selftest(sched: &crate::bpf_skel::BpfSkel<'_>) -> Result<usize> {
    use crate::bpf_intf::{selftest_args, selftest_case};
    let max = crate::bpf_intf::agentcg_consts_AGENTCG_SELFTEST_MAX as usize;
    anyhow::ensure!(SELFTEST_CASES.len() <= max, "too many self-test cases");
    // SAFETY: selftest_args is plain integers; all-zero is valid.
    let mut args: selftest_args = unsafe { std::mem::zeroed() };
    for code in 0..4u32 {
        let c = DelayCurve::for_class(code);
        args.curves[code as usize] = crate::bpf_intf::delay_curve {
            start_pct: c.start_pct,
            base_ms: c.base_ms,
            slope_ms_per_pct: c.slope_ms_per_pct,
            max_ms: c.max_ms,
        };
    }
    args.nr_cases = SELFTEST_CASES.len() as u32;
    for (i, &(class, usage, high, credit)) in SELFTEST_CASES.iter().enumerate() {
        args.cases[i] = selftest_case { class, credit_ok: credit as u32, usage, high };
    }
    let input = libbpf_rs::ProgramInput {
        // SAFETY: args is plain data; the slice covers exactly it, and the
        // kernel writes the program's context back into it.
        context_in: Some(unsafe {
            std::slice::from_raw_parts_mut(&mut args as *mut _ as *mut u8, std::mem::size_of_val(&args))
        }),
        ..Default::default()
    };
    let out = sched
        .progs
        .agentcg_selftest_delay
        .test_run(input)
        .context("running agentcg_selftest_delay")?;
    anyhow::ensure!(out.return_value == 0, "agentcg_selftest_delay returned {}", out.return_value);
    let want = selftest_expected();
    let bad: Vec<String> = want
        .iter()
        .enumerate()
        .filter(|(i, w)| args.out[*i] != **w)
        .map(|(i, w)| format!("case {i} {:?}: BPF {} ms, Rust {w} ms", SELFTEST_CASES[i], args.out[i]))
        .collect();
    if !bad.is_empty() {
        anyhow::bail!("the BPF delay curve differs from the Rust one:\n  {}", bad.join("\n  "));
    }
    Ok(want.len())
}
