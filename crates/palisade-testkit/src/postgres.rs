//! A real, throwaway PostgreSQL cluster for tests that need a database.
//!
//! [`PostgresServer::start`] creates a cluster with `initdb` in a fresh
//! temporary directory and runs `postgres` on a unix socket in that directory
//! only (no TCP listener), then waits until `pg_isready` says it accepts
//! connections. The superuser is `palisade` with a random password
//! (SCRAM-SHA-256: clients really authenticate). Dropping the value stops the
//! server and removes the directory. [`kill`](PostgresServer::kill) and
//! [`restart`](PostgresServer::restart) simulate a database outage and its
//! recovery on the same socket; the data survives, as it would on a real
//! server. [`freeze`](PostgresServer::freeze) and
//! [`thaw`](PostgresServer::thaw) simulate a host that hangs instead.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the
//! directory is handed to an unprivileged user (`$PALISADE_PG_RUN_AS`, default
//! `nobody`) and `initdb` and `postgres` run as that user through `setpriv`.
//!
//! The binaries are looked for in `$PALISADE_PG_BINDIR`, then next to an
//! `initdb` on `PATH`, then in Debian's `/usr/lib/postgresql/<version>/bin`
//! (the newest version). When they are missing, [`PostgresServer::start`]
//! returns [`TestkitError::PostgresNotFound`], whose message says how to
//! install them: tests that need PostgreSQL fail, they never skip.
//!
//! # Example
//!
//! ```
//! use palisade_testkit::postgres::PostgresServer;
//!
//! let mut pg = PostgresServer::start().unwrap();
//! let url = pg.create_database("app").unwrap();
//! assert!(url.starts_with("postgres://palisade:"));
//! pg.psql("app", "CREATE TABLE t (n INT); INSERT INTO t VALUES (42)").unwrap();
//! assert_eq!(pg.psql("app", "SELECT n FROM t").unwrap(), "42");
//!
//! pg.kill(); // the database goes away ...
//! assert!(pg.psql("app", "SELECT 1").is_err());
//! pg.restart().unwrap(); // ... and comes back with its data
//! assert_eq!(pg.psql("app", "SELECT n FROM t").unwrap(), "42");
//! ```

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestkitError;
use crate::server::{is_executable, tail};

/// The environment variable that names the directory of `initdb`,
/// `postgres`, `pg_isready` and `psql`.
pub const BINDIR_ENV: &str = "PALISADE_PG_BINDIR";

/// The environment variable that names the user the server runs as when the
/// tests run as root (default `nobody`).
pub const RUN_AS_ENV: &str = "PALISADE_PG_RUN_AS";

/// The superuser of the cluster.
pub const SUPERUSER: &str = "palisade";

/// The port number in the socket's name (`.s.PGSQL.5432`); there is no TCP
/// listener.
pub const PORT: u16 = 5432;

/// How long [`PostgresServer::start`] and [`PostgresServer::restart`] wait
/// for the server to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`PostgresServer::kill`] waits for an immediate shutdown before
/// it sends `SIGKILL`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// The longest socket path we create (`sun_path` holds 104 to 108 bytes).
const MAX_SOCKET_PATH: usize = 100;
/// The binaries the server needs.
const TOOLS: [&str; 4] = ["initdb", "postgres", "pg_isready", "psql"];

/// A PostgreSQL cluster and its `postgres` process, on a unix socket in its
/// own temporary directory.
///
/// Drop stops the process (immediate shutdown), waits for it and removes
/// the directory. `Debug` leaves the password out.
pub struct PostgresServer {
    bindir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    password: String,
    durable: bool,
    run_as: Option<Account>,
    child: Option<Child>,
    // Dropped after `Drop::drop` has stopped the process.
    dir: TempDir,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("bindir", &self.bindir)
            .field("dir", &self.dir.path())
            .field("run_as", &self.run_as)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// The unprivileged account the server runs as when the tests run as root.
#[derive(Debug, Clone, Copy)]
struct Account {
    uid: u32,
    gid: u32,
}

impl PostgresServer {
    /// Creates a cluster and starts it; see the [module](self) documentation
    /// for where the binaries are looked for.
    ///
    /// Fails with [`TestkitError::PostgresNotFound`] when there are no
    /// binaries, [`TestkitError::Postgres`] when `initdb` fails, and
    /// [`TestkitError::NotReady`] (quoting the end of the server's log) when
    /// the server exits early or is not ready within [`READY_TIMEOUT`].
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_in(find_bindir()?, false)
    }

    /// Like [`start`](Self::start), with `fsync` on: every commit reaches
    /// the disk, as on a production server (for benchmarks that compare
    /// with another durable database; tests do not need it).
    pub fn start_durable() -> Result<Self, TestkitError> {
        Self::start_in(find_bindir()?, true)
    }

    /// Like [`start`](Self::start), with the directory of the binaries given
    /// instead of looked for.
    pub fn start_with(bindir: impl AsRef<Path>) -> Result<Self, TestkitError> {
        Self::start_in(bindir.as_ref().to_path_buf(), false)
    }

    fn start_in(bindir: PathBuf, durable: bool) -> Result<Self, TestkitError> {
        if !has_tools(&bindir) {
            return Err(TestkitError::PostgresNotFound {
                searched: format!("{} lacks one of {}", bindir.display(), TOOLS.join(", ")),
            });
        }
        let run_as = if rustix::process::getuid().is_root() {
            let name = std::env::var(RUN_AS_ENV)
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "nobody".to_owned());
            Some(account(&name)?)
        } else {
            None
        };
        let dir = temp_dir()?;
        if let Some(account) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(account.uid), Some(account.gid)).map_err(
                |e| TestkitError::io(format!("handing {} over", dir.path().display()), e),
            )?;
        }
        let mut server = Self {
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            password: random_password()?,
            durable,
            bindir,
            run_as,
            child: None,
            dir,
        };
        server.initdb()?;
        server.spawn()?;
        Ok(server)
    }

    /// The directory of the socket (the `host` of a unix-socket URL).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The temporary directory that holds the cluster, the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser's password (it is also inside every [`url`](Self::url)).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of database `database` as the superuser, over the unix socket:
    /// `postgres://palisade:<password>@localhost/<database>?host=<dir>&port=5432`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@localhost/{database}?host={}&port={PORT}",
            self.password,
            self.dir.path().display()
        )
    }

    /// Creates database `name` (ASCII letters, digits and `_`) and returns
    /// its [`url`](Self::url).
    pub fn create_database(&self, name: &str) -> Result<String, TestkitError> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(TestkitError::Postgres {
                tool: "create_database",
                message: format!("{name:?} is not a plain database name"),
            });
        }
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.url(name))
    }

    /// Runs `sql` in `database` with `psql` and returns what it printed
    /// (unaligned, tuples only, trimmed): one line per row, columns separated
    /// by `|`. An SQL error stops the script and becomes
    /// [`TestkitError::Postgres`].
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, TestkitError> {
        let output = Command::new(self.bindir.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &PORT.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .env("PGPASSWORD", &self.password)
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| TestkitError::Spawn {
                binary: self.bindir.join("psql"),
                source,
            })?;
        checked("psql", &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
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

    /// Stops the server at once, as an outage would: an immediate shutdown
    /// (`SIGQUIT`: every connection is cut, nothing is checkpointed), then
    /// `SIGKILL` if it is still there after a few seconds. Connections fail
    /// until [`restart`](Self::restart). Calling it again does nothing.
    pub fn kill(&mut self) {
        self.thaw();
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            // Fails only when the process has already exited.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Freezes the server (`SIGSTOP` to it and every backend): connections
    /// stay open and new ones are accepted by the kernel, but nothing
    /// answers — a hung host, which no server-side timeout can end. Undone
    /// by [`thaw`](Self::thaw); [`kill`](Self::kill) and drop thaw first.
    pub fn freeze(&self) {
        // The postmaster first, so that it forks no new backend meanwhile.
        for pid in self.server_pids() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::STOP);
        }
    }

    /// Lets a [frozen](Self::freeze) server run again.
    pub fn thaw(&self) {
        for pid in self.server_pids().into_iter().rev() {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::CONT);
        }
    }

    /// The postmaster, then its children (the backends and workers).
    fn server_pids(&self) -> Vec<rustix::process::Pid> {
        let Some(parent) = self.pid() else {
            return Vec::new();
        };
        let mut pids = vec![parent];
        let children = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| parent_of(pid) == Some(parent));
        pids.extend(children);
        pids.into_iter()
            .filter_map(|pid| rustix::process::Pid::from_raw(i32::try_from(pid).ok()?))
            .collect()
    }

    /// Starts the server again on the same socket and cluster and waits
    /// until it accepts connections; what was committed before the outage is
    /// still there. A running server is stopped first.
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.kill();
        self.spawn()
    }

    /// Whether the server accepts connections (`pg_isready`).
    pub fn is_ready(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string(), "-t", "1", "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A command for a server binary, run as the unprivileged account when
    /// the tests run as root.
    fn server_command(&self, tool: &str) -> Command {
        let binary = self.bindir.join(tool);
        let mut command = match self.run_as {
            Some(Account { uid, gid }) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(binary);
                c
            }
            None => Command::new(binary),
        };
        command
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null());
        command
    }

    fn initdb(&self) -> Result<(), TestkitError> {
        let pwfile = self.dir.path().join("pwfile");
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pwfile)
            .map_err(|e| TestkitError::io(format!("creating {}", pwfile.display()), e))?;
        io::Write::write_all(&mut file, self.password.as_bytes())
            .map_err(|e| TestkitError::io(format!("writing {}", pwfile.display()), e))?;
        drop(file);
        if let Some(account) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(account.uid), Some(account.gid))
                .map_err(|e| TestkitError::io(format!("handing {} over", pwfile.display()), e))?;
        }
        let output = self
            .server_command("initdb")
            .arg("-D")
            .arg(&self.data)
            .args(["-U", SUPERUSER, "-A", "scram-sha-256", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .map_err(|source| self.spawn_error("initdb", source));
        let _ = fs::remove_file(&pwfile);
        checked("initdb", &output?)
    }

    fn spawn(&mut self) -> Result<(), TestkitError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| TestkitError::io(format!("opening {}", self.log.display()), e))?;
        let stdout = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file", e))?;
        let fsync = if self.durable { "on" } else { "off" };
        let child = self
            .server_command("postgres")
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &PORT.to_string()])
            .args(["-c", "listen_addresses="])
            .args(["-c", "unix_socket_permissions=0700"])
            // Without `durable`: safe against a killed server (the outage
            // tests), not against a crashed machine; faster, and enough
            // for tests.
            .args(["-c", &format!("fsync={fsync}")])
            .args(["-c", &format!("full_page_writes={fsync}")])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=200"])
            .args(["-c", "dynamic_shared_memory_type=mmap"])
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .map_err(|source| self.spawn_error("postgres", source))?;
        self.child = Some(child);
        let ready = self.wait_ready();
        if ready.is_err() {
            self.kill();
        }
        ready
    }

    fn spawn_error(&self, tool: &str, source: io::Error) -> TestkitError {
        if source.kind() == io::ErrorKind::NotFound {
            TestkitError::PostgresNotFound {
                searched: format!("`{}` could not be run", self.bindir.join(tool).display()),
            }
        } else {
            TestkitError::Spawn {
                binary: self.bindir.join(tool),
                source,
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => None,
                Some(Ok(Some(status))) => Some(format!("postgres exited early ({status})")),
                Some(Err(e)) => Some(format!("could not watch the postgres process: {e}")),
                None => Some("postgres is not running".to_owned()),
            };
            if let Some(reason) = exited {
                return Err(self.not_ready(reason));
            }
            if self.is_ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready(format!(
                    "pg_isready failed on {} for {READY_TIMEOUT:?}",
                    self.dir.path().display()
                )));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn not_ready(&self, reason: String) -> TestkitError {
        let text = tail(&self.log);
        let log_tail = if text.trim().is_empty() {
            "(postgres wrote nothing to its log)\n".to_owned()
        } else {
            format!("--- last lines of the postgres log ---\n{text}")
        };
        TestkitError::NotReady {
            server: "postgres",
            reason,
            log_tail,
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `Ok` when the tool succeeded, else its status and the end of its output.
fn checked(tool: &'static str, output: &Output) -> Result<(), TestkitError> {
    if output.status.success() {
        return Ok(());
    }
    let mut message = format!("{}\n", output.status);
    for stream in [&output.stdout, &output.stderr] {
        let text = String::from_utf8_lossy(stream);
        let lines: Vec<&str> = text.lines().collect();
        for line in lines.iter().skip(lines.len().saturating_sub(20)) {
            // `writeln!` to a `String` cannot fail.
            let _ = writeln!(message, "{line}");
        }
    }
    Err(TestkitError::Postgres { tool, message })
}

/// The directory of the PostgreSQL binaries.
fn find_bindir() -> Result<PathBuf, TestkitError> {
    let complete = |dir: &Path| has_tools(dir);
    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        // `start_with` says what is missing there.
        return Ok(PathBuf::from(dir));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| complete(dir)) {
        return Ok(dir);
    }
    // Debian and Ubuntu keep the server binaries off PATH, one directory per
    // major version.
    let debian = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(debian)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            complete(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| TestkitError::PostgresNotFound {
            searched: format!(
                "no {} on PATH nor in {}/<version>/bin",
                TOOLS.join(", "),
                debian.display()
            ),
        })
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": the command may hold spaces and parens.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `dir` holds every binary the server needs.
fn has_tools(dir: &Path) -> bool {
    TOOLS.iter().all(|t| is_executable(&dir.join(t)))
}

/// The uid and gid of `name`, from `/etc/passwd`.
fn account(name: &str) -> Result<Account, TestkitError> {
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| TestkitError::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != name {
                return None;
            }
            let _password = fields.next()?;
            let uid: u32 = fields.next()?.parse().ok()?;
            let gid: u32 = fields.next()?.parse().ok()?;
            (uid != 0).then_some(Account { uid, gid })
        })
        .ok_or_else(|| TestkitError::Postgres {
            tool: "setpriv",
            message: format!(
                "PostgreSQL refuses to run as root, and there is no unprivileged user {name:?} \
                 in /etc/passwd to run it as (set {RUN_AS_ENV} to one)"
            ),
        })
}

/// 24 random hex digits from the kernel.
fn random_password() -> Result<String, TestkitError> {
    let mut bytes = [0; 12];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| TestkitError::io("reading /dev/urandom", e))?;
    let mut out = String::with_capacity(24);
    for b in bytes {
        // `write!` to a `String` cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    Ok(out)
}

/// A fresh temporary directory, private to its owner, whose socket path
/// (`/.s.PGSQL.5432`, 15 bytes) fits in `sun_path`.
fn temp_dir() -> Result<TempDir, TestkitError> {
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("palisade-pg-");
        builder.permissions(fs::Permissions::from_mode(0o700));
        builder
    };
    let dir = builder()
        .tempdir()
        .map_err(|e| TestkitError::io("creating a temporary directory", e))?;
    if dir.path().as_os_str().len() + 15 <= MAX_SOCKET_PATH {
        return Ok(dir);
    }
    builder()
        .tempdir_in("/tmp")
        .map_err(|e| TestkitError::io("creating a temporary directory in /tmp", e))
}
