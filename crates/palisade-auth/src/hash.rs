//! Argon2id hashing that a login flood cannot turn into a denial of service.
//!
//! - **Parameters**: OWASP's argon2id minimum by default (m = 19 MiB, t = 2,
//!   p = 1, 32-byte output, 16-byte random salt), stored as a PHC string.
//! - **A bounded pool**: hashing runs on dedicated threads — one per CPU core
//!   by default — never on the async runtime's workers. Each thread keeps its
//!   argon2 memory between jobs (no 19 MiB allocation per hash). Jobs wait in
//!   a bounded queue; a full queue, or a job that waited longer than the
//!   queue timeout, is refused with [`HashError::Busy`] (answer 503). A job
//!   whose caller went away (client disconnected) is skipped.
//! - **A ceiling on stored parameters**: `m`, `t`, `p`, output and salt
//!   lengths read from a stored hash are checked before anything is
//!   allocated, so a tampered or imported hash cannot make a verification
//!   allocate gigabytes or run for minutes.
//! - [`Hasher::needs_rehash`]: the stored hash is weaker than the policy (or
//!   uses an older pepper); rehash it after a successful login.
//! - **Pepper**: an optional secret key (argon2's `secret` input) with a key
//!   id stored in the PHC string (`keyid=`), so peppers can be rotated.
//! - [`Hasher::verify_dummy`]: verifies against a hash made at start-up with
//!   the live parameters, for logins to accounts that do not exist, so the
//!   response time does not reveal whether an account exists.
//! - Hashing threads run at a lower priority (nice +10 on Linux, see
//!   [`HasherBuilder::nice`]), so a login flood cannot starve `/health` and
//!   other requests of CPU; logins wait in the bounded queue instead.
//! - [`calibrate`]: hash time under concurrency for a parameter set.
//!
//! # Example
//!
//! ```
//! use palisade_auth::hash::{Hasher, HashParams};
//! use secrecy::SecretString;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! // Small parameters keep the example fast; keep the defaults in production.
//! let hasher = Hasher::builder().params(HashParams::new(1024, 1, 1)).build().unwrap();
//! let password = SecretString::from("correct horse battery staple");
//! let phc = hasher.hash(&password).await.unwrap();
//! assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
//! assert!(hasher.verify(&password, &phc).await.unwrap());
//! assert!(!hasher.verify(&SecretString::from("wrong"), &phc).await.unwrap());
//! assert!(!hasher.needs_rehash(&phc));
//! # });
//! ```

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, ParamsBuilder, Version};
use palisade_core::ConfigError;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio::sync::oneshot;

/// The longest password the hasher accepts, in bytes; longer ones are
/// refused before any work ([`HashError::TooLong`]).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest PHC string accepted from storage.
const MAX_PHC_LEN: usize = 512;

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane.
    fn default() -> Self {
        Self::new(19 * 1024, 2, 1)
    }
}

impl HashParams {
    /// Explicit parameters.
    pub const fn new(m_kib: u32, t: u32, p: u32) -> Self {
        Self { m_kib, t, p }
    }
}

/// The most a stored hash may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ceiling {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Ceiling {
    /// 64 MiB, 10 iterations, 4 lanes.
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 10,
            p: 4,
        }
    }
}

/// Why hashing or verifying did not give an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// The pool is saturated: answer 503 with `Retry-After`.
    #[error("the password hashing pool is busy")]
    Busy,
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is too long")]
    TooLong,
    /// The stored hash is malformed, not argon2id, over the ceiling, or uses
    /// an unknown pepper key id.
    #[error("the stored password hash is invalid or exceeds the allowed parameters")]
    InvalidHash,
    /// The pool has stopped, or argon2 refused its input.
    #[error("password hashing failed")]
    Internal,
}

struct Pepper {
    id: String,
    key: SecretBox<[u8]>,
}

struct Config {
    /// Jobs accepted and not finished (queued or running).
    pending: std::sync::atomic::AtomicUsize,
    /// Workers + queue: more pending jobs than this cannot be accepted.
    capacity: usize,
    nice: i32,
    params: HashParams,
    ceiling: Ceiling,
    queue_timeout: Duration,
    current: Option<Pepper>,
    previous: Vec<Pepper>,
}

impl Config {
    fn pepper(&self, id: &[u8]) -> Option<&Pepper> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|p| p.id.as_bytes() == id)
    }
}

enum Task {
    Hash,
    Verify(String),
}

struct Job {
    task: Task,
    password: SecretString,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Option<String>, HashError>>,
}

/// Builds a [`Hasher`].
#[must_use]
pub struct HasherBuilder {
    params: HashParams,
    ceiling: Ceiling,
    workers: usize,
    queue: usize,
    queue_timeout: Duration,
    nice: i32,
    current: Option<Pepper>,
    previous: Vec<Pepper>,
}

impl fmt::Debug for HasherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HasherBuilder")
            .field("params", &self.params)
            .field("workers", &self.workers)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl HasherBuilder {
    /// The cost parameters of new hashes (default [`HashParams::default`]).
    pub fn params(mut self, params: HashParams) -> Self {
        self.params = params;
        self
    }

    /// The most a stored hash may ask for (default [`Ceiling::default`]).
    pub fn ceiling(mut self, ceiling: Ceiling) -> Self {
        self.ceiling = ceiling;
        self
    }

    /// Hashing threads (default: the number of CPU cores).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Jobs that may wait for a thread (default 4 per thread).
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n;
        self
    }

    /// How much lower the hashing threads' scheduling priority is than the
    /// rest of the process (Linux `nice`, 0–19; default 10, 0 to keep it).
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice.clamp(0, 19);
        self
    }

    /// How long a job may wait before it is refused (default 2 s).
    pub fn queue_timeout(mut self, d: Duration) -> Self {
        self.queue_timeout = d;
        self
    }

    /// Peppers new hashes with `key`, identified by `id` (1–8 bytes of
    /// `[A-Za-z0-9]`) in the stored hash.
    pub fn pepper(mut self, id: &str, key: SecretBox<[u8]>) -> Self {
        self.current = Some(Pepper {
            id: id.to_owned(),
            key,
        });
        self
    }

    /// A previous pepper, still accepted for verification (its hashes need a
    /// rehash).
    pub fn previous_pepper(mut self, id: &str, key: SecretBox<[u8]>) -> Self {
        self.previous.push(Pepper {
            id: id.to_owned(),
            key,
        });
        self
    }

    /// Starts the threads and makes the dummy hash.
    ///
    /// # Errors
    ///
    /// Parameters argon2 refuses or above the ceiling, a pepper id that is
    /// not 1–8 alphanumeric bytes or a pepper key over 64 bytes.
    pub fn build(self) -> Result<Hasher, ConfigError> {
        let p = self.params;
        if p.m_kib > self.ceiling.m_kib || p.t > self.ceiling.t || p.p > self.ceiling.p {
            return Err(ConfigError::new(
                "hash.params",
                "must not exceed the ceiling on stored parameters",
            ));
        }
        argon2_params(p, None)
            .map_err(|_| ConfigError::new("hash.params", "argon2 refuses these cost parameters"))?;
        for pepper in self.current.iter().chain(&self.previous) {
            let id_ok = (1..=8).contains(&pepper.id.len())
                && pepper.id.bytes().all(|b| b.is_ascii_alphanumeric());
            if !id_ok {
                return Err(ConfigError::new(
                    "hash.pepper.id",
                    "must be 1-8 characters of [A-Za-z0-9]",
                ));
            }
            if pepper.key.expose_secret().len() > 64 || pepper.key.expose_secret().len() < 16 {
                return Err(ConfigError::new(
                    "hash.pepper.key",
                    "must be 16 to 64 bytes",
                ));
            }
        }
        let config = Arc::new(Config {
            pending: std::sync::atomic::AtomicUsize::new(0),
            capacity: self.workers + self.queue,
            nice: self.nice,
            params: p,
            ceiling: self.ceiling,
            queue_timeout: self.queue_timeout,
            current: self.current,
            previous: self.previous,
        });
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(self.queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.workers {
            let (config, rx) = (Arc::clone(&config), Arc::clone(&rx));
            std::thread::Builder::new()
                .name(format!("palisade-hash-{i}"))
                .spawn(move || worker(&config, &rx))
                .map_err(|_| ConfigError::new("hash.workers", "could not start a thread"))?;
        }
        // The dummy: a random password hashed with the live parameters.
        let mut random = [0u8; 24];
        getrandom::fill(&mut random)
            .map_err(|_| ConfigError::new("hash.dummy", "no randomness available"))?;
        let dummy_password = SecretString::from(base64_lite(&random));
        let mut blocks = vec![Block::default(); block_count(config.params.m_kib)];
        let dummy = hash_with(&config, &dummy_password, &mut blocks)
            .map_err(|_| ConfigError::new("hash.dummy", "could not create the dummy hash"))?;
        Ok(Hasher {
            tx,
            dummy: Arc::from(dummy),
            config,
        })
    }
}

fn base64_lite(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

fn block_count(m_kib: u32) -> usize {
    usize::try_from(m_kib).unwrap_or(usize::MAX)
}

fn argon2_params(p: HashParams, keyid: Option<&str>) -> Result<Params, argon2::Error> {
    let mut builder = ParamsBuilder::new();
    builder
        .m_cost(p.m_kib)
        .t_cost(p.t)
        .p_cost(p.p)
        .output_len(32);
    if let Some(id) = keyid {
        builder.keyid(argon2::KeyId::new(id.as_bytes())?);
    }
    builder.build()
}

/// The hashing service. Cheap to clone; the threads stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    tx: SyncSender<Job>,
    dummy: Arc<str>,
    config: Arc<Config>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.config.params)
            .field("ceiling", &self.config.ceiling)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    /// A builder with the defaults.
    pub fn builder() -> HasherBuilder {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        HasherBuilder {
            params: HashParams::default(),
            ceiling: Ceiling::default(),
            workers: cores,
            queue: cores * 4,
            queue_timeout: Duration::from_secs(2),
            nice: 10,
            current: None,
            previous: Vec::new(),
        }
    }

    /// Whether every thread is busy and the queue is full: a caller can
    /// answer 503 at once, before reading the database or reserving a
    /// lockout slot, so a login flood is shed cheaply. Advisory: a job
    /// submitted anyway may still be refused with [`HashError::Busy`].
    pub fn saturated(&self) -> bool {
        self.config.pending.load(Ordering::Relaxed) >= self.config.capacity
    }

    /// The parameters of new hashes.
    pub fn params(&self) -> HashParams {
        self.config.params
    }

    async fn submit(
        &self,
        task: Task,
        password: &SecretString,
    ) -> Result<Option<String>, HashError> {
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(HashError::TooLong);
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            task,
            password: password.clone(),
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {
                self.config.pending.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => return Err(HashError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(HashError::Internal),
        }
        rx.await.map_err(|_| HashError::Internal)?
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        self.submit(Task::Hash, password)
            .await?
            .ok_or(HashError::Internal)
    }

    /// Whether `password` matches the stored `phc` (in constant time).
    pub async fn verify(&self, password: &SecretString, phc: &str) -> Result<bool, HashError> {
        if phc.len() > MAX_PHC_LEN {
            return Err(HashError::InvalidHash);
        }
        // Refuse over-ceiling hashes here, before the job is queued.
        check_stored(&self.config, phc)?;
        Ok(self
            .submit(Task::Verify(phc.to_owned()), password)
            .await?
            .is_some())
    }

    /// Runs a full verification against the dummy hash (always "no"): what
    /// a login does for an account that does not exist.
    pub async fn verify_dummy(&self, password: &SecretString) -> Result<(), HashError> {
        let dummy = self.dummy.to_string();
        self.verify(password, &dummy).await.map(drop)
    }

    /// Whether a stored hash is weaker than the policy (or uses a pepper
    /// other than the current one, or none while one is configured).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return true;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return true;
        };
        let p = self.config.params;
        let current_id = self.config.current.as_ref().map(|c| c.id.as_bytes());
        hash.algorithm != argon2::ARGON2ID_IDENT
            || hash.version != Some(19)
            || params.m_cost() < p.m_kib
            || params.t_cost() < p.t
            || params.p_cost() < p.p
            || current_id.unwrap_or_default() != params.keyid()
    }
}

/// Parses a stored hash and checks it against the ceiling, allocating
/// nothing.
fn check_stored<'a>(
    config: &Config,
    phc: &'a str,
) -> Result<(PasswordHash<'a>, Params), HashError> {
    let hash = PasswordHash::new(phc).map_err(|_| HashError::InvalidHash)?;
    if hash.algorithm != argon2::ARGON2ID_IDENT || hash.version != Some(19) {
        return Err(HashError::InvalidHash);
    }
    let params = Params::try_from(&hash).map_err(|_| HashError::InvalidHash)?;
    let c = config.ceiling;
    let out_len = hash.hash.map_or(0, |h| h.len());
    if params.m_cost() > c.m_kib
        || params.t_cost() > c.t
        || params.p_cost() > c.p
        || !(16..=64).contains(&out_len)
    {
        return Err(HashError::InvalidHash);
    }
    if !params.keyid().is_empty() && config.pepper(params.keyid()).is_none() {
        return Err(HashError::InvalidHash);
    }
    Ok((hash, params))
}

fn context(config: &Config, params: Params) -> Result<Argon2<'_>, HashError> {
    if params.keyid().is_empty() {
        return Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
    }
    let pepper = config
        .pepper(params.keyid())
        .ok_or(HashError::InvalidHash)?;
    Argon2::new_with_secret(
        pepper.key.expose_secret(),
        Algorithm::Argon2id,
        Version::V0x13,
        params,
    )
    .map_err(|_| HashError::Internal)
}

fn hash_with(
    config: &Config,
    password: &SecretString,
    blocks: &mut [Block],
) -> Result<String, HashError> {
    let keyid = config.current.as_ref().map(|p| p.id.as_str());
    let params = argon2_params(config.params, keyid).map_err(|_| HashError::Internal)?;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|_| HashError::Internal)?;
    let mut out = [0u8; 32];
    context(config, params.clone())?
        .hash_password_into_with_memory(
            password.expose_secret().as_bytes(),
            &salt,
            &mut out,
            blocks,
        )
        .map_err(|_| HashError::Internal)?;
    let salt = SaltString::encode_b64(&salt).map_err(|_| HashError::Internal)?;
    let output = Output::new(&out).map_err(|_| HashError::Internal)?;
    let params_string = ParamsString::try_from(&params).map_err(|_| HashError::Internal)?;
    let hash = PasswordHash {
        algorithm: argon2::ARGON2ID_IDENT,
        version: Some(19),
        params: params_string,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

fn verify_with(
    config: &Config,
    password: &SecretString,
    phc: &str,
    blocks: &mut Vec<Block>,
) -> Result<bool, HashError> {
    let (hash, params) = check_stored(config, phc)?;
    let expected = hash.hash.ok_or(HashError::InvalidHash)?;
    let mut salt_buf = [0u8; 64];
    let salt = hash
        .salt
        .ok_or(HashError::InvalidHash)?
        .decode_b64(&mut salt_buf)
        .map_err(|_| HashError::InvalidHash)?;
    let mut out = [0u8; 64];
    let out = out
        .get_mut(..expected.len())
        .ok_or(HashError::InvalidHash)?;
    let needed = params.block_count();
    // Legacy hashes above the policy (within the ceiling) get a temporary buffer.
    let mut temporary;
    let memory: &mut [Block] = if blocks.len() >= needed {
        blocks.as_mut_slice()
    } else {
        temporary = vec![Block::default(); needed];
        temporary.as_mut_slice()
    };
    context(config, params)?
        .hash_password_into_with_memory(password.expose_secret().as_bytes(), salt, out, memory)
        .map_err(|_| HashError::InvalidHash)?;
    let computed = Output::new(out).map_err(|_| HashError::InvalidHash)?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// Decrements the pending count when a job is done with.
struct Finished<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Lowers the calling (hashing) thread's scheduling priority by `nice`, on
/// Linux: when hashing saturates the cores, `/health`, readiness and every
/// other request still get the CPU first, and logins wait in the bounded
/// queue instead.
fn lower_priority(nice: i32) {
    #[cfg(target_os = "linux")]
    if nice > 0
        && let Err(e) =
            rustix::process::setpriority_process(Some(rustix::thread::gettid()), nice.min(19))
    {
        tracing::debug!(error = %e, "could not lower the hashing thread's priority");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn worker(config: &Config, rx: &Mutex<Receiver<Job>>) {
    lower_priority(config.nice);
    let mut blocks = vec![Block::default(); block_count(config.params.m_kib)];
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
            match rx.recv() {
                Ok(job) => job,
                // Every Hasher was dropped: stop.
                Err(_) => return,
            }
        };
        // Counted as finished whatever happens below (the decrement may run
        // just before the submitter's increment: `saturating` reads cope).
        let _done = Finished(&config.pending);
        if job.reply.is_closed() {
            continue;
        }
        if job.enqueued.elapsed() > config.queue_timeout {
            let _ = job.reply.send(Err(HashError::Busy));
            continue;
        }
        let result = match &job.task {
            Task::Hash => hash_with(config, &job.password, &mut blocks).map(Some),
            Task::Verify(phc) => {
                verify_with(config, &job.password, phc, &mut blocks).map(|ok| ok.then(String::new))
            }
        };
        let _ = job.reply.send(result);
    }
}

/// Hash timing under concurrency.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// Median time of one hash.
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Hashes per second at this concurrency.
    pub per_second: f64,
}

/// Hashes `samples` passwords with `params` on `concurrency` threads and
/// reports the timing: to choose parameters for a machine.
pub fn calibrate(
    params: HashParams,
    concurrency: usize,
    samples: usize,
) -> Result<Calibration, HashError> {
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        argon2_params(params, None).map_err(|_| HashError::Internal)?,
    );
    let per_thread = samples.div_ceil(concurrency.max(1));
    let start = Instant::now();
    let mut times: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut blocks = vec![Block::default(); block_count(params.m_kib)];
                    let mut out = [0u8; 32];
                    (0..per_thread)
                        .map(|i| {
                            let t = Instant::now();
                            let _ = argon.hash_password_into_with_memory(
                                format!("calibration-{i}").as_bytes(),
                                b"palisade-calibrate",
                                &mut out,
                                &mut blocks,
                            );
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = start.elapsed();
    times.sort();
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((times.len() as f64 - 1.0) * q).round() as usize;
        times.get(i).copied().unwrap_or_default()
    };
    #[allow(clippy::cast_precision_loss)]
    let per_second = times.len() as f64 / elapsed.as_secs_f64();
    Ok(Calibration {
        median: at(0.5),
        p99: at(0.99),
        per_second,
    })
}
