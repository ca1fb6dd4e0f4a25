//! The session registry's wire protocol: one JSON object per line over the
//! registry's unix socket (`--registry-socket`, 0600, root only), one
//! reply line per request. A leaf module: the scheduler (src/registry.rs)
//! and its clients (the OCI hook, src/hook.rs) share these types and
//! nothing else.
//!
//! ```text
//! {"op":"register","id":"4f2a…","cgroup":"/system.slice/docker-4f2a….scope","profile":"bg","labels":{"agentcg.io/session":"s1"}}
//! {"ok":true}
//! {"op":"unregister","id":"4f2a…"}
//! {"ok":true,"removed":true}
//! {"op":"list"}
//! {"ok":true,"sessions":[{"id":"4f2a…","cgroup":"/system.slice/docker-4f2a….scope","profile":"bg",…}]}
//! ```
//!
//! `cgroup` is the path as `/proc/<pid>/cgroup` prints it (relative to the
//! cgroup2 mount, with a leading `/`). Registering an id again replaces its
//! entry (a client that restarts re-sends its state); unregistering an id
//! that is not there is not an error (`"removed":false`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the registry listens unless `--registry-socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/scx_agentcg/registry.sock";

/// The longest request line the registry reads.
pub const MAX_LINE: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Make @cgroup a session with @profile, known by @id (a container id).
    Register {
        id: String,
        cgroup: String,
        profile: String,
        /// the session's name in stats and metrics (default: the id)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
    },
    /// Forget @id (its cgroup is left alone).
    Unregister { id: String },
    /// Every registration.
    List,
}

/// One registration as the registry holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub id: String,
    pub cgroup: String,
    pub profile: String,
    pub session: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<Vec<Registration>>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply { ok: true, ..Default::default() }
    }
    pub fn err(e: impl Into<String>) -> Reply {
        Reply { ok: false, error: Some(e.into()), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_fields_are_refused() {
        let r: Request = serde_json::from_str(r#"{"op":"register","id":"c1","cgroup":"/a/b","profile":"bg"}"#).unwrap();
        assert_eq!(
            r,
            Request::Register {
                id: "c1".into(),
                cgroup: "/a/b".into(),
                profile: "bg".into(),
                session: None,
                labels: BTreeMap::new()
            }
        );
        let back: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(serde_json::from_str::<Request>(r#"{"op":"list"}"#).unwrap(), Request::List);
        let e = serde_json::from_str::<Request>(r#"{"op":"register","id":"c1","cgroup":"/a","profile":"bg","prio":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prio"), "{e}");
        assert!(serde_json::from_str::<Request>(r#"{"op":"freeze","id":"c1"}"#).is_err());
        assert_eq!(serde_json::to_string(&Reply::ok()).unwrap(), r#"{"ok":true}"#);
    }
}
