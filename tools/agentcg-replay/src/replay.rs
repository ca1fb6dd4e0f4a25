// SPDX-License-Identifier: GPL-2.0-only
//! The `run` subcommand: replay a trace's memory footprint, CPU use and step
//! boundaries, then report.
//!
//! Timeline. Sample i opens interval i, which lasts until sample i+1, divided
//! by the speed. At its start the memory footprint is set to sample i's usage
//! (times --mem-scale); during it the worker threads burn the CPU time that
//! sample i+1 reports for it (podman's CPU percentage covers the second before
//! the sample). The schedule is work-conserving: an interval ends when its
//! wall time has passed AND its memory and CPU work are done, so a replay
//! slowed down by CPU or memory contention finishes late and the completion
//! time shows by how much.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::anon;
use crate::stats;
use crate::steps::Steps;
use crate::trace::{self, StepEvent, StepKind, Trace};

/// Set by SIGINT/SIGTERM.
static SIGNALED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: libc::c_int) {
    SIGNALED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

fn stopped() -> bool {
    SIGNALED.load(Ordering::Relaxed)
}

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub trace: PathBuf,
    pub speed: f64,
    pub mem_scale: f64,
    pub max_duration: Option<f64>,
    /// Place the --max-duration window around the trace's memory peak
    /// instead of at its start.
    pub window_at_peak: bool,
    pub step_parent: Option<PathBuf>,
    pub chunk_kb: u64,
    pub json: Option<PathBuf>,
}

/// The report of one run (the JSON object written by --json).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub trace: String,
    pub trace_dir: String,
    pub speed: f64,
    pub mem_scale: f64,
    pub chunk_kb: u64,
    /// Wall seconds from the start of the replay to the end of the last
    /// replayed sample.
    pub completion_s: f64,
    /// Replayed trace duration divided by the speed.
    pub expected_s: f64,
    /// completion_s / expected_s (1.0 = on time; 0 if expected_s is 0).
    pub slowdown: f64,
    pub samples_replayed: usize,
    pub samples_total: usize,
    pub malformed_skipped: usize,
    pub tool_calls_skipped: usize,
    /// Whether --max-duration cut the trace short.
    pub truncated: bool,
    /// Whether SIGINT/SIGTERM stopped the replay early.
    pub interrupted: bool,
    /// Trace seconds skipped before the replayed window (--window-at-peak).
    pub window_start_s: f64,
    /// Trace seconds of the whole trace's memory peak.
    pub trace_peak_s: f64,
    /// Whether the replayed part holds that peak.
    pub peak_replayed: bool,
    pub peak_mem_bytes: u64,
    pub alloc_count: usize,
    pub alloc_failures: u64,
    pub alloc_lat_p50_us: f64,
    pub alloc_lat_p95_us: f64,
    pub alloc_lat_p99_us: f64,
    pub alloc_lat_max_us: f64,
    /// Percentiles 0, 1, ..., 100 of the chunk allocation latency, in
    /// microseconds (empty when nothing was allocated).
    pub alloc_lat_quantiles_us: Vec<f64>,
    /// CPU seconds the replay used (getrusage, user + system).
    pub cpu_s: f64,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    /// CPU seconds the replayed trace part asks for (sum of the intervals'
    /// busy time).
    pub cpu_demand_s: f64,
    pub steps_enabled: bool,
    pub steps_entered: u64,
    /// Always false: a process killed by the OOM killer cannot report; the
    /// harness detects that case (exit by SIGKILL, memory.events oom_kill).
    pub oom_killed: bool,
    /// [wall seconds since start, replayed bytes] after each sample's memory
    /// step.
    pub mem_timeline: Vec<[f64; 2]>,
}

// ---------------------------------------------------------------------------
// Memory

struct Chunk {
    ptr: *mut u8,
    len: usize,
}

/// Anonymous mmap chunks, every page written once when allocated.
struct Memory {
    chunks: Vec<Chunk>,
    chunk_len: usize,
    page: usize,
    lat_ns: Vec<u64>,
    peak: u64,
    failures: u64,
    warned: bool,
}

impl Memory {
    fn new(chunk_kb: u64) -> Memory {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        let want = (chunk_kb.max(1) as usize).saturating_mul(1024);
        let chunk_len = want.div_ceil(page) * page;
        Memory {
            chunks: Vec::new(),
            chunk_len,
            page,
            lat_ns: Vec::new(),
            peak: 0,
            failures: 0,
            warned: false,
        }
    }

    fn footprint(&self) -> u64 {
        self.chunks.iter().map(|c| c.len as u64).sum()
    }

    /// Allocate and touch one chunk; returns false if mmap failed.
    fn grow(&mut self) -> bool {
        let len = self.chunk_len;
        let t0 = Instant::now();
        let base = match anon::map(len, false) {
            Ok(p) => p,
            Err(e) => {
                self.failures += 1;
                if !self.warned {
                    eprintln!("agentcg-replay: warning: mmap of {len} bytes failed: {e}");
                    self.warned = true;
                }
                return false;
            }
        };
        let mut off = 0;
        while off < len {
            // SAFETY: off < len, inside the mapping just created.
            unsafe { std::ptr::write_volatile(base.add(off), 0xa5) };
            off += self.page;
        }
        self.lat_ns.push(t0.elapsed().as_nanos() as u64);
        self.chunks.push(Chunk { ptr: base, len });
        self.peak = self.peak.max(self.footprint());
        true
    }

    fn shrink(&mut self) {
        if let Some(c) = self.chunks.pop() {
            // SAFETY: the chunk was mapped by grow() with this length and is
            // no longer referenced.
            unsafe { anon::unmap(c.ptr, c.len) };
        }
    }

    /// Grow or shrink to the chunk count nearest to `target` bytes.
    fn set_target(&mut self, target: u64) {
        let cl = self.chunk_len as u64;
        let want = ((target + cl / 2) / cl) as usize;
        while self.chunks.len() < want && !stopped() {
            if !self.grow() {
                break;
            }
        }
        while self.chunks.len() > want {
            self.shrink();
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        while !self.chunks.is_empty() {
            self.shrink();
        }
    }
}

// ---------------------------------------------------------------------------
// CPU workers

/// Granularity of the busy/idle pattern.
const SLICE: Duration = Duration::from_millis(10);

#[derive(Default)]
struct Job {
    /// Incremented for every interval.
    gen: u64,
    /// Threads that work in this interval (the rest idle).
    active: usize,
    /// CPU time each active thread must burn in this interval.
    budget: Duration,
    start: Option<Instant>,
    len: Duration,
    /// Threads finished with this generation.
    done: usize,
    /// Latest instant at which an active thread reached its budget.
    finished_at: Option<Instant>,
    quit: bool,
}

struct Workers {
    shared: Arc<(Mutex<Job>, Condvar)>,
    handles: Vec<thread::JoinHandle<()>>,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t || stopped() {
            return;
        }
        thread::sleep((t - now).min(Duration::from_millis(20)));
    }
}

/// Burn `budget` of this thread's CPU time spread evenly over [start,
/// start+len] in SLICE steps; returns when the budget is used (after the
/// interval's end if the thread was starved) and the instant it was reached.
fn burn(start: Instant, len: Duration, budget: Duration) -> Instant {
    let slices = (len.as_secs_f64() / SLICE.as_secs_f64()).ceil().max(1.0) as u32;
    let cpu0 = thread_cpu();
    let mut x = 0x9e37_79b9_u64;
    let mut reached = Instant::now();
    for k in 1..=slices {
        let goal = budget.mul_f64(k as f64 / slices as f64);
        while thread_cpu().saturating_sub(cpu0) < goal {
            for _ in 0..2000 {
                x = x.rotate_left(5) ^ x.wrapping_mul(0x2545_f491_4f6c_dd1d);
            }
            std::hint::black_box(x);
            if stopped() {
                return Instant::now();
            }
        }
        reached = Instant::now();
        if k < slices {
            sleep_until(start + len.mul_f64(k as f64 / slices as f64));
        }
    }
    reached
}

impl Workers {
    /// Start up to `n` threads; if the system refuses one, warn and go on
    /// with those that started (their shares then grow).
    fn new(n: usize) -> Workers {
        let shared = Arc::new((Mutex::new(Job::default()), Condvar::new()));
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let sh = Arc::clone(&shared);
            match thread::Builder::new()
                .name(format!("replay-cpu{i}"))
                .spawn(move || worker(i, &sh))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    eprintln!(
                        "agentcg-replay: warning: cannot start CPU thread {}: {e}; using {i}",
                        i + 1
                    );
                    break;
                }
            }
        }
        Workers { shared, handles }
    }

    fn len(&self) -> usize {
        self.handles.len()
    }

    fn start(&self, active: usize, budget: Duration, start: Instant, len: Duration) {
        let (m, cv) = &*self.shared;
        let mut j = m.lock().unwrap();
        j.gen += 1;
        j.active = active;
        j.budget = budget;
        j.start = Some(start);
        j.len = len;
        j.done = 0;
        j.finished_at = None;
        cv.notify_all();
    }

    /// Wait until all threads are done with the current interval; returns
    /// when the last active one reached its budget.
    fn wait(&self) -> Option<Instant> {
        let (m, cv) = &*self.shared;
        let mut j = m.lock().unwrap();
        while j.done < self.handles.len() && !stopped() {
            j = cv.wait_timeout(j, Duration::from_millis(20)).unwrap().0;
        }
        j.finished_at
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        {
            let (m, cv) = &*self.shared;
            m.lock().unwrap().quit = true;
            cv.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(idx: usize, sh: &(Mutex<Job>, Condvar)) {
    let (m, cv) = sh;
    let mut seen = 0;
    loop {
        let (active, budget, start, len) = {
            let mut j = m.lock().unwrap();
            while j.gen == seen && !j.quit {
                j = cv.wait(j).unwrap();
            }
            if j.quit {
                return;
            }
            seen = j.gen;
            (
                j.active,
                j.budget,
                j.start.unwrap_or_else(Instant::now),
                j.len,
            )
        };
        let reached = if idx < active && !budget.is_zero() {
            Some(burn(start, len, budget))
        } else {
            None
        };
        let mut j = m.lock().unwrap();
        if j.gen == seen {
            j.done += 1;
            if let Some(r) = reached {
                j.finished_at = Some(j.finished_at.map_or(r, |f| f.max(r)));
            }
            cv.notify_all();
        }
    }
}

// ---------------------------------------------------------------------------
// Run

fn rusage() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime), tv(ru.ru_stime))
}

/// Samples that fall within --max-duration (scaled), and whether any were cut.
fn replayed_len(tr: &Trace, speed: f64, max_duration: Option<f64>) -> (usize, bool) {
    let n = tr.samples.len();
    match max_duration {
        None => (n, false),
        Some(max) => {
            let k = tr
                .samples
                .iter()
                .take_while(|s| s.t / speed <= max + 1e-9)
                .count()
                .max(1);
            (k, k < n)
        }
    }
}

/// Replay a loaded trace. Pure apart from the process-wide effects (memory,
/// threads, cgroup moves); used by `run` and the tests.
pub fn replay(tr: &Trace, o: &RunOpts) -> Report {
    install_signal_handlers();
    let speed = o.speed;
    let (n, truncated) = replayed_len(tr, speed, o.max_duration);
    let samples = &tr.samples[..n];

    let max_cpu = samples
        .iter()
        .skip(1)
        .map(|s| s.cpu_pct)
        .fold(0.0, f64::max);
    let nthreads = ((max_cpu / 100.0).ceil() as usize).max(1);

    // Step events, restricted to the replayed part of the trace.
    let end_t = samples.last().map_or(0.0, |s| s.t);
    let events: Vec<StepEvent> = match (&o.step_parent, &tr.tool_calls) {
        (Some(_), Some(calls)) => trace::step_events(calls, samples[0].epoch)
            .into_iter()
            .filter(|e| e.t <= end_t)
            .collect(),
        _ => Vec::new(),
    };
    let mut steps = o.step_parent.as_deref().map(Steps::new);
    if o.step_parent.is_some() && tr.tool_calls.is_none() {
        eprintln!(
            "agentcg-replay: warning: {}: no tool_calls.json; no steps",
            tr.dir.display()
        );
    }

    let mut mem = Memory::new(o.chunk_kb);
    let workers = Workers::new(nthreads);
    let mut timeline = Vec::with_capacity(n);
    let mut cpu_demand = 0.0;
    let mut next_ev = 0;

    let t0 = Instant::now();
    let mut iv_start = t0;
    let mut replayed = 0;
    let mut completion = Duration::ZERO;
    for i in 0..n {
        if stopped() {
            break;
        }
        let s = &samples[i];
        let next = samples.get(i + 1);
        let len = next.map_or(Duration::ZERO, |nx| {
            Duration::from_secs_f64(trace::scaled(nx.t - s.t, speed))
        });
        if let Some(nx) = next {
            let frac = nx.cpu_pct / 100.0;
            let active = (frac.ceil() as usize).min(workers.len());
            let per_thread = if active > 0 {
                frac / active as f64
            } else {
                0.0
            };
            cpu_demand += frac * len.as_secs_f64();
            workers.start(active, len.mul_f64(per_thread), iv_start, len);
        }
        // Step events due by the start of this interval.
        run_events(&events, &mut next_ev, s.t, &mut steps);

        mem.set_target((s.mem_bytes as f64 * o.mem_scale).max(0.0) as u64);
        let mem_done = Instant::now();
        timeline.push([
            round3((mem_done - t0).as_secs_f64()),
            mem.footprint() as f64,
        ]);
        replayed += 1;
        completion = mem_done - t0;

        let Some(nx) = next else { break };
        // Wait for the interval's end, handling step events on the way.
        let deadline = iv_start + len;
        while let Some(e) = events.get(next_ev) {
            if e.t >= nx.t || stopped() {
                break;
            }
            sleep_until(
                iv_start + Duration::from_secs_f64(trace::scaled((e.t - s.t).max(0.0), speed)),
            );
            let upto = e.t;
            run_events(&events, &mut next_ev, upto, &mut steps);
        }
        sleep_until(deadline);
        let cpu_done = workers.wait();
        // Work-conserving: the next interval starts on schedule unless the
        // work of this one finished late.
        let late = [Some(mem_done), cpu_done]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(deadline);
        iv_start = deadline.max(late);
    }
    drop(workers);
    let interrupted = stopped();

    let (user, sys) = rusage();
    let lat_us: Vec<f64> = mem.lat_ns.iter().map(|&ns| ns as f64 / 1000.0).collect();
    let sorted = stats::sorted(&lat_us);
    let q = |p: f64| round3(stats::quantile_sorted(&sorted, p).unwrap_or(0.0));
    let expected = samples.last().map_or(0.0, |s| s.t) / speed;
    let completion_s = round3(completion.as_secs_f64());
    let report = Report {
        trace: tr.name.clone(),
        trace_dir: tr.dir.display().to_string(),
        speed,
        mem_scale: o.mem_scale,
        chunk_kb: o.chunk_kb,
        completion_s,
        expected_s: round3(expected),
        slowdown: if expected > 0.0 {
            round3(completion_s / expected)
        } else {
            0.0
        },
        samples_replayed: replayed,
        samples_total: tr.samples_in_file,
        malformed_skipped: tr.malformed,
        tool_calls_skipped: tr.tool_calls_skipped,
        truncated,
        interrupted,
        window_start_s: 0.0,
        trace_peak_s: round3(tr.peak_t()),
        peak_replayed: tr.peak_t() <= expected * speed + 1e-6,
        peak_mem_bytes: mem.peak,
        alloc_count: mem.lat_ns.len(),
        alloc_failures: mem.failures,
        alloc_lat_p50_us: q(0.5),
        alloc_lat_p95_us: q(0.95),
        alloc_lat_p99_us: q(0.99),
        alloc_lat_max_us: q(1.0),
        alloc_lat_quantiles_us: stats::percentiles(&lat_us)
            .into_iter()
            .map(round3)
            .collect(),
        cpu_s: round3(user + sys),
        cpu_user_s: round3(user),
        cpu_sys_s: round3(sys),
        cpu_demand_s: round3(cpu_demand),
        steps_enabled: steps.as_ref().is_some_and(|s| s.enabled),
        steps_entered: steps.as_ref().map_or(0, |s| s.entered),
        oom_killed: false,
        mem_timeline: timeline,
    };
    drop(mem);
    if let Some(st) = steps.as_mut() {
        st.finish();
    }
    report
}

/// Apply the step events up to trace time `upto`.
fn run_events(events: &[StepEvent], next: &mut usize, upto: f64, steps: &mut Option<Steps>) {
    while *next < events.len() && events[*next].t <= upto {
        if let Some(st) = steps.as_mut() {
            match &events[*next].kind {
                StepKind::Enter { seq, tool } => st.enter(*seq, tool),
                StepKind::Leave { seq } => st.leave(*seq),
            }
        }
        *next += 1;
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

pub fn print_summary(r: &Report) {
    println!("trace              {}", r.trace);
    println!(
        "completion         {:.2} s (expected {:.2} s, x{:.3}){}{}",
        r.completion_s,
        r.expected_s,
        r.slowdown,
        if r.truncated {
            ", truncated by --max-duration"
        } else {
            ""
        },
        if r.interrupted { ", INTERRUPTED" } else { "" }
    );
    println!(
        "samples            {} replayed of {} in file, {} malformed skipped",
        r.samples_replayed, r.samples_total, r.malformed_skipped
    );
    println!(
        "peak memory        {:.1} MB (scale {}); the trace peaks at {:.1} s, {}",
        mb(r.peak_mem_bytes),
        r.mem_scale,
        r.trace_peak_s,
        if r.peak_replayed {
            "replayed"
        } else {
            "NOT replayed (try --window-at-peak)"
        }
    );
    if r.window_start_s > 0.0 {
        println!("window             from {:.1} s of the trace", r.window_start_s);
    }
    println!(
        "alloc latency      p50 {:.1} us, p95 {:.1} us, p99 {:.1} us, max {:.1} us ({} chunks of {} KiB, {} failed)",
        r.alloc_lat_p50_us,
        r.alloc_lat_p95_us,
        r.alloc_lat_p99_us,
        r.alloc_lat_max_us,
        r.alloc_count,
        r.chunk_kb,
        r.alloc_failures
    );
    println!(
        "cpu                {:.2} s used (user {:.2}, sys {:.2}), {:.2} s demanded",
        r.cpu_s, r.cpu_user_s, r.cpu_sys_s, r.cpu_demand_s
    );
    println!(
        "steps              {}",
        if r.steps_enabled {
            format!("{} entered", r.steps_entered)
        } else {
            "off".into()
        }
    );
}

/// Write the report as one JSON object (and a newline), via a temporary file
/// renamed into place.
pub fn write_json(r: &Report, path: &Path) -> Result<(), String> {
    let tmp = path.with_extension("json.tmp");
    let mut text = serde_json::to_string(r).map_err(|e| e.to_string())?;
    text.push('\n');
    let mut f = fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `run`: load, replay, print, write JSON. Returns the exit status.
pub fn run(o: &RunOpts) -> Result<Report, String> {
    if !(o.speed.is_finite() && o.speed > 0.0) {
        return Err(format!("--speed must be > 0, not {}", o.speed));
    }
    if !(o.mem_scale.is_finite() && o.mem_scale >= 0.0) {
        return Err(format!("--mem-scale must be >= 0, not {}", o.mem_scale));
    }
    if let Some(m) = o.max_duration {
        if !(m.is_finite() && m >= 0.0) {
            return Err(format!("--max-duration must be >= 0, not {m}"));
        }
    }
    if o.chunk_kb == 0 {
        return Err("--chunk-kb must be > 0".into());
    }
    if o.window_at_peak && o.max_duration.is_none() {
        return Err("--window-at-peak needs --max-duration (the window's length)".into());
    }
    let full = trace::load(&o.trace)?;
    let mut start = 0.0;
    if let (true, Some(m)) = (o.window_at_peak, o.max_duration) {
        start = trace::peak_window_start(full.duration(), full.peak_t(), m * o.speed);
    }
    let tr = if start > 0.0 { full.from(start) } else { full.clone() };
    let mut r = replay(&tr, o);
    // the peak and the window in the whole trace's time
    let peak = full.peak_t();
    r.window_start_s = round3(start);
    r.trace_peak_s = round3(peak);
    r.peak_replayed = peak >= start - 1e-6 && peak <= start + r.expected_s * o.speed + 1e-6;
    r.truncated |= start > 0.0;
    print_summary(&r);
    if let Some(p) = &o.json {
        write_json(&r, p)?;
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Sample, ToolCall};

    fn synthetic(points: &[(f64, u64, f64)]) -> Trace {
        Trace {
            name: "test/synthetic".into(),
            dir: PathBuf::from("/nonexistent"),
            samples: points
                .iter()
                .map(|&(t, mem_bytes, cpu_pct)| Sample {
                    epoch: 1000.0 + t,
                    t,
                    mem_bytes,
                    cpu_pct,
                })
                .collect(),
            samples_in_file: points.len(),
            malformed: 0,
            tool_calls: None,
            tool_calls_skipped: 0,
        }
    }

    #[test]
    fn short_replay() {
        // 1.5 s of trace at speed 10 = 0.15 s.
        let tr = synthetic(&[
            (0.0, 8 << 20, 0.0),
            (0.5, 24 << 20, 50.0),
            (1.0, 4 << 20, 150.0),
            (1.5, 16 << 20, 20.0),
        ]);
        let o = RunOpts {
            trace: tr.dir.clone(),
            speed: 10.0,
            mem_scale: 1.0,
            max_duration: None,
            window_at_peak: false,
            step_parent: None,
            chunk_kb: 1024,
            json: None,
        };
        let r = replay(&tr, &o);
        assert_eq!(r.samples_replayed, 4);
        assert!(!r.truncated && !r.interrupted);
        assert_eq!(r.peak_mem_bytes, 24 << 20);
        assert_eq!(r.alloc_count, 8 + 16 + 12);
        assert_eq!(r.alloc_lat_quantiles_us.len(), 101);
        assert!(r.alloc_lat_p50_us > 0.0 && r.alloc_lat_p99_us <= r.alloc_lat_max_us);
        assert_eq!(r.expected_s, 0.15);
        assert!(r.completion_s >= 0.149, "{}", r.completion_s);
        assert!((r.cpu_demand_s - 0.11).abs() < 1e-9, "{}", r.cpu_demand_s);
        assert!(r.cpu_s >= 0.05, "{}", r.cpu_s);
        let tl: Vec<f64> = r.mem_timeline.iter().map(|p| p[1]).collect();
        assert_eq!(
            tl,
            vec![
                8.0 * 1048576.0,
                24.0 * 1048576.0,
                4.0 * 1048576.0,
                16.0 * 1048576.0
            ]
        );
        // Half-size scale and a cut after 0.5 trace seconds (0.05 s at x10).
        let o2 = RunOpts {
            mem_scale: 0.5,
            max_duration: Some(0.05),
            window_at_peak: false,
            ..o
        };
        let r2 = replay(&tr, &o2);
        assert_eq!(r2.samples_replayed, 2);
        assert!(r2.truncated);
        assert_eq!(r2.peak_mem_bytes, 12 << 20);
        let v = serde_json::to_value(&r2).unwrap();
        for k in [
            "completion_s",
            "alloc_lat_p99_us",
            "alloc_lat_quantiles_us",
            "oom_killed",
            "mem_timeline",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn steps_follow_tool_calls() {
        let d = crate::steps::tests::fake_parent("replay-steps");
        let mut tr = synthetic(&[
            (0.0, 1 << 20, 10.0),
            (1.0, 1 << 20, 10.0),
            (2.0, 1 << 20, 10.0),
        ]);
        let call = |seq, tool: &str, start, end| ToolCall {
            seq,
            tool: tool.into(),
            start,
            end,
        };
        tr.tool_calls = Some(vec![
            call(1, "Read", 1000.2, Some(1000.3)),
            call(2, "Bash", 1001.5, None),
            call(3, "Edit", 1005.0, None), // after the trace: not replayed
        ]);
        let o = RunOpts {
            trace: tr.dir.clone(),
            speed: 20.0,
            mem_scale: 1.0,
            max_duration: None,
            window_at_peak: false,
            step_parent: Some(d.clone()),
            chunk_kb: 256,
            json: None,
        };
        let r = replay(&tr, &o);
        assert!(r.steps_enabled);
        assert_eq!(r.steps_entered, 2);
        assert!(d.join("step_1_read").is_dir() && d.join("step_2_bash").is_dir());
        assert!(!d.join("step_3_edit").exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
