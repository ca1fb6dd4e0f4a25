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
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fresh scratch directory for @name.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("agentcg-client-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn one_connection_serves_many_requests() {
        let dir = scratch("many");
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
        let dir = scratch("big");
        let sock = dir.join("r.sock");
        let _listener = UnixListener::bind(&sock).unwrap();
        let mut c = Client::connect(&sock, Duration::from_secs(1)).unwrap();
        let e = format!("{:#}", c.exchange(&"x".repeat(MAX_LINE + 1)).unwrap_err());
        assert!(e.contains("more than the registry reads"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
