//! agentcg-load: workload generator for scx_agentcg tests and benchmarks.
//!
//! Every run prints exactly one result line to stdout:
//! `SUBCOMMAND key=value key=value ...`. See `agentcg-load help`.

mod args;
mod stats;
mod sys;

use std::fs;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use args::{Cmd, Common, Opts};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Resolve a cgroup path: absolute as given, else relative to /sys/fs/cgroup.
fn cgroup_dir(p: &str) -> PathBuf {
    if p.starts_with('/') {
        PathBuf::from(p)
    } else {
        PathBuf::from(CGROUP_ROOT).join(p)
    }
}

/// Move this whole process into the cgroup (must run before any thread).
fn join_cgroup(p: &str) -> Result<(), String> {
    let dir = cgroup_dir(p);
    let procs = dir.join("cgroup.procs");
    if !dir.is_dir() {
        return Err(format!("cgroup {} does not exist", dir.display()));
    }
    fs::write(&procs, format!("{}\n", std::process::id()))
        .map_err(|e| format!("cannot join cgroup {}: {e}", procs.display()))
}

/// usage_usec from a cgroup's cpu.stat.
fn cgroup_usage_us(p: &str) -> Result<u64, String> {
    let f = cgroup_dir(p).join("cpu.stat");
    let s = fs::read_to_string(&f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    s.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("no usage_usec in {}", f.display()))
}

/// Shared stop flag: set when the duration elapses or on SIGINT/SIGTERM.
struct Stop(AtomicBool);

impl Stop {
    fn new() -> Arc<Stop> {
        Arc::new(Stop(AtomicBool::new(false)))
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed) || sys::SIGNALED.load(Ordering::Relaxed)
    }
    /// Sleep in the calling (main) thread until `d` has passed or a signal
    /// arrived, then tell every worker to stop.
    fn after(&self, d: Duration) {
        let end = Instant::now() + d;
        while !sys::SIGNALED.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= end {
                break;
            }
            sys::sleep_until_signal(end - now);
        }
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Start `n` workers running `f(index, stop)`, stop them after the duration,
/// and return their results and the elapsed wall time.
fn run_workers<T, F>(n: usize, c: &Common, f: F) -> Result<(Vec<T>, f64), String>
where
    T: Send + 'static,
    F: Fn(usize, &Stop) -> T + Send + Sync + 'static,
{
    let stop = Stop::new();
    let f = Arc::new(f);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (stop, f) = (stop.clone(), f.clone());
        let h = thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || f(i, &stop))
            .map_err(|e| format!("cannot start thread: {e}"))?;
        handles.push(h);
    }
    stop.after(c.duration);
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.join().map_err(|_| "worker thread panicked".to_string())?);
    }
    Ok((out, start.elapsed().as_secs_f64()))
}

/// A fixed chunk of integer work the optimizer cannot remove.
#[inline(never)]
fn work_chunk(mut x: u64) -> u64 {
    for _ in 0..1000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

fn spin(c: &Common, threads: usize) -> Result<String, String> {
    let (loops, secs) = run_workers(threads, c, |i, stop| {
        let mut x = 0x9e37_79b9_7f4a_7c15 ^ i as u64;
        let mut n: u64 = 0;
        while !stop.is_set() {
            x = work_chunk(x);
            n += 1;
        }
        n
    })?;
    let total: u64 = loops.iter().sum();
    Ok(format!(
        "spin threads={threads} loops={total} min_thread_loops={} max_thread_loops={} \
         loops_per_sec={:.0} duration_s={secs:.3}",
        loops.iter().min().unwrap_or(&0),
        loops.iter().max().unwrap_or(&0),
        total as f64 / secs,
    ))
}

fn wakeup(c: &Common, interval_us: u64, threads: usize) -> Result<String, String> {
    let interval = Duration::from_micros(interval_us);
    let expect = (c.duration.as_secs_f64() * 1e6 / (interval_us.max(50) as f64)) as usize + 16;
    let (per_thread, secs) = run_workers(threads, c, move |_, stop| {
        sys::set_timer_slack_ns(1);
        let mut lat_ns: Vec<u64> = Vec::with_capacity(expect.min(10_000_000));
        while !stop.is_set() {
            let t0 = Instant::now();
            thread::sleep(interval);
            let late = t0.elapsed().saturating_sub(interval);
            lat_ns.push(late.as_nanos().min(u64::MAX as u128) as u64);
        }
        lat_ns
    })?;
    let mut all: Vec<u64> = per_thread.into_iter().flatten().collect();
    all.sort_unstable();
    let us = |p: f64| stats::ns_to_us(stats::percentile(&all, p));
    Ok(format!(
        "wakeup threads={threads} interval_us={interval_us} samples={} p50_us={} p90_us={} \
         p99_us={} max_us={} mean_us={:.1} duration_s={secs:.3}",
        all.len(),
        us(50.0),
        us(90.0),
        us(99.0),
        stats::ns_to_us(all.last().copied().unwrap_or(0)),
        stats::mean(&all) / 1000.0,
    ))
}

fn pingpong(c: &Common, pairs: usize) -> Result<String, String> {
    // Each pair: the "ping" worker (run by run_workers) writes to `to_pong`
    // and reads the reply; a "pong" thread echoes bytes until EOF.
    let (counts, secs) = run_workers(pairs, c, |_, stop| -> Result<u64, String> {
        let (mut ping_rx, mut pong_tx) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (mut pong_rx, mut to_pong) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
        let echo = thread::Builder::new()
            .name("pong".into())
            .spawn(move || {
                let mut b = [0u8; 1];
                loop {
                    match pong_rx.read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {
                            if pong_tx.write_all(&b).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
            })
            .map_err(|e| format!("cannot start thread: {e}"))?;
        let mut n: u64 = 0;
        let mut b = [b'x'; 1];
        let mut err = None;
        while !stop.is_set() {
            if let Err(e) = to_pong.write_all(&b).and_then(|_| ping_rx.read_exact(&mut b)) {
                err = Some(format!("pipe i/o: {e}"));
                break;
            }
            n += 1;
        }
        drop(to_pong); // EOF ends the echo thread
        let _ = echo.join();
        err.map_or(Ok(n), Err)
    })?;
    let total = sum_counts(counts)?;
    Ok(format!(
        "pingpong pairs={pairs} roundtrips={total} per_sec={:.0} duration_s={secs:.3}",
        total as f64 / secs
    ))
}

/// Sum the per-worker counts, failing on the first worker error.
fn sum_counts(counts: Vec<Result<u64, String>>) -> Result<u64, String> {
    counts.into_iter().sum()
}

fn forkstorm(
    c: &Common,
    procs: usize,
    exec: bool,
    exec_path: Option<String>,
) -> Result<String, String> {
    // With --exec: spawn (fork+exec) a program; by default ourselves with the
    // hidden no-op subcommand. Without: a bare fork() whose child _exit()s.
    let (prog, prog_args): (PathBuf, Vec<&str>) = match &exec_path {
        Some(p) => (PathBuf::from(p), vec![]),
        None => (
            std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?,
            vec![args::CHILD_CMD],
        ),
    };
    let (counts, secs) = run_workers(procs, c, move |_, stop| -> Result<u64, String> {
        let mut n: u64 = 0;
        while !stop.is_set() {
            if exec {
                let st = Command::new(&prog)
                    .args(&prog_args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .status()
                    .map_err(|e| format!("cannot spawn {}: {e}", prog.display()))?;
                if !st.success() {
                    return Err(format!("{} exited with {st}", prog.display()));
                }
            } else {
                sys::fork_and_wait().map_err(|e| format!("fork: {e}"))?;
            }
            n += 1;
        }
        Ok(n)
    })?;
    let total = sum_counts(counts)?;
    Ok(format!(
        "forkstorm procs={procs} mode={} spawned={total} per_sec={:.0} duration_s={secs:.3}",
        if exec { "exec" } else { "fork" },
        total as f64 / secs
    ))
}

fn burst(c: &Common, on_ms: f64, off_ms: f64, threads: usize) -> Result<String, String> {
    let on = Duration::from_secs_f64(on_ms / 1000.0);
    let off = Duration::from_secs_f64(off_ms / 1000.0);
    let (per_thread, secs) = run_workers(threads, c, move |i, stop| {
        sys::set_timer_slack_ns(1);
        let mut x = 0x2545_f491_4f6c_dd1d ^ i as u64;
        // Wall time each on-phase took: > on_ms means we were preempted or
        // throttled while trying to use on_ms of CPU.
        let mut on_wall_ns: Vec<u64> = Vec::new();
        while !stop.is_set() {
            let (cpu0, wall0) = (sys::thread_cpu_time(), Instant::now());
            while sys::thread_cpu_time() - cpu0 < on && !stop.is_set() {
                x = work_chunk(x);
            }
            if stop.is_set() {
                break; // partial cycle: not counted
            }
            on_wall_ns.push(wall0.elapsed().as_nanos() as u64);
            if !off.is_zero() {
                thread::sleep(off);
            }
        }
        on_wall_ns
    })?;
    let mut all: Vec<u64> = per_thread.into_iter().flatten().collect();
    all.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    Ok(format!(
        "burst threads={threads} on_ms={on_ms} off_ms={off_ms} cycles={} on_wall_mean_ms={:.3} \
         on_wall_p99_ms={:.3} on_wall_max_ms={:.3} duration_s={secs:.3}",
        all.len(),
        stats::mean(&all) / 1e6,
        ms(stats::percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or(0)),
    ))
}

/// Each thread owns mb / threads MiB and writes one byte of every page in
/// turn, forever: past memory.high this keeps the cgroup in reclaim (and,
/// with swap, swapping), which is what the thrash tests need.
fn memhog(c: &Common, mb: usize, threads: usize, rate_mb_s: Option<f64>) -> Result<String, String> {
    const PAGE: usize = 4096;
    const MIB: usize = 1 << 20;
    let per = (mb << 20) / threads.max(1);
    // seconds per MiB for each thread while the first sweep grows
    let pace = rate_mb_s.map(|r| threads.max(1) as f64 / r);
    let (per_thread, secs) = run_workers(threads, c, move |i, stop| {
        let mut buf = vec![0u8; per];
        let mut sweeps = 0u64;
        // never 0: a page of zeroes is not memory the kernel must keep
        // (THP splitting maps it to the zero page, zram stores it as a
        // pattern), and the first sweep of thread 0 would write only zeroes
        let mut v = (i % 255) as u8 + 1;
        let start = Instant::now();
        while !stop.is_set() {
            for off in (0..buf.len()).step_by(PAGE) {
                buf[off] = v;
                if let (0, Some(p)) = (sweeps, pace) {
                    if off % MIB == 0 {
                        let due = Duration::from_secs_f64(p * (off / MIB) as f64);
                        // saturating: the clock moves on between the test and the sleep
                        while start.elapsed() < due && !stop.is_set() {
                            std::thread::sleep(due.saturating_sub(start.elapsed()).min(Duration::from_millis(10)));
                        }
                    }
                }
                if off % (256 * PAGE) == 0 && stop.is_set() {
                    break;
                }
            }
            v = v % 255 + 1;
            sweeps += 1;
        }
        std::hint::black_box(&buf);
        sweeps
    })?;
    let sweeps: u64 = per_thread.iter().sum();
    Ok(format!("memhog mb={mb} threads={threads} sweeps={sweeps} duration_s={secs:.3}"))
}

/// Create and remove cgroups as fast as the kernel allows: one mkdir and
/// one rmdir per prefix and cycle, from this one process.
fn cgchurn(cycles: usize, prefixes: &[String]) -> Result<String, String> {
    let start = Instant::now();
    let dirs: Vec<PathBuf> = prefixes.iter().map(|p| cgroup_dir(p)).collect();
    for i in 0..cycles {
        for d in &dirs {
            let mut name = d.clone().into_os_string();
            name.push(i.to_string());
            let path = PathBuf::from(name);
            std::fs::create_dir(&path)
                .and_then(|_| std::fs::remove_dir(&path))
                .map_err(|e| format!("cycle {i}: {}: {e}", path.display()))?;
        }
    }
    Ok(format!(
        "cgchurn cycles={} duration_s={:.3}",
        cycles * dirs.len(),
        start.elapsed().as_secs_f64()
    ))
}

fn cpustat(paths: &[String]) -> Result<String, String> {
    let mut line = String::from("cpustat");
    for p in paths {
        line.push_str(&format!(" {p}={}", cgroup_usage_us(p)?));
    }
    Ok(line)
}

/// One raw request to a line-oriented JSON socket (the scx_stats protocol):
/// send the request line, return the first reply line unchanged.
fn rawreq(socket: &str, request: &str) -> Result<String, String> {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connecting to {socket}: {e}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok();
    s.write_all(request.as_bytes())
        .and_then(|_| s.write_all(b"\n"))
        .map_err(|e| format!("writing to {socket}: {e}"))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).map_err(|e| format!("reading from {socket}: {e}"))?;
    if line.is_empty() {
        return Err(format!("{socket} closed the connection without a reply"));
    }
    Ok(line.trim_end().to_string())
}

fn run(o: Opts) -> Result<String, String> {
    let c = &o.common;
    if let Some(cg) = &c.cgroup {
        join_cgroup(cg)?;
    }
    sys::install_stop_handlers();
    match o.cmd {
        Cmd::Spin { threads } => spin(c, threads),
        Cmd::Wakeup { interval_us, threads } => wakeup(c, interval_us, threads),
        Cmd::Pingpong { pairs } => pingpong(c, pairs),
        Cmd::Forkstorm { procs, exec, exec_path } => forkstorm(c, procs, exec, exec_path),
        Cmd::Burst { on_ms, off_ms, threads } => burst(c, on_ms, off_ms, threads),
        Cmd::Memhog { mb, threads, rate_mb_s } => memhog(c, mb, threads, rate_mb_s),
        Cmd::Cpustat { paths } => cpustat(&paths),
        Cmd::Cgchurn { cycles, prefixes } => cgchurn(cycles, &prefixes),
        Cmd::RawReq { socket, request } => rawreq(&socket, &request),
        Cmd::Child | Cmd::Help => unreachable!(),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match args::parse(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("agentcg-load: {e}");
            eprintln!("try 'agentcg-load help'");
            return ExitCode::from(2);
        }
    };
    match opts.cmd {
        Cmd::Child => return ExitCode::SUCCESS,
        Cmd::Help => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    match run(opts) {
        Ok(line) => {
            let mut out = io::stdout().lock();
            if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("agentcg-load: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths() {
        assert_eq!(cgroup_dir("a/b"), PathBuf::from("/sys/fs/cgroup/a/b"));
        assert_eq!(cgroup_dir("/x/y"), PathBuf::from("/x/y"));
    }

    #[test]
    fn cgchurn_creates_and_removes() {
        let base = std::env::temp_dir().join(format!("agentcg-churn-{}", std::process::id()));
        fs::create_dir_all(base.join("b")).unwrap();
        let pre = |s: &str| base.join(s).to_string_lossy().into_owned();
        let line = cgchurn(3, &[pre("s"), pre("b/x")]).unwrap();
        assert!(line.starts_with("cgchurn cycles=6 "), "{line}");
        assert_eq!(fs::read_dir(&base).unwrap().count(), 1, "only b/ is left");
        assert_eq!(fs::read_dir(base.join("b")).unwrap().count(), 0);
        // a missing parent is an error naming the path
        let e = cgchurn(1, &[pre("nope/s")]).unwrap_err();
        assert!(e.contains("nope/s0"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn short_runs_produce_one_parsable_line() {
        let c = Common { cgroup: None, duration: Duration::from_millis(100) };
        for line in [
            spin(&c, 2).unwrap(),
            wakeup(&c, 200, 1).unwrap(),
            pingpong(&c, 1).unwrap(),
            forkstorm(&c, 1, false, None).unwrap(),
            burst(&c, 2.0, 2.0, 1).unwrap(),
        ] {
            assert!(!line.contains('\n'));
            let mut it = line.split(' ');
            it.next().unwrap();
            for kv in it {
                let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("bad pair {kv}"));
                assert!(!k.is_empty() && !v.is_empty(), "{line}");
            }
        }
    }
}
