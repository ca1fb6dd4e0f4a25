//! The few libc calls std does not expose (std links libc already, so these
//! are plain `extern "C"` declarations; no crates needed). Linux only.

use std::io;
use std::os::raw::{c_int, c_long};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[repr(C)]
struct Timespec {
    tv_sec: c_long,
    tv_nsec: c_long,
}

extern "C" {
    fn prctl(option: c_int, ...) -> c_int;
    fn clock_gettime(clk: c_int, ts: *mut Timespec) -> c_int;
    fn fork() -> c_int;
    fn _exit(code: c_int) -> !;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn signal(sig: c_int, handler: usize) -> usize;
    fn nanosleep(req: *const Timespec, rem: *mut Timespec) -> c_int;
}

const PR_SET_TIMERSLACK: c_int = 29;
const CLOCK_THREAD_CPUTIME_ID: c_int = 3;
const SIGINT: c_int = 2;
const SIGTERM: c_int = 15;
const EINTR: i32 = 4;

/// Set the calling thread's timer slack (default 50 us for normal tasks) so
/// that sleeps measure the scheduler, not timer coalescing.
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: prctl(PR_SET_TIMERSLACK, ulong) has no memory effects.
    unsafe {
        prctl(PR_SET_TIMERSLACK, ns as std::os::raw::c_ulong);
    }
}

/// Sleep for @d in one system call; a signal ends it early (nanosleep is
/// never restarted after a handler ran). Unlike a polling loop, the thread
/// does not wake up until then, so the cgroup looks idle meanwhile.
pub fn sleep_until_signal(d: Duration) {
    let ts = Timespec { tv_sec: d.as_secs() as c_long, tv_nsec: d.subsec_nanos() as c_long };
    // SAFETY: ts is a valid timespec; no remainder is wanted.
    unsafe {
        nanosleep(&ts, std::ptr::null_mut());
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = Timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// fork(); the child immediately calls _exit(0) (async-signal-safe, so this
/// is fine in a multi-threaded process). The parent waits for it.
pub fn fork_and_wait() -> io::Result<()> {
    // SAFETY: the child only calls _exit.
    let pid = unsafe { fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe { _exit(0) }
    }
    let mut status: c_int = 0;
    loop {
        // SAFETY: status is a valid int.
        let r = unsafe { waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(EINTR) {
            return Err(e);
        }
    }
}

/// Set by SIGINT/SIGTERM: workloads stop early and still print their result.
pub static SIGNALED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_sig: c_int) {
    SIGNALED.store(true, Ordering::SeqCst);
}

pub fn install_stop_handlers() {
    let h = on_signal as extern "C" fn(c_int) as usize;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        signal(SIGINT, h);
        signal(SIGTERM, h);
    }
}
