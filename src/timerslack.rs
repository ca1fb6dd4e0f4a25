// SPDX-License-Identifier: GPL-2.0-only
//! `--timer-slack-ns N`: setting the timer slack of the tasks of managed
//! cgroups through `/proc/<pid>/timerslack_ns`.
//!
//! Timer slack lets the kernel coalesce a task's timer wakeups; a larger
//! value for background work means fewer wakeups. Writing 0 gives the task
//! back its default slack. `/proc/<pid>/timerslack_ns` sets one thread (the
//! one whose id is <pid>); threads created later inherit their creator's
//! slack, so setting it on every id in `cgroup.threads`
//! ([`tids_of_cgroup`]) covers a whole cgroup, while [`pids_of_cgroup`]
//! (`cgroup.procs`) reaches the main thread of each process. Setting another
//! task's slack needs CAP_SYS_NICE.

#![allow(dead_code)]

use std::io::{ErrorKind, Write};
use std::path::Path;

/// The file that sets @pid's timer slack.
pub fn slack_path(pid: i32) -> String {
    format!("/proc/{pid}/timerslack_ns")
}

/// Set the timer slack of every task in @pids to @ns nanoseconds. Returns
/// (set, vanished, errors): a task that exited before or while it was set
/// (ENOENT, ESRCH) counts as vanished, not as an error; every other failure
/// is an error message naming the pid and the file.
pub fn apply(pids: impl Iterator<Item = i32>, ns: u64) -> (usize, usize, Vec<String>) {
    let mut ok = 0;
    let mut vanished = 0;
    let mut errors = Vec::new();
    let value = ns.to_string();
    for pid in pids {
        if pid <= 0 {
            errors.push(format!("pid {pid}: not a process id"));
            continue;
        }
        let path = slack_path(pid);
        let res = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        match res {
            Ok(()) => ok += 1,
            Err(e) if is_vanished(&e) => vanished += 1,
            Err(e) => errors.push(format!("pid {pid}: writing {value} to {path}: {e}")),
        }
    }
    (ok, vanished, errors)
}

fn is_vanished(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// The ids in a cgroup file listing one id a line; a missing file or a line
/// that is not a positive number is skipped.
fn ids_in(file: &Path) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// The processes of the cgroup @dir (its `cgroup.procs`); empty when the
/// cgroup is gone.
pub fn pids_of_cgroup(dir: &Path) -> Vec<i32> {
    ids_in(&dir.join("cgroup.procs"))
}

/// Every thread of the cgroup @dir (its `cgroup.threads`); empty when the
/// cgroup is gone.
pub fn tids_of_cgroup(dir: &Path) -> Vec<i32> {
    ids_in(&dir.join("cgroup.threads"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_slack() -> u64 {
        // SAFETY: PR_GET_TIMERSLACK takes no pointers; it returns the
        // calling thread's slack
        unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) as u64 }
    }

    #[test]
    fn sets_own_slack_and_reads_it_back() {
        // this thread's own id: setting one's own slack needs no privilege
        let tid = unsafe { libc::gettid() };
        let before = own_slack();
        let want = before + 12_345;
        let (ok, vanished, errors) = apply(std::iter::once(tid), want);
        assert_eq!((ok, vanished), (1, 0), "{errors:?}");
        assert!(errors.is_empty(), "{errors:?}");
        let text = std::fs::read_to_string(slack_path(tid)).unwrap();
        assert_eq!(text.trim().parse::<u64>().unwrap(), want);
        assert_eq!(own_slack(), want);
        let (ok, _, errors) = apply(std::iter::once(tid), before);
        assert_eq!(ok, 1, "{errors:?}");
        assert_eq!(own_slack(), before);
    }

    #[test]
    fn vanished_and_invalid_pids() {
        // pid_max is at most 2^22, so this id never exists
        let (ok, vanished, errors) = apply([i32::MAX, i32::MAX - 1].into_iter(), 50_000);
        assert_eq!((ok, vanished), (0, 2));
        assert!(errors.is_empty(), "{errors:?}");
        let (ok, vanished, errors) = apply([0, -3].into_iter(), 50_000);
        assert_eq!((ok, vanished, errors.len()), (0, 0, 2));
        assert!(errors[1].contains("pid -3"), "{errors:?}");
        assert_eq!(apply(std::iter::empty(), 1), (0, 0, Vec::new()));
    }

    #[test]
    fn cgroup_listings() {
        let dir = std::env::temp_dir().join(format!("agentcg-slack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        assert!(pids_of_cgroup(&dir).is_empty());
        std::fs::write(dir.join("cgroup.procs"), "12\n345\n\nbogus\n-1\n7\n").unwrap();
        std::fs::write(dir.join("cgroup.threads"), "12\n13\n").unwrap();
        assert_eq!(pids_of_cgroup(&dir), [12, 345, 7]);
        assert_eq!(tids_of_cgroup(&dir), [12, 13]);
        assert!(pids_of_cgroup(&dir.join("gone")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
