//! Runs the reference backend binary for black-box tests.
//!
//! [`Backend::start`] builds the binary once per test process (or uses
//! `PALISADE_BACKEND_BIN`), starts it on a free loopback port with a private
//! data directory and a clean environment, and waits for its `listening` log
//! line. Dropping it kills the process.
//!
//! This is test-harness code: it panics with a message when the process
//! under test misbehaves, which is how a test fails.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    clippy::indexing_slicing // serde_json::Value indexing yields Null, never panics
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use palisade_testkit::http;
use palisade_testkit::postgres::PostgresServer;

/// How long the backend may take to start or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a log line may take to reach [`Backend::logs`] once written
/// (the backend's writer flushes every 10 ms; this bounds a loaded machine).
pub const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// The reference backend binary, built on first use.
///
/// # Panics
///
/// When the binary cannot be built: the tests cannot run without it.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var_os("PALISADE_BACKEND_BIN").map_or_else(
            || cargo_build("reference-backend", "reference-backend"),
            PathBuf::from,
        )
    })
}

/// The `palisade-audit` binary, built on first use (or
/// `PALISADE_AUDIT_BIN`).
///
/// # Panics
///
/// When the binary cannot be built.
pub fn audit_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        std::env::var_os("PALISADE_AUDIT_BIN").map_or_else(
            || cargo_build("palisade-testkit", "palisade-audit"),
            PathBuf::from,
        )
    })
}

fn cargo_build(package: &str, bin: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building {bin} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {bin} executable"))
}

fn command(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("APP_LISTEN", "127.0.0.1:0")
        .env("APP_DATA_DIR", data_dir)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running reference backend.
pub struct Backend {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Hears from the log reader when stdout closed (every line is in `logs`).
    eof: Mutex<mpsc::Receiver<()>>,
    dir: tempfile::TempDir,
}

impl Backend {
    /// Starts the backend with its defaults.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the backend with extra environment variables.
    ///
    /// # Panics
    ///
    /// When it does not start and print its `listening` line in time.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = command(&dir.path().join("data"), env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the backend starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (eof_tx, eof) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let listening = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "listening")
                    .map(|v| v["addr"].as_str().unwrap_or_default().to_owned());
                // The line is in `logs` before anyone hears of it.
                sink.lock().expect("log lock").push(line);
                if let Some(addr) = listening {
                    let _ = tx.send(addr);
                }
            }
            let _ = eof_tx.send(());
        });
        let addr = match rx.recv_timeout(PROCESS_TIMEOUT) {
            Ok(addr) => addr.parse().expect("the listening line has an address"),
            Err(why) => {
                let status = child.try_wait().ok().flatten();
                // Its stdout reaches `logs` until the pipe closes.
                let _ = eof.recv_timeout(LOG_TIMEOUT);
                let logs = logs.lock().expect("log lock").join("\n");
                panic!(
                    "the backend printed no listening line ({why}; exit: {status:?}); its output:\n{logs}"
                );
            }
        };
        Self {
            child,
            addr,
            logs,
            eof: Mutex::new(eof),
            dir,
        }
    }

    /// Starts the backend on `database`, with extra environment variables.
    ///
    /// # Panics
    ///
    /// As [`Backend::start_with`].
    pub fn start_on(database: &Database, env: &[(&str, &str)]) -> Self {
        let mut all = vec![("APP_DATABASE_URL", database.url())];
        all.extend_from_slice(env);
        Self::start_with(&all)
    }

    /// The log lines printed so far. A line about a request may still be in
    /// the backend's buffer: to look for one, use [`wait_for_log`]; to check
    /// that a line is absent, use [`settled_logs`].
    ///
    /// [`wait_for_log`]: Self::wait_for_log
    /// [`settled_logs`]: Self::settled_logs
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// The first JSON log line matching `pred`, waiting for it (bounded by
    /// [`LOG_TIMEOUT`]).
    ///
    /// # Panics
    ///
    /// When no such line arrives in time.
    pub fn wait_for_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let found = self
                .logs()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(&pred);
            if let Some(line) = found {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line within {LOG_TIMEOUT:?}: {:?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every line about the requests answered so far: sends a marker request
    /// (`GET /health` with a fresh request id) and waits for its access line.
    /// A request's lines are written before its response (the access line
    /// is logged when the response head is ready), and the writer keeps their
    /// order, so what the marker's line follows is complete: a check that a
    /// line is absent is then meaningful.
    ///
    /// # Panics
    ///
    /// When the marker's access line does not arrive in time.
    pub fn settled_logs(&self) -> Vec<String> {
        static MARKERS: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "log-marker-{}-{}",
            std::process::id(),
            MARKERS.fetch_add(1, Ordering::Relaxed)
        );
        let res = http::Request::get("/health")
            .header("x-request-id", &id)
            .send(self.addr)
            .expect("the marker request is answered");
        assert_eq!(res.header("x-request-id"), Some(id.as_str()));
        self.wait_for_log(|l| l["request_id"] == id.as_str() && l["target"] == "palisade::access");
        self.logs()
    }

    /// The data directory it was started with.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends `signal` (e.g. `TERM`) and waits for the process to exit.
    ///
    /// # Panics
    ///
    /// When it does not exit in time.
    pub fn stop(self, signal: &str) -> (ExitStatus, Vec<String>) {
        self.signal(signal);
        self.wait_exit()
    }

    /// Sends `signal` (e.g. `TERM`) without waiting.
    ///
    /// # Panics
    ///
    /// When `kill` fails.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit by itself (after a signal already sent).
    ///
    /// # Panics
    ///
    /// When it does not exit in time.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let status = wait(&mut self.child);
        // The reader thread says when it has read stdout to its end.
        self.eof
            .lock()
            .expect("eof lock")
            .recv_timeout(LOG_TIMEOUT)
            .expect("the backend's stdout closed after it exited");
        (status, self.logs())
    }
}

fn wait(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the backend did not exit in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client does when the backend sheds a request (503 with
/// `Retry-After`: its hashing threads cannot finish the queue within 2 s, as
/// on a loaded machine): waits as asked (at most 10 s) and sends again, up to
/// `attempts` sends in all. For setup steps and for a test's own retries,
/// never for the answer a test is about.
///
/// # Panics
///
/// When a 503 carries no valid `Retry-After`.
pub fn honour_retry_after(
    attempts: usize,
    mut send: impl FnMut() -> http::Response,
) -> http::Response {
    let mut res = send();
    for _ in 1..attempts {
        if res.status != 503 {
            break;
        }
        let wait: u64 = res
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("a 503 says when to retry");
        std::thread::sleep(Duration::from_secs(wait.min(10)));
        res = send();
    }
    res
}

/// `APP_REDIS_TIMEOUT_MS` for backends over Redis in this suite. The default
/// (50 ms) is a production choice: fail fast when Redis stalls. On a test
/// machine kept busy by other work, a call can wait that long for a CPU, and
/// the backend then rightly answers 503; the tests over Redis are about
/// limits, lockouts and races, not about Redis latency.
pub const REDIS_TIMEOUT_MS: &str = "2000";

/// A strong JWT secret shared by instances behind one load balancer.
pub const SHARED_SECRET: &str = "q8Lw2vZ7xT4nB9cR1mK6pH3sD0fG5jYuE8aN2oW7iVb";

/// The database a test runs the backend on: the same test bodies run on
/// both ([`on_both_databases!`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    /// An SQLite file in a temporary directory (the default of the backend).
    Sqlite,
    /// A throwaway PostgreSQL cluster (palisade-testkit's `PostgresServer`).
    Postgres,
}

/// The database of one test, shared by every instance started on it; it
/// lives as long as the value.
pub struct Database {
    url: String,
    server: Option<PostgresServer>,
    _dir: tempfile::TempDir,
}

impl Database {
    /// An empty database of kind `db`.
    ///
    /// # Panics
    ///
    /// When PostgreSQL cannot be started (it is never skipped).
    pub fn start(db: Db) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => Self {
                url: format!("sqlite://{}/shared.db", dir.path().display()),
                server: None,
                _dir: dir,
            },
            Db::Postgres => {
                let server = PostgresServer::start().unwrap_or_else(|e| panic!("{e}"));
                let url = server
                    .create_database("app")
                    .unwrap_or_else(|e| panic!("{e}"));
                Self {
                    url,
                    server: Some(server),
                    _dir: dir,
                }
            }
        }
    }

    /// `APP_DATABASE_URL` for the instances (a PostgreSQL URL holds the
    /// password: never assert on logs containing it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The PostgreSQL server, for outage tests; `None` on SQLite.
    pub fn postgres(&mut self) -> Option<&mut PostgresServer> {
        self.server.as_mut()
    }

    /// The PostgreSQL server, to look at its tables; `None` on SQLite.
    pub fn server(&self) -> Option<&PostgresServer> {
        self.server.as_ref()
    }

    /// The password inside [`url`](Self::url) on PostgreSQL.
    pub fn password(&self) -> Option<&str> {
        self.server.as_ref().map(PostgresServer::password)
    }
}

/// Runs each named test body `fn name(db: Db)` on both databases: a module
/// `name` with the tests `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name($crate::Db::Sqlite);
                }

                #[test]
                fn postgres() {
                    super::$name($crate::Db::Postgres);
                }
            }
        )*
    };
}

/// What instances behind one load balancer share: Redis, one database, the
/// JWT secret; 127.0.0.1 is their trusted proxy. Each instance keeps its own
/// data directory.
pub struct Shared {
    redis_url: String,
    database_url: String,
}

impl Shared {
    /// Instances over `redis_url` and `database`.
    pub fn new(redis_url: String, database: &Database) -> Self {
        Self {
            redis_url,
            database_url: database.url().to_owned(),
        }
    }

    /// Starts one more instance. Instances may start together: each
    /// migrates the shared database at start, taking turns.
    pub fn start(&self) -> Backend {
        Backend::start_with(&[
            ("APP_REDIS_URL", self.redis_url.as_str()),
            ("APP_REDIS_TIMEOUT_MS", REDIS_TIMEOUT_MS),
            ("APP_DATABASE_URL", self.database_url.as_str()),
            ("APP_JWT_SECRET", SHARED_SECRET),
            ("APP_TRUSTED_PROXIES", "127.0.0.1/32"),
        ])
    }
}

/// Runs the backend expecting it to exit by itself (a refused configuration),
/// returning its status, stdout and stderr.
///
/// # Panics
///
/// When it does not exit in time.
pub fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    run_to_exit_with_args(&[], env)
}

/// Like [`run_to_exit`], with command-line arguments.
pub fn run_to_exit_with_args(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = command(&dir.path().join("data"), env)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the backend starts");
    let status = wait(&mut child);
    let read = |r: Option<&mut dyn std::io::Read>| {
        let mut s = String::new();
        if let Some(r) = r {
            let _ = r.read_to_string(&mut s);
        }
        s
    };
    let stdout = read(child.stdout.as_mut().map(|s| s as &mut dyn std::io::Read));
    let stderr = read(child.stderr.as_mut().map(|s| s as &mut dyn std::io::Read));
    (status, stdout, stderr)
}

/// How far the backend's clock may run ahead of a span the test measured
/// around the same requests (clock reads are not instantaneous; Redis counts
/// in microseconds).
pub const CLOCK_SLACK: Duration = Duration::from_millis(5);

/// The most requests a GCRA quota (`burst`, then one more every `interval`)
/// can allow within `elapsed`, measured by the test from before the first
/// request was sent to after the last answer came: the server saw a shorter
/// span. A rate-limit test asserts at most this many passed, and at least
/// `burst` (served before any refill can matter): neither bound depends on
/// how fast the machine is, so a loaded machine cannot make it fail.
pub fn most_allowed(burst: u32, interval: Duration, elapsed: Duration) -> u64 {
    let refills = (elapsed + CLOCK_SLACK).as_nanos() / interval.as_nanos().max(1);
    u64::from(burst) + u64::try_from(refills).unwrap_or(u64::MAX)
}
