//! A real, throwaway `redis-server` for tests that need a store.
//!
//! [`RedisServer::start`] runs `redis-server` in a fresh temporary directory,
//! listening on a unix socket only (no TCP port), with persistence off, and
//! waits until it answers `PING`. Dropping the value kills the process, waits
//! for it and removes the directory. [`kill`](RedisServer::kill) and
//! [`restart`](RedisServer::restart) simulate a store outage and its recovery
//! on the same socket path.
//!
//! The binary is `$PALISADE_REDIS_SERVER` when set, else `redis-server` on
//! `PATH`. When it is missing, [`RedisServer::start`] returns
//! [`TestkitError::RedisNotFound`], whose message says how to install it:
//! tests that need Redis fail, they never skip.
//!
//! [`RedisServer::command`] sends one command over the socket with raw RESP,
//! for readiness checks and for tests that look at the store directly; clients
//! under test connect with [`RedisServer::url`].
//!
//! # Example
//!
//! ```
//! use palisade_testkit::redis::{RedisServer, Reply};
//!
//! let mut redis = RedisServer::start().unwrap();
//! assert!(redis.url().starts_with("redis+unix:///"));
//! redis.ping().unwrap();
//! redis.command(&["SET", "greeting", "hello"]).unwrap();
//! assert_eq!(
//!     redis.command(&["GET", "greeting"]).unwrap(),
//!     Reply::Bulk(b"hello".to_vec())
//! );
//!
//! redis.kill(); // the store goes away ...
//! assert!(redis.ping().is_err());
//! redis.restart().unwrap(); // ... and comes back, empty, on the same socket
//! redis.ping().unwrap();
//! ```

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestkitError;
use crate::server::{is_executable, tail};

/// The environment variable that names the `redis-server` binary to run.
pub const BINARY_ENV: &str = "PALISADE_REDIS_SERVER";

/// How long [`RedisServer::start`] and [`RedisServer::restart`] wait for the
/// server to answer `PING`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// The read and write timeout of one command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest socket path we create (`sun_path` holds 104 to 108 bytes).
const MAX_SOCKET_PATH: usize = 100;
/// The longest reply line (status, error, length header) we accept.
const MAX_LINE: u64 = 64 * 1024;
/// Redis's own default `proto-max-bulk-len`.
const MAX_BULK: i64 = 512 * 1024 * 1024;
/// How deeply nested arrays may be.
const MAX_DEPTH: usize = 32;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, such as `OK` or `PONG`.
    Status(String),
    /// An integer.
    Integer(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// The null bulk string or the null array: a missing key, a timed-out
    /// blocking pop.
    Nil,
    /// An array of replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a status or of a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Status(s) => Some(s),
            Self::Bulk(b) => std::str::from_utf8(b).ok(),
            Self::Integer(_) | Self::Nil | Self::Array(_) => None,
        }
    }
}

/// A `redis-server` process listening on a unix socket in its own temporary
/// directory.
///
/// Drop kills the process, waits for it and removes the directory.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    stderr: PathBuf,
    child: Option<Child>,
    // Dropped after `Drop::drop` has killed the process.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `$PALISADE_REDIS_SERVER`, or `redis-server` from `PATH`, and
    /// waits until it answers `PING`.
    ///
    /// Fails with [`TestkitError::RedisNotFound`] when there is no such
    /// binary, and with [`TestkitError::NotReady`] (quoting the end of the
    /// server's log) when it exits early or is not ready within
    /// [`READY_TIMEOUT`].
    pub fn start() -> Result<Self, TestkitError> {
        match std::env::var_os(BINARY_ENV) {
            Some(binary) if !binary.is_empty() => Self::start_with(binary),
            _ => Self::start_with("redis-server"),
        }
    }

    /// Like [`start`](Self::start), with the binary given instead of taken
    /// from the environment.
    ///
    /// A bare name (`redis-server`) is looked up on `PATH`; anything with a
    /// `/` is used as the path of the binary.
    pub fn start_with(binary: impl AsRef<Path>) -> Result<Self, TestkitError> {
        let binary = resolve_binary(binary.as_ref())?;
        let dir = temp_dir()?;
        let socket = dir.path().join("redis.sock");
        let log = dir.path().join("redis.log");
        let config = dir.path().join("redis.conf");
        let stderr = dir.path().join("redis.stderr");
        fs::write(&config, config_text(dir.path(), &socket, &log)?)
            .map_err(|e| TestkitError::io(format!("writing {}", config.display()), e))?;
        let mut server = Self {
            binary,
            config,
            socket,
            log,
            stderr,
            child: None,
            dir,
        };
        server.spawn()?;
        Ok(server)
    }

    /// The path of the unix socket the server listens on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The temporary directory that holds the socket, configuration and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The URL clients connect with: `redis+unix://` followed by the socket
    /// path.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket.display())
    }

    /// The process id of the running server, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.kill();
                false
            }
            None => false,
        }
    }

    /// Stops the server at once (`SIGKILL`), as a store outage would, and
    /// waits for the process. Commands fail until [`restart`](Self::restart).
    /// Calling it again does nothing.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process has already exited; `wait` reaps it
            // either way.
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed server leaves its socket file behind; remove it so clients
        // see the outage as "no such socket" rather than a refused connection.
        let _ = fs::remove_file(&self.socket);
    }

    /// Starts the server again on the same socket path and waits until it
    /// answers `PING`. The store comes back empty: persistence is off.
    ///
    /// A running server is killed first.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        self.spawn()
    }

    /// Sends `PING` and checks that the answer is `PONG`.
    pub fn ping(&self) -> Result<(), TestkitError> {
        ping(&self.socket, COMMAND_TIMEOUT)
    }

    /// Sends one command and returns its reply. An error reply becomes
    /// [`TestkitError::Redis`].
    pub fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Reply, TestkitError> {
        command(&self.socket, args, COMMAND_TIMEOUT)
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let stderr = File::create(&self.stderr)
            .map_err(|e| TestkitError::io(format!("creating {}", self.stderr.display()), e))?;
        let stdout = stderr
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the stderr file", e))?;
        let child = Command::new(&self.binary)
            .arg(&self.config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    TestkitError::RedisNotFound {
                        searched: format!("`{}` could not be run", self.binary.display()),
                    }
                } else {
                    TestkitError::Spawn {
                        binary: self.binary.clone(),
                        source,
                    }
                }
            })?;
        self.child = Some(child);
        let ready = self.wait_ready();
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("redis-server exited early ({status})")),
                Some(Err(e)) => Some(format!("could not watch the redis-server process: {e}")),
                None => Some("redis-server is not running".to_owned()),
            };
            if let Some(reason) = exited {
                return Err(self.not_ready(reason));
            }
            if ping(&self.socket, PROBE_TIMEOUT).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!(
                    "no PONG on {} within {READY_TIMEOUT:?}",
                    self.socket.display()
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn not_ready(&self, reason: String) -> TestkitError {
        let mut log_tail = String::new();
        for (name, path) in [("log", &self.log), ("stderr", &self.stderr)] {
            let text = tail(path);
            if !text.trim().is_empty() {
                // `write!` to a `String` cannot fail.
                let _ = write!(
                    log_tail,
                    "--- last lines of redis-server's {name} ---\n{text}"
                );
            }
        }
        if log_tail.is_empty() {
            log_tail.push_str("(redis-server wrote nothing to its log or stderr)\n");
        }
        TestkitError::NotReady {
            server: "redis-server",
            reason,
            log_tail,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `PING` to the server at `socket` and checks that it answers `PONG`.
fn ping(socket: &Path, timeout: Duration) -> Result<(), TestkitError> {
    match command(socket, &["PING"], timeout)? {
        Reply::Status(s) if s == "PONG" => Ok(()),
        other => Err(TestkitError::Protocol(format!("PING answered {other:?}"))),
    }
}

/// Sends one command to the server at `socket` and reads its reply.
fn command<A: AsRef<[u8]>>(
    socket: &Path,
    args: &[A],
    timeout: Duration,
) -> Result<Reply, TestkitError> {
    let context = |what: &str| format!("{what} {}", socket.display());
    let mut stream =
        UnixStream::connect(socket).map_err(|e| TestkitError::io(context("connecting to"), e))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| TestkitError::io(context("setting timeouts on"), e))?;
    stream
        .write_all(&encode(args))
        .map_err(|e| TestkitError::io(context("writing to"), e))?;
    let mut reader = BufReader::new(stream);
    read_reply(&mut reader, 0)
}

/// A command as a RESP array of bulk strings.
fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead, depth: usize) -> Result<Reply, TestkitError> {
    if depth > MAX_DEPTH {
        return Err(TestkitError::Protocol(format!(
            "arrays nested deeper than {MAX_DEPTH}"
        )));
    }
    let line = read_line(reader)?;
    let Some((&kind, rest)) = line.split_first() else {
        return Err(TestkitError::Protocol("an empty line".to_owned()));
    };
    let text = String::from_utf8_lossy(rest);
    match kind {
        b'+' => Ok(Reply::Status(text.into_owned())),
        b'-' => Err(TestkitError::Redis(text.into_owned())),
        b':' => parse_int(&text).map(Reply::Integer),
        b'$' => match parse_int(&text)? {
            -1 => Ok(Reply::Nil),
            len @ 0..=MAX_BULK => read_bulk(reader, len).map(Reply::Bulk),
            len => Err(TestkitError::Protocol(format!("bulk length {len}"))),
        },
        b'*' => match parse_int(&text)? {
            -1 => Ok(Reply::Nil),
            len @ 0.. => {
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(read_reply(reader, depth + 1)?);
                }
                Ok(Reply::Array(items))
            }
            len => Err(TestkitError::Protocol(format!("array length {len}"))),
        },
        other => Err(TestkitError::Protocol(format!(
            "a reply starting with {:?}",
            char::from(other)
        ))),
    }
}

/// One line of the reply, without its `\r\n`.
fn read_line(reader: &mut impl BufRead) -> Result<Vec<u8>, TestkitError> {
    let mut line = Vec::new();
    reader
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| TestkitError::io("reading a redis reply", e))?;
    match line.strip_suffix(b"\r\n") {
        Some(content) => Ok(content.to_vec()),
        None if line.is_empty() => Err(TestkitError::Protocol(
            "the connection closed before a reply".to_owned(),
        )),
        None => Err(TestkitError::Protocol("a line without its CRLF".to_owned())),
    }
}

fn read_bulk(reader: &mut impl BufRead, len: i64) -> Result<Vec<u8>, TestkitError> {
    // `len` is within 0..=MAX_BULK, so it and the CRLF fit in a u64.
    let wanted = len.unsigned_abs() + 2;
    let mut data = Vec::new();
    reader
        .take(wanted)
        .read_to_end(&mut data)
        .map_err(|e| TestkitError::io("reading a redis reply", e))?;
    if u64::try_from(data.len()).ok() != Some(wanted) {
        return Err(TestkitError::Protocol(
            "the connection closed inside a bulk string".to_owned(),
        ));
    }
    match data.strip_suffix(b"\r\n") {
        Some(content) => Ok(content.to_vec()),
        None => Err(TestkitError::Protocol(
            "a bulk string without its CRLF".to_owned(),
        )),
    }
}

fn parse_int(text: &str) -> Result<i64, TestkitError> {
    text.parse()
        .map_err(|_| TestkitError::Protocol(format!("{text:?} is not an integer")))
}

/// The binary to run: a bare name is looked up on `PATH`, a path must exist.
fn resolve_binary(binary: &Path) -> Result<PathBuf, TestkitError> {
    let is_bare_name = binary.components().count() == 1 && !binary.is_absolute();
    if !is_bare_name {
        return if is_executable(binary) {
            Ok(binary.to_path_buf())
        } else {
            Err(TestkitError::RedisNotFound {
                searched: format!("no executable file at `{}`", binary.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| TestkitError::RedisNotFound {
            searched: format!("no `{}` on PATH", binary.display()),
        })
}

/// A fresh temporary directory whose socket path fits in `sun_path`.
fn temp_dir() -> Result<TempDir, TestkitError> {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("palisade-redis-");
        builder
    };
    let dir = builder()
        .tempdir()
        .map_err(|e| TestkitError::io("creating a temporary directory", e))?;
    // "/redis.sock" is 11 bytes.
    if dir.path().as_os_str().len() + 11 <= MAX_SOCKET_PATH {
        return Ok(dir);
    }
    // A deep $TMPDIR (macOS, some CI runners) makes the socket path too long.
    builder()
        .tempdir_in("/tmp")
        .map_err(|e| TestkitError::io("creating a temporary directory in /tmp", e))
}

/// The configuration file: unix socket only, no persistence, logs in `dir`.
fn config_text(dir: &Path, socket: &Path, log: &Path) -> Result<String, TestkitError> {
    Ok(format!(
        "port 0\n\
         unixsocket {}\n\
         unixsocketperm 700\n\
         save \"\"\n\
         appendonly no\n\
         daemonize no\n\
         dir {}\n\
         logfile {}\n\
         protected-mode yes\n",
        quote(socket)?,
        quote(dir)?,
        quote(log)?,
    ))
}

/// `path` as a double-quoted redis configuration argument.
fn quote(path: &Path) -> Result<String, TestkitError> {
    let Some(text) = path.to_str() else {
        return Err(TestkitError::io(
            format!("using {} in redis.conf", path.display()),
            io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        ));
    };
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_ascii_control() => {
                // `write!` to a `String` cannot fail.
                let _ = write!(quoted, "\\x{:02x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Reply, TestkitError> {
        read_reply(&mut BufReader::new(bytes), 0)
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&["SET", "k", ""]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn parses_every_resp2_reply() {
        assert_eq!(parse(b"+OK\r\n").unwrap(), Reply::Status("OK".into()));
        assert_eq!(parse(b":-42\r\n").unwrap(), Reply::Integer(-42));
        assert_eq!(
            parse(b"$5\r\nhe\r\no\r\n").unwrap(),
            Reply::Bulk(b"he\r\no".to_vec())
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Nil);
        assert_eq!(parse(b"*-1\r\n").unwrap(), Reply::Nil);
        assert_eq!(
            parse(b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n").unwrap(),
            Reply::Array(vec![
                Reply::Bulk(b"a".to_vec()),
                Reply::Array(vec![Reply::Integer(1)])
            ])
        );
        assert!(matches!(parse(b"-ERR nope\r\n"), Err(TestkitError::Redis(m)) if m == "ERR nope"));
    }

    #[test]
    fn rejects_malformed_replies() {
        for bad in [
            &b""[..],
            b"+OK",
            b"$3\r\nab\r\n",
            b"$-2\r\n",
            b":x\r\n",
            b"?\r\n",
            b"*2\r\n:1\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(TestkitError::Protocol(_))),
                "{bad:?}"
            );
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(matches!(
            parse(deep.as_bytes()),
            Err(TestkitError::Protocol(_))
        ));
    }

    #[test]
    fn quotes_configuration_paths() {
        assert_eq!(
            quote(Path::new("/tmp/a b/\"x\"\\\n")).unwrap(),
            r#""/tmp/a b/\"x\"\\\x0a""#
        );
    }
}
