// SPDX-License-Identifier: GPL-2.0-only
//! The `react` subcommand: how fast does something stop a session that
//! grows past its parent's guard line?
//!
//! A hog (a forked child in a fresh session cgroup under `--parent`) grows
//! at a steady rate, 64 KiB at a time, and stamps each chunk with the
//! monotonic clock into memory shared with this process. The guard line is
//! `--guard-pct` of the parent's memory.max; the chunk that takes the
//! parent's usage over it is the crossing. What stops the hog is `--via`:
//!
//! - `bpf`: nothing here; scx_agentcg `--mem-arbitration` is expected to
//!   hold the session in the scheduler.
//! - `poll`: read the parent's memory.current every `--poll-ms`, freeze
//!   (cgroup.freeze) the session at the line.
//! - `events`: memory.high of the parent set at the line, poll(2) on its
//!   memory.events for a new "high" event, then freeze.
//! - `psi`: a privileged PSI trigger on the parent's memory.pressure
//!   ("some 5000 50000": 5 ms of stall in a 50 ms window), then freeze.
//! - `avg10`: read the parent's memory.pressure every 100 ms as a watcher
//!   of `avg10` does, freeze when "some avg10" passes 1 %.
//!
//! The figure is the hog's own: after each chunk it reads the parent's
//! memory.current (the page counter the kernel's charge path checks), and
//! the first chunk that finds it at or over the line is the crossing. From
//! the crossing to its last chunk is the reaction, what it allocated after
//! the crossing the overshoot, the same for every way; `fire` is when a
//! userspace watcher saw its signal.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::anon;
use crate::stats;

const CHUNK: usize = 64 << 10;
const PAGE: usize = 4096;
/// Header slots of the shared stamps.
const HDR: usize = 3;
/// memory.high at the line (`events`) keeps the usage just under it: there
/// the crossing is the first chunk at this percent of the line.
const NEAR_PCT: u64 = 99;
/// The avg10 watcher fires above this (percent).
const AVG10_PCT: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Bpf,
    Poll,
    Events,
    Psi,
    Avg10,
}

/// `agentcg-replay react`: one way of stopping a growing session, measured.
#[derive(Debug, Clone, clap::Args)]
pub struct ReactOpts {
    /// Parent cgroup directory with a memory.max; hog<N> sessions are
    /// created under it.
    #[arg(long)]
    pub parent: PathBuf,
    /// A label copied into each result (e.g. what else runs).
    #[arg(long, default_value = "")]
    pub label: String,
    #[arg(long, value_enum)]
    pub via: Via,
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    /// The guard line, percent of the parent's memory.max.
    #[arg(long, default_value_t = 90)]
    pub guard_pct: u32,
    /// The hog's growth, MiB per second.
    #[arg(long, default_value_t = 40.0)]
    pub rate_mb_s: f64,
    /// Period of the poll watcher.
    #[arg(long, default_value_t = 1)]
    pub poll_ms: u64,
    /// How long the hog is watched after the crossing.
    #[arg(long, default_value_t = 1000)]
    pub window_ms: u64,
    /// Wait after creating a session before it starts (the scheduler
    /// picks it up).
    #[arg(long, default_value_t = 500)]
    pub settle_ms: u64,
}

/// One repetition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rep {
    pub via: Via,
    #[serde(default)]
    pub label: String,
    pub rep: u32,
    pub base_mb: f64,
    pub guard_mb: f64,
    /// usage reached the line (false: only NEAR_PCT of it, as under
    /// memory.high at the line, or not even that)
    pub crossed: bool,
    /// a userspace watcher saw its signal (always false for bpf)
    pub fired: bool,
    /// watcher's signal minus the crossing, ms (negative: before it)
    pub fire_ms: Option<f64>,
    /// the hog's last chunk minus the crossing, ms
    pub reaction_ms: Option<f64>,
    /// allocated past the guard line, MiB
    pub overshoot_mb: f64,
    /// no chunk in the last 200 ms of the window: the hog was stopped
    pub stopped: bool,
    /// stopped within NEAR_PCT of the line before the hog read it: the
    /// crossing and the hold fell inside the chunk after its last stamp
    /// (the holder read the counter first), so the reaction counts from
    /// that stamp (0, at most one chunk's time by the hog's clock)
    #[serde(default)]
    pub held_below: bool,
}

/// The summary over the repetitions.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub via: Via,
    pub reps: usize,
    pub stopped: usize,
    pub reaction_ms_median: Option<f64>,
    pub reaction_ms_max: Option<f64>,
    pub fire_ms_median: Option<f64>,
    pub overshoot_mb_median: Option<f64>,
}

pub fn summarize(via: Via, reps: &[Rep]) -> Summary {
    let r: Vec<f64> = reps.iter().filter_map(|x| x.reaction_ms).collect();
    let f: Vec<f64> = reps.iter().filter_map(|x| x.fire_ms).collect();
    let o: Vec<f64> = reps.iter().filter(|x| x.crossed).map(|x| x.overshoot_mb).collect();
    let round = |x: Option<f64>| x.map(|v| (v * 100.0).round() / 100.0);
    Summary {
        via,
        reps: reps.len(),
        stopped: reps.iter().filter(|x| x.stopped).count(),
        reaction_ms_median: round(stats::quantile(&r, 0.5)),
        reaction_ms_max: round(stats::quantile(&r, 1.0)),
        fire_ms_median: round(stats::quantile(&f, 0.5)),
        overshoot_mb_median: round(stats::quantile(&o, 0.5)),
    }
}

/// The markdown table of `react-table`: one row per way, in a fixed order.
pub fn table(reps: &[Rep]) -> String {
    let mut s = String::from(
        "| load | way | stopped within the window | reaction ms, median [min-max] | overshoot MiB | watcher fired, ms after the crossing |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut labels: Vec<&str> = Vec::new();
    for r in reps {
        if !labels.contains(&r.label.as_str()) {
            labels.push(&r.label);
        }
    }
    for (label, via) in labels
        .iter()
        .flat_map(|l| [Via::Bpf, Via::Poll, Via::Events, Via::Psi, Via::Avg10].map(|v| (*l, v)))
    {
        let of: Vec<&Rep> = reps.iter().filter(|r| r.via == via && r.label == label).collect();
        if of.is_empty() {
            continue;
        }
        let pick = |f: fn(&Rep) -> Option<f64>| -> Vec<f64> { of.iter().filter_map(|r| f(r)).collect() };
        let fired = of.iter().filter(|r| r.fired).count();
        s.push_str(&format!(
            "| {label} | {} | {}/{} | {} | {} | {} |\n",
            match via {
                Via::Bpf => "scx_agentcg (BPF guard, 1 ms poll)",
                Via::Poll => "userspace: memory.current every 1 ms",
                Via::Events => "userspace: memory.events epoll (memory.high at the line)",
                Via::Psi => "userspace: PSI trigger some 5 ms / 50 ms",
                Via::Avg10 => "userspace: avg10 every 100 ms",
            },
            of.iter().filter(|r| r.stopped).count(),
            of.len(),
            stats::median_range(&pick(|r| r.reaction_ms), 1),
            stats::median_range(&pick(|r| r.crossed.then_some(r.overshoot_mb)), 1),
            if via == Via::Bpf {
                "-".to_string()
            } else {
                format!("{} ({fired}/{} fired)", stats::median_range(&pick(|r| r.fire_ms), 1), of.len())
            }
        ));
    }
    s.push_str(
        "\nUnder memory.high at the line (events) the kernel's reclaim keeps the usage just under it; there the \
         crossing is the first chunk at 99 % of the line. A way that did not stop the session within the window after the crossing has its last chunk at \
         the end of the window (or at the end of its growth), so its reaction reads as that.\n",
    );
    s
}

/// `react-table`: the table from repetition lines (JSON).
/// The scheduler's own view of one `bpf` repetition (a REACT-SCHED line of
/// tests/vm/bench/reaction.sh): its `mem_arbitration` counters.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SchedView {
    pub load: String,
    pub rep: u32,
    pub arb: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Next to each `bpf` repetition, what the scheduler measured itself: the
/// guard's crossing to the held session's last growth, and the hold to it
/// (the BPF timer's 1 ms polls), so that a slow repetition shows whether
/// the guard saw the line late or the hold did not stop the session.
pub fn sched_table(reps: &[Rep], views: &[SchedView]) -> String {
    let mut s = String::from(
        "| load | rep | the hog's reaction (ms) | holds | scheduler: guard crossing to last growth (us) | scheduler: hold to last growth (us) |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let num = |v: &SchedView, k: &str| v.arb.get(k).and_then(|x| x.as_f64()).map_or("-".to_string(), |x| format!("{x:.0}"));
    for v in views {
        let hog = reps
            .iter()
            .find(|r| r.via == Via::Bpf && r.label == v.load && r.rep == v.rep)
            .and_then(|r| r.reaction_ms)
            .map_or("-".to_string(), |x| format!("{x:.1}"));
        s += &format!(
            "| {} | {} | {hog} | {} | {} | {} |\n",
            v.load,
            v.rep,
            num(v, "holds"),
            num(v, "reaction_us_max"),
            num(v, "stop_us_max")
        );
    }
    s
}

fn json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect())
}

pub fn react_table(path: &Path, sched: Option<&Path>) -> Result<(), String> {
    let reps: Vec<Rep> = json_lines(path)?;
    if reps.is_empty() {
        return Err(format!("{}: no repetitions", path.display()));
    }
    print!("{}", table(&reps));
    if let Some(p) = sched {
        let views: Vec<SchedView> = json_lines(p)?;
        println!();
        println!("The scheduler's own view of the `bpf` repetitions (its stats after each):");
        println!();
        print!("{}", sched_table(&reps, &views));
    }
    Ok(())
}

/// From the chunk stamps: (reaction ns, overshoot chunks) after crossing
/// chunk @cross, or None when it was never reached.
/// The chunk the reaction counts from, and whether the hog was held below
/// the line before it read it (see [`Rep::held_below`]): the chunk that
/// read the line; else, for a hog stopped within NEAR_PCT of it, its last
/// chunk (a hold, not memory.high's stall, which only `events` makes);
/// else the chunk that read NEAR_PCT.
pub fn cross_point(via: Via, cross: Option<usize>, near: Option<usize>, len: usize, stopped: bool) -> (Option<usize>, bool) {
    if cross.is_some() {
        return (cross, false);
    }
    if stopped && via != Via::Events && near.is_some() {
        return (len.checked_sub(1), true);
    }
    (near, false)
}

pub fn measure(stamps: &[u64], cross: usize) -> Option<(u64, usize)> {
    let t = *stamps.get(cross)?;
    let last = *stamps.last()?;
    Some((last.saturating_sub(t), stamps.len() - 1 - cross))
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn read_u64(p: &Path) -> Result<u64, String> {
    let t = fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    t.trim()
        .parse()
        .map_err(|_| format!("{}: not a number: '{}'", p.display(), t.trim()))
}

fn write(p: &Path, v: &str) -> Result<(), String> {
    fs::write(p, v).map_err(|e| format!("cannot write '{v}' to {}: {e}", p.display()))
}

/// Shared stamps: slot 0 is the count, slot 1 the crossing chunk + 1 (0:
/// not yet), slot 2 the same for NEAR_PCT of the line, then one stamp per
/// chunk.
struct Stamps {
    ptr: *mut AtomicU64,
    slots: usize,
}

impl Stamps {
    fn new(slots: usize) -> Result<Stamps, String> {
        let len = (slots + HDR) * 8;
        // shared with the hog child; unmapped in Drop
        let p = anon::map(len, true).map_err(|e| format!("mmap of {len} bytes failed: {e}"))?;
        Ok(Stamps { ptr: p as *mut AtomicU64, slots })
    }
    fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.slots + HDR);
        // SAFETY: in bounds of the mapping; AtomicU64 has u64's layout.
        unsafe { &*self.ptr.add(i) }
    }
    fn count(&self) -> usize {
        self.at(0).load(Ordering::Acquire) as usize
    }
    fn push(&self, i: usize, t: u64) {
        self.at(i + HDR).store(t, Ordering::Relaxed);
        self.at(0).store(i as u64 + 1, Ordering::Release);
    }
    fn set_cross(&self, i: usize) {
        self.at(1).store(i as u64 + 1, Ordering::Release);
    }
    fn cross(&self) -> Option<usize> {
        (self.at(1).load(Ordering::Acquire) as usize).checked_sub(1)
    }
    fn set_near(&self, i: usize) {
        self.at(2).store(i as u64 + 1, Ordering::Release);
    }
    fn near(&self) -> Option<usize> {
        (self.at(2).load(Ordering::Acquire) as usize).checked_sub(1)
    }
    fn snapshot(&self) -> Vec<u64> {
        (0..self.count()).map(|i| self.at(i + HDR).load(Ordering::Relaxed)).collect()
    }
}

impl Drop for Stamps {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), with its length.
        unsafe { anon::unmap(self.ptr as *mut u8, (self.slots + HDR) * 8) };
    }
}

/// The parent's usage, read again through an open memory.current.
fn pread_u64(f: &fs::File, buf: &mut [u8; 32]) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let n = f.read_at(buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The hog, in the forked child: join @cg, wait for the go byte, grow,
/// and mark the first chunk after which @current reads @guard or more.
fn hog(cg: &Path, current: &fs::File, guard: u64, go: i32, stamps: &Stamps, chunks: usize, rate_mb_s: f64) -> ! {
    let pid = std::process::id().to_string();
    if fs::write(cg.join("cgroup.procs"), &pid).is_err() {
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(3) };
    }
    let mut b = [0u8; 1];
    // SAFETY: a valid fd and buffer.
    unsafe { libc::read(go, b.as_mut_ptr() as *mut libc::c_void, 1) };
    let len = chunks * CHUNK;
    // private to the child, which lives as long as it
    let Ok(mem) = anon::map(len, false) else {
        // SAFETY: leaving the child at once.
        unsafe { libc::_exit(4) }
    };
    let per_chunk = Duration::from_secs_f64(CHUNK as f64 / (rate_mb_s * (1 << 20) as f64));
    let mut buf = [0u8; 32];
    let near = guard / 100 * NEAR_PCT;
    let start = Instant::now();
    for i in 0..chunks {
        let due = per_chunk * i as u32;
        let el = start.elapsed();
        if el < due {
            std::thread::sleep(due - el);
        }
        for off in (0..CHUNK).step_by(PAGE) {
            // SAFETY: within the mapping.
            unsafe { std::ptr::write_volatile(mem.add(i * CHUNK + off), 1) };
        }
        stamps.push(i, now_ns());
        if stamps.cross().is_none() {
            match pread_u64(current, &mut buf) {
                Some(u) if u >= guard => stamps.set_cross(i),
                Some(u) if u >= near && stamps.near().is_none() => stamps.set_near(i),
                _ => {}
            }
        }
    }
    loop {
        // SAFETY: waits for the SIGKILL.
        unsafe { libc::pause() };
    }
}

/// A userspace watcher's signal source, set up before the hog starts.
enum Watch {
    None,
    Poll { current: PathBuf, guard: u64, every: Duration },
    Events { file: fs::File, high0: u64 },
    Psi { file: fs::File },
    Avg10 { path: PathBuf },
}

fn events_high(f: &mut fs::File) -> u64 {
    let mut s = String::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_string(&mut s);
    s.lines()
        .find_map(|l| l.strip_prefix("high "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn some_avg10(text: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("avg10=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// poll(2) for POLLPRI on @f for at most @ms.
fn poll_pri(f: &fs::File, ms: i32) -> bool {
    let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents & (libc::POLLPRI | libc::POLLERR) != 0
}

impl Watch {
    fn setup(via: Via, parent: &Path, guard: u64, poll_ms: u64) -> Result<Watch, String> {
        Ok(match via {
            Via::Bpf => Watch::None,
            Via::Poll => Watch::Poll {
                current: parent.join("memory.current"),
                guard,
                every: Duration::from_millis(poll_ms.max(1)),
            },
            Via::Events => {
                write(&parent.join("memory.high"), &guard.to_string())?;
                let p = parent.join("memory.events");
                let mut file = fs::File::open(&p).map_err(|e| format!("{}: {e}", p.display()))?;
                let high0 = events_high(&mut file);
                Watch::Events { file, high0 }
            }
            Via::Psi => {
                let p = parent.join("memory.pressure");
                let mut file = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
                file.write_all(b"some 5000 50000\0")
                    .map_err(|e| format!("{}: a PSI trigger needs CAP_SYS_RESOURCE: {e}", p.display()))?;
                Watch::Psi { file }
            }
            Via::Avg10 => {
                // start from no pressure: avg10 is a 10 s average, and an
                // earlier run's stall would fire at once
                let path = parent.join("memory.pressure");
                let t0 = Instant::now();
                while fs::read_to_string(&path).is_ok_and(|t| some_avg10(&t) > AVG10_PCT)
                    && t0.elapsed() < Duration::from_secs(60)
                {
                    std::thread::sleep(Duration::from_millis(500));
                }
                Watch::Avg10 { path }
            }
        })
    }

    /// Wait up to @until for the signal; true when it came.
    fn wait(&mut self, until: Instant) -> bool {
        while Instant::now() < until {
            let left = (until - Instant::now()).as_millis().min(100) as i32;
            match self {
                Watch::None => std::thread::sleep(Duration::from_millis(left as u64)),
                Watch::Poll { current, guard, every } => {
                    if read_u64(current).is_ok_and(|u| u >= *guard) {
                        return true;
                    }
                    std::thread::sleep(*every);
                }
                Watch::Events { file, high0 } => {
                    poll_pri(file, left);
                    if events_high(file) > *high0 {
                        return true;
                    }
                }
                Watch::Psi { file } => {
                    if poll_pri(file, left) {
                        return true;
                    }
                }
                Watch::Avg10 { path } => {
                    if fs::read_to_string(&*path).is_ok_and(|t| some_avg10(&t) > AVG10_PCT) {
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        false
    }
}

fn rmdir_retry(p: &Path) {
    for _ in 0..200 {
        if fs::remove_dir(p).is_ok() || !p.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn one(o: &ReactOpts, rep: u32) -> Result<Rep, String> {
    let max = read_u64(&o.parent.join("memory.max")).map_err(|e| {
        format!("{e} (react needs a parent with a memory.max limit; write one, e.g. 256M)")
    })?;
    let cg = o.parent.join(format!("hog{rep}"));
    if cg.exists() {
        rmdir_retry(&cg);
    }
    fs::create_dir(&cg).map_err(|e| format!("cannot create {}: {e}", cg.display()))?;
    // the scheduler picks the new session up
    std::thread::sleep(Duration::from_millis(o.settle_ms));
    let guard = max / 100 * o.guard_pct as u64;
    let chunks = (max as usize + max as usize / 4) / CHUNK; // past the limit
    let stamps = Stamps::new(chunks)?;
    let cur_path = o.parent.join("memory.current");
    let current = fs::File::open(&cur_path).map_err(|e| format!("{}: {e}", cur_path.display()))?;
    let mut fds = [0i32; 2];
    // SAFETY: a valid array for two fds.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err("pipe failed".into());
    }
    // SAFETY: the child only touches its own memory, the shared stamps and
    // the cgroup file before it exits or is killed.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        hog(&cg, &current, guard, fds[0], &stamps, chunks, o.rate_mb_s);
    }
    // the child joins its cgroup, then waits
    std::thread::sleep(Duration::from_millis(100));
    let base = read_u64(&o.parent.join("memory.current"))?;
    let res = (|| -> Result<(bool, Option<u64>), String> {
        let mut w = Watch::setup(o.via, &o.parent, guard, o.poll_ms)?;
        let t_go = Instant::now();
        // SAFETY: a valid fd and byte.
        unsafe { libc::write(fds[1], b"g".as_ptr() as *const libc::c_void, 1) };
        let grow = Duration::from_secs_f64(chunks as f64 * CHUNK as f64 / (o.rate_mb_s * (1 << 20) as f64));
        let until = t_go + grow + Duration::from_millis(o.window_ms);
        let mut fired_at = None;
        if o.via != Via::Bpf && w.wait(until) {
            fired_at = Some(now_ns());
            write(&cg.join("cgroup.freeze"), "1")?;
        }
        // watch the hog for the window after the crossing (or the signal)
        while stamps.cross().or(stamps.near()).is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(o.window_ms));
        Ok((fired_at.is_some(), fired_at))
    })();
    let end = now_ns();
    let snap = stamps.snapshot();
    // SAFETY: our child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = fs::write(cg.join("cgroup.freeze"), "0");
    let mut status = 0;
    // SAFETY: our child; status is valid.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    // SAFETY: our pipe.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    if o.via == Via::Events {
        let _ = fs::write(o.parent.join("memory.high"), "max");
    }
    rmdir_retry(&cg);
    let (fired, fired_at) = res?;
    let crossed = stamps.cross().is_some();
    let stopped = snap.last().is_some_and(|&l| end.saturating_sub(l) >= 200_000_000);
    let (cross, held_below) = cross_point(o.via, stamps.cross(), stamps.near(), snap.len(), stopped);
    let m = cross.and_then(|c| measure(&snap, c));
    let cross_t = cross.and_then(|c| snap.get(c).copied());
    let ms = |ns: i64| (ns as f64 / 1e4).round() / 100.0;
    Ok(Rep {
        via: o.via,
        label: o.label.clone(),
        rep,
        base_mb: base as f64 / (1 << 20) as f64,
        guard_mb: guard as f64 / (1 << 20) as f64,
        crossed,
        fired,
        fire_ms: match (fired_at, cross_t) {
            (Some(f), Some(c)) => Some(ms(f as i64 - c as i64)),
            _ => None,
        },
        reaction_ms: m.map(|(ns, _)| ms(ns as i64)),
        overshoot_mb: m.map_or(0.0, |(_, n)| (n * CHUNK) as f64 / (1 << 20) as f64),
        stopped,
        held_below,
    })
}

/// `react`: the repetitions as JSON lines, then the summary line.
pub fn react(o: &ReactOpts) -> Result<(), String> {
    if !(o.rate_mb_s.is_finite() && o.rate_mb_s > 0.0) {
        return Err(format!("--rate-mb-s must be > 0, not {}", o.rate_mb_s));
    }
    if !(1..=99).contains(&o.guard_pct) {
        return Err(format!("--guard-pct must be 1..99, not {}", o.guard_pct));
    }
    if !o.parent.join("memory.max").is_file() {
        return Err(format!(
            "{}: not a cgroup with the memory controller (give the parent cgroup's directory)",
            o.parent.display()
        ));
    }
    let mut reps = Vec::new();
    for rep in 1..=o.reps {
        let r = one(o, rep)?;
        println!("{}", serde_json::to_string(&r).map_err(|e| e.to_string())?);
        reps.push(r);
    }
    let s = summarize(o.via, &reps);
    println!("{}", serde_json::to_string(&s).map_err(|e| e.to_string())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_from_stamps() {
        let st = [10, 20, 30, 35, 36];
        assert_eq!(measure(&st, 1), Some((16, 3)));
        assert_eq!(measure(&st, 4), Some((0, 0)));
        assert_eq!(measure(&st, 5), None);
    }

    #[test]
    fn a_hog_held_before_it_read_the_line_counts_from_its_last_chunk() {
        // read the line at chunk 7: from there
        assert_eq!(cross_point(Via::Bpf, Some(7), Some(5), 9, true), (Some(7), false));
        // held within NEAR_PCT, never read the line: its last chunk, 0 ms
        assert_eq!(cross_point(Via::Bpf, None, Some(5), 9, true), (Some(8), true));
        assert_eq!(cross_point(Via::Poll, None, Some(5), 9, true), (Some(8), true));
        // memory.high stalls it at the line: the near chunk, as before
        assert_eq!(cross_point(Via::Events, None, Some(5), 9, true), (Some(5), false));
        // still growing at the end of the window: not held
        assert_eq!(cross_point(Via::Bpf, None, Some(5), 9, false), (Some(5), false));
        assert_eq!(cross_point(Via::Bpf, None, None, 9, true), (None, false));
    }

    #[test]
    fn avg10_parse_and_summary() {
        let t = "some avg10=3.50 avg60=0.10 avg300=0.00 total=123\nfull avg10=1.00 avg60=0.00 avg300=0.00 total=5\n";
        assert_eq!(some_avg10(t), 3.5);
        assert_eq!(some_avg10("garbage"), 0.0);
        let rep = |r: f64, stopped| Rep {
            via: Via::Poll,
            label: "idle".into(),
            rep: 1,
            base_mb: 1.0,
            guard_mb: 230.0,
            crossed: true,
            fired: true,
            fire_ms: Some(r / 2.0),
            reaction_ms: Some(r),
            overshoot_mb: r / 10.0,
            stopped,
            held_below: false,
        };
        let reps = [rep(2.0, true), rep(4.0, true), rep(30.0, false)];
        let t = table(&reps);
        assert!(t.contains("| idle | userspace: memory.current every 1 ms | 2/3 | 4.0 [2.0-30.0] | 0.4 [0.2-3.0] | 2.0 [1.0-15.0] (3/3 fired) |"), "{t}");
        let s = summarize(Via::Poll, &reps);
        assert_eq!((s.reps, s.stopped), (3, 2));
        assert_eq!(s.reaction_ms_median, Some(4.0));
        assert_eq!(s.reaction_ms_max, Some(30.0));
        assert_eq!(s.fire_ms_median, Some(2.0));
        assert_eq!(s.overshoot_mb_median, Some(0.4));
    }

    #[test]
    fn the_schedulers_view_sits_next_to_the_hogs_figure() {
        let bpf = Rep {
            via: Via::Bpf,
            label: "busy".into(),
            rep: 2,
            base_mb: 1.0,
            guard_mb: 230.0,
            crossed: true,
            fired: false,
            fire_ms: None,
            reaction_ms: Some(41.5),
            overshoot_mb: 2.0,
            stopped: true,
            held_below: false,
        };
        let views: Vec<SchedView> = [
            r#"{"load":"busy","rep":2,"arb":{"holds":1,"reaction_us_max":40100,"stop_us_max":300}}"#,
            r#"{"load":"idle","rep":2,"arb":{}}"#,
        ]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
        let t = sched_table(&[bpf], &views);
        assert!(t.contains("| busy | 2 | 41.5 | 1 | 40100 | 300 |"), "{t}");
        // no bpf repetition and no counters for it: dashes, not zeros
        assert!(t.contains("| idle | 2 | - | - | - | - |"), "{t}");
    }
}
