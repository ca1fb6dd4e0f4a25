// SPDX-License-Identifier: GPL-2.0-only
//! A client of the session registry's socket (src/registry.rs), for
//! `scx_agentcg hook` and `scx_agentcg registry`: one connection, any
//! number of request/reply lines over it, every step bounded in time, and
//! errors that say what to do (start the scheduler with
//! `--registry-socket`, run as root, look at a stuck scheduler).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::registry_proto::{Reply, Request, MAX_LINE};

/// The largest reply line read from the registry.
const MAX_REPLY_BYTES: u64 = 16 << 20;

pub struct Client {
    socket: PathBuf,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// the bound of each exchange
    timeout: Duration,
    /// one deadline for everything instead (send())
    deadline: Option<Instant>,
}

impl Client {
    /// Connect to @socket within @timeout; each exchange then has @timeout
    /// too (set_timeout changes that).
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client> {
        let stream = connect(socket, timeout)?;
        let reader = BufReader::new(stream.try_clone().context("cloning the registry connection")?);
        Ok(Client { socket: socket.to_path_buf(), stream, reader, timeout, deadline: None })
    }

    /// Send @req and return the reply.
    pub fn request(&mut self, req: &Request) -> Result<Reply> {
        let line = serde_json::to_string(req).context("encoding the request")?;
        Ok(self.exchange(&line)?.1)
    }

    /// Send one request line (as JSON text) and return the reply, as the
    /// line the registry sent and parsed.
    pub fn exchange(&mut self, line: &str) -> Result<(String, Reply)> {
        let deadline = self.deadline.unwrap_or_else(|| Instant::now() + self.timeout);
        let line = line.trim_end();
        if line.len() > MAX_LINE {
            bail!(
                "the request is {} bytes, more than the registry reads ({MAX_LINE}): fewer or shorter labels",
                line.len()
            );
        }
        self.stream
            .set_write_timeout(Some(self.time_left(deadline)?))
            .context("setting the socket's write timeout")?;
        let mut out = Vec::with_capacity(line.len() + 1);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        self.stream.write_all(&out).map_err(|e| self.io_error(&e, "sending the request to"))?;
        self.stream
            .set_read_timeout(Some(self.time_left(deadline)?))
            .context("setting the socket's read timeout")?;
        let mut answer = String::new();
        (&mut self.reader)
            .take(MAX_REPLY_BYTES)
            .read_line(&mut answer)
            .map_err(|e| self.io_error(&e, "reading the reply of"))?;
        let p = self.socket.display();
        if answer.is_empty() {
            bail!("the registry at {p} closed the connection without a reply");
        }
        if !answer.ends_with('\n') {
            bail!("the reply of the registry at {p} is cut short (no end of line)");
        }
        let text = answer.trim_end().to_string();
        let reply = serde_json::from_str(&text).with_context(|| {
            let shown: String = text.chars().take(200).collect();
            format!("the registry at {p} sent an invalid reply {shown:?}")
        })?;
        Ok((text, reply))
    }

    /// What is left of the exchange before @deadline; an error once nothing is.
    fn time_left(&self, deadline: Instant) -> Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the registry at {} did not answer within {} ms",
                self.socket.display(),
                self.timeout.as_millis()
            );
        }
        Ok(left)
    }

    /// A send or receive error; a timeout says how long it waited.
    fn io_error(&self, e: &std::io::Error, doing: &str) -> anyhow::Error {
        let p = self.socket.display();
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                anyhow!("{doing} the registry at {p}: no answer within {} ms", self.timeout.as_millis())
            }
            _ => anyhow!("{doing} the registry at {p}: {e}"),
        }
    }
}

/// Send @req to the registry at @socket and return its reply: connect,
/// write one line, read one line, all within @timeout.
pub fn send(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply> {
    let deadline = Instant::now() + timeout;
    let mut c = Client::connect(socket, timeout)?;
    c.deadline = Some(deadline);
    c.request(req)
}

/// Connect to @socket within @timeout. A unix socket connect blocks while
/// the listener's backlog is full (a stuck scheduler), so it runs in a
/// thread that is left behind if it takes too long.
fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream> {
    let (tx, rx) = mpsc::channel();
    let path = socket.to_path_buf();
    let _detached = std::thread::Builder::new()
        .name("registry-connect".into())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(path));
        })
        .context("starting a thread to connect")?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(connect_error(socket, &e)),
        Err(_) => bail!(
            "cannot connect to {}: no connection within {} ms (is the scheduler stuck?)",
            socket.display(),
            timeout.as_millis()
        ),
    }
}

/// A connect error that says what to do about it.
fn connect_error(socket: &Path, e: &std::io::Error) -> anyhow::Error {
    let p = socket.display();
    match e.kind() {
        ErrorKind::NotFound => anyhow!(
            "cannot connect to {p}: no such socket (the scheduler is not running with --registry-socket {p})"
        ),
        ErrorKind::ConnectionRefused => anyhow!(
            "cannot connect to {p}: nothing listens there (the scheduler is not running with \
             --registry-socket {p}; the socket is stale)"
        ),
        ErrorKind::PermissionDenied => {
            anyhow!("cannot connect to {p}: permission denied (the registry socket is root-only)")
        }
        _ => anyhow!("cannot connect to {p}: {e}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::registry_proto::Reply;
    use std::os::unix::net::UnixListener;
    use std::thread::JoinHandle;

    /// A fresh directory for one test (of this module or src/hook.rs).
    pub(crate) fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("scx_agentcg-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A registry stand-in: accepts one connection, reads one line, answers
    /// @reply and returns the line it read.
    pub(crate) fn serve_one(listener: UnixListener, reply: &'static str) -> JoinHandle<String> {
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line).unwrap();
            (&conn).write_all(reply.as_bytes()).unwrap();
            line
        })
    }

    #[test]
    fn send_writes_one_line_and_reads_the_reply() {
        let dir = scratch("send");
        let sock = dir.join("reg.sock");
        let server = serve_one(
            UnixListener::bind(&sock).unwrap(),
            "{\"ok\":true,\"removed\":true}\n",
        );
        let req = Request::Register {
            id: "c1".into(),
            cgroup: "/agentcg-pods/c1".into(),
            profile: "bg".into(),
            session: Some("pod-a".into()),
            labels: [("agentcg.io/profile".to_string(), "bg".to_string())].into(),
        };
        let reply = send(&sock, &req, Duration::from_secs(5)).unwrap();
        assert_eq!(
            reply,
            Reply {
                ok: true,
                removed: Some(true),
                ..Default::default()
            }
        );
        let line = server.join().unwrap();
        assert_eq!(line, format!("{}\n", serde_json::to_string(&req).unwrap()));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), req);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn send_reports_bad_replies() {
        let dir = scratch("send-bad");
        for (i, (reply, want)) in [
            ("", "closed the connection without a reply"),
            ("{\"ok\":true}", "cut short"),
            ("hello\n", "invalid reply"),
        ]
        .into_iter()
        .enumerate()
        {
            let sock = dir.join(format!("reg{i}.sock"));
            let server = serve_one(UnixListener::bind(&sock).unwrap(), reply);
            let e = format!(
                "{:#}",
                send(&sock, &Request::List, Duration::from_secs(5)).unwrap_err()
            );
            assert!(e.contains(want), "{reply:?}: {e}");
            server.join().unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn send_gives_up_when_the_registry_does_not_answer() {
        let dir = scratch("send-silent");
        let sock = dir.join("reg.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            // until the client gives up and closes
            let _ = conn.read_to_end(&mut all);
        });
        let t0 = Instant::now();
        let e = format!(
            "{:#}",
            send(&sock, &Request::List, Duration::from_millis(300)).unwrap_err()
        );
        assert!(e.contains("no answer within 300 ms"), "{e}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t0.elapsed()
        );
        server.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn send_to_a_missing_or_stale_socket_says_what_to_do() {
        let dir = scratch("send-missing");
        let sock = dir.join("none.sock");
        let e = format!(
            "{:#}",
            send(&sock, &Request::List, Duration::from_secs(1)).unwrap_err()
        );
        assert!(e.contains(&sock.display().to_string()), "{e}");
        assert!(
            e.contains("the scheduler is not running with --registry-socket"),
            "{e}"
        );
        // a socket nobody listens on any more
        let stale = dir.join("stale.sock");
        drop(UnixListener::bind(&stale).unwrap());
        let e = format!(
            "{:#}",
            send(&stale, &Request::List, Duration::from_secs(1)).unwrap_err()
        );
        assert!(
            e.contains("nothing listens there") && e.contains("--registry-socket"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_connection_serves_many_requests() {
        let dir = scratch("client-many");
        let sock = dir.join("r.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            // one accept only: a second connection would hang the client
            let (conn, _) = listener.accept().unwrap();
            let mut lines = BufReader::new(conn.try_clone().unwrap()).lines();
            let mut seen = Vec::new();
            for _ in 0..3 {
                let l = lines.next().unwrap().unwrap();
                (&conn).write_all(b"{\"ok\":true}\n").unwrap();
                seen.push(l);
            }
            seen
        });
        let mut c = Client::connect(&sock, Duration::from_secs(5)).unwrap();
        assert!(c.request(&Request::List).unwrap().ok);
        let (text, reply) = c.exchange("{\"op\":\"list\"}\n").unwrap();
        assert_eq!((text.as_str(), reply.ok), ("{\"ok\":true}", true));
        assert!(c.request(&Request::Unregister { id: "c1".into() }).unwrap().ok);
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen[2].contains("\"unregister\"") && seen[2].contains("\"c1\""), "{seen:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_oversized_request_is_refused_before_it_is_sent() {
        let dir = scratch("client-big");
        let sock = dir.join("r.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let mut c = Client::connect(&sock, Duration::from_secs(1)).unwrap();
        let e = format!("{:#}", c.exchange(&"x".repeat(MAX_LINE + 1)).unwrap_err());
        assert!(e.contains("more than the registry reads"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
