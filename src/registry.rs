//! The session registry (`--registry-socket`): sessions identified by a
//! cgroup anywhere in the cgroup2 tree (a container's scope, where its
//! runtime put it), with a profile, registered over a root-only unix
//! socket by an OCI hook (src/hook.rs), a node agent, or by hand
//! (`scx_agentcg registry`). The protocol is in src/registry_proto.rs.
//!
//! A registration is checked before it changes anything: the cgroup must
//! exist below the cgroup2 mount (not the root, no `..`), the profile must
//! be one of the policy's, and the session name must not be taken by
//! another cgroup. An id registered again replaces its entry. An entry
//! whose cgroup is removed (or re-created: another inode) is dropped by
//! [`Registry::prune`], which the scheduler runs every loop tick, so
//! nothing leaks when a client never unregisters.
//!
//! The socket thread only parses lines and hands each request to the
//! scheduler thread, which owns the [`Registry`] and answers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use crossbeam::channel::{bounded, Receiver, Sender};
use log::{info, warn};

use crate::registry_proto::{Registration, Reply, Request, MAX_LINE};

/// The longest id and session name accepted.
const MAX_NAME: usize = 256;

/// One registered session and where its cgroup is.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub reg: Registration,
    /// the cgroup's path relative to the cgroup2 root, without slashes at
    /// either end (as the stats key sessions)
    pub rel: String,
    /// its inode: the cgroup id BPF sees
    pub ino: u64,
}

/// The registrations, keyed by id.
#[derive(Debug)]
pub struct Registry {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!("{what} {s:?} must be 1 to {MAX_NAME} characters, without '/' or control characters"));
    }
    Ok(())
}

/// A cgroup path as /proc/PID/cgroup prints it ("/a/b"), relative to the
/// cgroup2 mount: "a/b", refused if it leaves the mount or is the root.
pub fn relative_cgroup(path: &str) -> Result<String, String> {
    let rel = path.trim_matches('/');
    if !path.starts_with('/') {
        return Err(format!(
            "cgroup {path:?} must be the path /proc/<pid>/cgroup shows (starting with '/', relative to the cgroup2 mount)"
        ));
    }
    if rel.is_empty() {
        return Err("cgroup \"/\" is the root: register the container's own cgroup".into());
    }
    if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("cgroup {path:?} has an empty, '.' or '..' component"));
    }
    Ok(rel.to_string())
}

impl Registry {
    pub fn new(root: &Path) -> Self {
        Registry { root: root.to_path_buf(), entries: BTreeMap::new() }
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Check a registration against the tree, the profiles and the other
    /// entries (@taken(name, rel): a session or cgroup the managed parent
    /// has already).
    fn check(&self, req: &Request, profiles: &[String], taken: &dyn Fn(&str, &str) -> bool) -> Result<Entry, String> {
        let Request::Register { id, cgroup, profile, session, labels } = req else {
            return Err("not a registration".into());
        };
        check_name("id", id)?;
        let name = session.clone().unwrap_or_else(|| id.clone());
        check_name("session", &name)?;
        let rel = relative_cgroup(cgroup)?;
        let dir = self.root.join(&rel);
        let meta = std::fs::metadata(&dir).map_err(|e| {
            format!("cgroup {cgroup}: {} ({e}): register a cgroup that exists", dir.display())
        })?;
        if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
            return Err(format!("cgroup {cgroup}: {} is not a cgroup directory", dir.display()));
        }
        if !profiles.iter().any(|p| p == profile) {
            return Err(format!(
                "profile {profile:?} is not in the policy (profiles: {}): add [profile.{profile}] or pick one of those",
                if profiles.is_empty() { "none".to_string() } else { profiles.join(", ") }
            ));
        }
        for e in self.entries.values() {
            if e.reg.id == *id {
                continue;
            }
            if e.reg.session == name {
                return Err(format!("session {name:?} is already registered by id {:?} (cgroup {})", e.reg.id, e.reg.cgroup));
            }
            if e.rel == rel {
                return Err(format!("cgroup {cgroup} is already registered by id {:?}", e.reg.id));
            }
        }
        if taken(&name, &rel) {
            return Err(format!(
                "session {name:?} (cgroup {cgroup}): --cell-parent-cgroup has a session of that name or that cgroup already: \
                 register another name, or leave the parent's children to it"
            ));
        }
        Ok(Entry {
            reg: Registration {
                id: id.clone(),
                cgroup: format!("/{rel}"),
                profile: profile.clone(),
                session: name,
                labels: labels.clone(),
            },
            rel,
            ino: meta.ino(),
        })
    }

    /// Answer @req; the bool says whether the registrations changed.
    pub fn apply(&mut self, req: &Request, profiles: &[String], taken: &dyn Fn(&str, &str) -> bool) -> (Reply, bool) {
        match req {
            Request::Register { id, .. } => match self.check(req, profiles, taken) {
                Ok(e) => {
                    let changed = self.entries.get(id) != Some(&e);
                    if changed {
                        info!("registry: session {} is cgroup {} (profile {}, id {id})", e.reg.session, e.reg.cgroup, e.reg.profile);
                    }
                    self.entries.insert(id.clone(), e);
                    (Reply::ok(), changed)
                }
                Err(msg) => (Reply::err(msg), false),
            },
            Request::Unregister { id } => {
                let removed = self.entries.remove(id);
                if let Some(e) = &removed {
                    info!("registry: session {} (id {id}) unregistered", e.reg.session);
                }
                (Reply { ok: true, removed: Some(removed.is_some()), ..Default::default() }, removed.is_some())
            }
            Request::List => (
                Reply { ok: true, sessions: Some(self.entries.values().map(|e| e.reg.clone()).collect()), ..Default::default() },
                false,
            ),
        }
    }

    /// Drop the entries whose cgroup is gone (or is another cgroup of the
    /// same path now); returns their session names.
    pub fn prune(&mut self) -> Vec<String> {
        let root = &self.root;
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| std::fs::metadata(root.join(&e.rel)).map(|m| m.ino() != e.ino).unwrap_or(true))
            .map(|(id, _)| id.clone())
            .collect();
        gone.into_iter()
            .filter_map(|id| self.entries.remove(&id))
            .map(|e| {
                info!("registry: session {} (id {}): its cgroup {} is gone", e.reg.session, e.reg.id, e.reg.cgroup);
                e.reg.session
            })
            .collect()
    }

    /// Entries whose profile a reloaded policy no longer has.
    pub fn without_profile(&self, profiles: &[String]) -> Vec<&Entry> {
        self.entries.values().filter(|e| !profiles.contains(&e.reg.profile)).collect()
    }
}

/// The `taken` check of [`Registry::apply`] for a managed parent @parent
/// (relative to the root, "" for none) with children @children: a name
/// of one of them, or a cgroup directly below the parent.
pub fn taken_by_parent<'a>(parent: &'a str, children: &'a [String]) -> impl Fn(&str, &str) -> bool + 'a {
    move |name: &str, rel: &str| {
        !parent.is_empty()
            && (children.iter().any(|c| c == name) || rel.rsplit_once('/').is_some_and(|(p, _)| p == parent))
    }
}

/// A request from the socket thread and where its reply goes.
pub type Pending = (Request, Sender<Reply>);

/// Bind @path (0600, in a directory only root can enter if we create it)
/// and serve until @shutdown. A socket file nobody answers on is stale and
/// replaced; one that answers belongs to another scheduler: refused.
pub fn spawn(path: &Path, shutdown: Arc<AtomicBool>) -> Result<Receiver<Pending>> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("--registry-socket: cannot create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!(
                "--registry-socket {}: another process serves there (another scx_agentcg?): stop it or pick another path",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("--registry-socket: cannot remove the stale {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("--registry-socket: cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    info!("registry: listening on {}", path.display());
    let (tx, rx) = bounded::<Pending>(64);
    let sock = path.to_path_buf();
    std::thread::Builder::new().name("registry".into()).spawn(move || {
        while !shutdown.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    let tx = tx.clone();
                    // one thread per client: a slow client blocks only itself
                    let _ = std::thread::Builder::new()
                        .name("registry-conn".into())
                        .spawn(move || serve(stream, tx));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    warn!("registry: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let _ = std::fs::remove_file(&sock);
    })?;
    Ok(rx)
}

/// One client: a reply line per request line, until it hangs up.
fn serve(stream: UnixStream, tx: Sender<Pending>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let Ok(mut out) = stream.try_clone() else { return };
    let mut lines = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let n = match (&mut lines).take(MAX_LINE as u64 + 1).read_line(&mut line) {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let reply = if line.len() > MAX_LINE {
            Reply::err(format!("request longer than {MAX_LINE} bytes"))
        } else if line.trim().is_empty() {
            continue;
        } else {
            match serde_json::from_str::<Request>(line.trim()) {
                Err(e) => Reply::err(format!("bad request: {e}")),
                Ok(req) => {
                    let (rtx, rrx) = bounded(1);
                    if tx.send((req, rtx)).is_err() {
                        return;
                    }
                    rrx.recv_timeout(Duration::from_secs(5))
                        .unwrap_or_else(|_| Reply::err("the scheduler did not answer within 5 s"))
                }
            }
        };
        let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| r#"{"ok":false}"#.into());
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
        if line.len() > MAX_LINE {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("agentcg-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["kubepods.slice/pod1/cri-c1", "kubepods.slice/pod1/cri-c2", "system.slice/docker-9.scope"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::write(root.join(d).join("cgroup.procs"), "").unwrap();
        }
        std::fs::create_dir_all(root.join("plain")).unwrap();
        root
    }

    fn reg(id: &str, cg: &str, profile: &str, session: Option<&str>) -> Request {
        Request::Register {
            id: id.into(),
            cgroup: cg.into(),
            profile: profile.into(),
            session: session.map(String::from),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn paths_are_relative_to_the_mount_and_stay_inside_it() {
        assert_eq!(relative_cgroup("/a/b.scope").unwrap(), "a/b.scope");
        assert_eq!(relative_cgroup("/a/b/").unwrap(), "a/b");
        for bad in ["a/b", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(relative_cgroup(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn registrations_are_checked_replaced_and_pruned() {
        let root = tree("main");
        let mut r = Registry::new(&root);
        let profiles = vec!["chat".to_string(), "bg".to_string()];
        let none = |_: &str, _: &str| false;
        let (rep, ch) = r.apply(&reg("c1", "/kubepods.slice/pod1/cri-c1", "bg", None), &profiles, &none);
        assert!(rep.ok && ch, "{rep:?}");
        // the same again: harmless, no change
        let (rep, ch) = r.apply(&reg("c1", "/kubepods.slice/pod1/cri-c1", "bg", None), &profiles, &none);
        assert!(rep.ok && !ch);
        // a new profile for the same id replaces the entry
        let (rep, ch) = r.apply(&reg("c1", "/kubepods.slice/pod1/cri-c1", "chat", None), &profiles, &none);
        assert!(rep.ok && ch);
        assert_eq!(r.entries().next().unwrap().reg.profile, "chat");
        assert_eq!(r.entries().next().unwrap().rel, "kubepods.slice/pod1/cri-c1");

        let err = |req: Request, r: &mut Registry| r.apply(&req, &profiles, &none).0.error.unwrap();
        assert!(err(reg("c2", "/kubepods.slice/pod1/nope", "bg", None), &mut r).contains("register a cgroup that exists"));
        assert!(err(reg("c2", "/plain", "bg", None), &mut r).contains("not a cgroup directory"));
        assert!(err(reg("c2", "/kubepods.slice/pod1/cri-c2", "gpu", None), &mut r).contains("profiles: chat, bg"));
        assert!(err(reg("c2", "/kubepods.slice/pod1/cri-c1", "bg", None), &mut r).contains("already registered by id \"c1\""));
        assert!(err(reg("c2", "/kubepods.slice/pod1/cri-c2", "bg", Some("c1")), &mut r).contains("session \"c1\""));
        assert!(err(reg("", "/kubepods.slice/pod1/cri-c2", "bg", None), &mut r).contains("id \"\""));
        assert!(err(reg("c2", "/../etc", "bg", None), &mut r).contains("'..'"));
        let taken = |n: &str, _: &str| n == "chat";
        let (rep, _) = r.apply(&reg("c2", "/kubepods.slice/pod1/cri-c2", "bg", Some("chat")), &profiles, &taken);
        assert!(rep.error.unwrap().contains("--cell-parent-cgroup has a session of that name"));
        assert_eq!(r.len(), 1, "refused registrations change nothing");

        let (rep, _) = r.apply(&reg("d9", "/system.slice/docker-9.scope", "bg", Some("s9")), &profiles, &none);
        assert!(rep.ok);
        let (rep, _) = r.apply(&Request::List, &profiles, &none);
        let ids: Vec<_> = rep.sessions.unwrap().iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, ["c1", "d9"]);

        // the cgroup goes: pruned; re-created: another inode, pruned too
        std::fs::remove_dir_all(root.join("system.slice/docker-9.scope")).unwrap();
        assert_eq!(r.prune(), ["s9"]);
        assert!(r.prune().is_empty());
        let (rep, ch) = r.apply(&Request::Unregister { id: "c1".into() }, &profiles, &none);
        assert!(rep.ok && ch && rep.removed == Some(true));
        let (rep, ch) = r.apply(&Request::Unregister { id: "c1".into() }, &profiles, &none);
        assert!(rep.ok && !ch && rep.removed == Some(false));
        assert_eq!(r.len(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn no_leak_over_a_thousand_containers() {
        let root = tree("churn");
        let mut r = Registry::new(&root);
        let profiles = vec!["bg".to_string()];
        for i in 0..1000 {
            let d = root.join(format!("pods/c{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cgroup.procs"), "").unwrap();
            let (rep, _) = r.apply(&reg(&format!("c{i}"), &format!("/pods/c{i}"), "bg", None), &profiles, &|_, _| false);
            assert!(rep.ok, "{rep:?}");
            std::fs::remove_dir_all(&d).unwrap();
            if i % 100 == 99 {
                r.prune();
            }
        }
        r.prune();
        assert_eq!(r.len(), 0);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_socket_answers_a_line_per_request_and_refuses_a_second_server() {
        let dir = std::env::temp_dir().join(format!("agentcg-regsock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("reg.sock");
        let stop = Arc::new(AtomicBool::new(false));
        let rx = spawn(&path, stop.clone()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        let e = spawn(&path, stop.clone()).unwrap_err().to_string();
        assert!(e.contains("another process serves there"), "{e}");
        let answer = std::thread::spawn(move || {
            let (req, tx) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(req, Request::List);
            tx.send(Reply::ok()).unwrap();
        });
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"not json\n{\"op\":\"list\"}\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(l.contains("bad request"), "{l}");
        l.clear();
        r.read_line(&mut l).unwrap();
        assert_eq!(l.trim(), r#"{"ok":true}"#);
        answer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
