//! Argon2id hashing that a login flood cannot turn into a denial of service.
//!
//! - **Parameters**: OWASP's argon2id minimum by default (m = 19 MiB, t = 2,
//!   p = 1, 32-byte output, 16-byte random salt), stored as a PHC string.
//! - **A bounded pool**: hashing runs on dedicated threads — one per CPU core
//!   by default — never on the async runtime's workers. Each thread keeps its
//!   argon2 memory between jobs (no 19 MiB allocation per hash).
//! - **A queue bounded by time**: a job is accepted when its estimated wait
//!   (the jobs ahead of it ÷ workers × the measured time of one job, a moving
//!   average kept by the workers) is within the queue timeout (2 s): a burst
//!   of ordinary logins waits its turn instead of being refused. Beyond that,
//!   or when a job still waited longer than the timeout, the answer is
//!   [`HashError::Busy`] with a `Retry-After` from the estimated wait (answer
//!   503). A hard cap on queued jobs bounds memory whatever the estimate. A
//!   job whose caller went away (client disconnected) is skipped. The count
//!   of pending jobs is exact: taken before a job is sent, given back when a
//!   send fails or a worker is done with it.
//! - **NFKC**: passwords are hashed and verified in Unicode NFKC form, the
//!   form the password policy measures, so the same password typed on two
//!   keyboards verifies. A hash stored from a non-NFKC password still
//!   verifies (its typed form is tried second, for every password that is
//!   not NFKC, known account or not) and [`Verdict::MatchUnnormalised`] says
//!   to rehash it.
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
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, ParamsBuilder, Version};
use palisade_core::ConfigError;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use tokio::sync::oneshot;
use unicode_normalization::UnicodeNormalization;

/// The longest password the hasher accepts, in bytes; longer ones are
/// refused before any work ([`HashError::TooLong`]).
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// The longest PHC string accepted from storage.
const MAX_PHC_LEN: usize = 512;
/// The most jobs that may wait by default, whatever their estimated wait:
/// bounds the memory a flood can pin (a job holds a password and a hash).
pub const MAX_QUEUE: usize = 4096;

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
    Busy {
        /// The estimated time until the jobs queued now are done (at least
        /// one second).
        retry_after: Duration,
    },
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
    /// Jobs accepted and not finished (queued or running): incremented before
    /// a job is sent, decremented when the send fails or a worker is done.
    pending: AtomicUsize,
    /// Hashing threads.
    workers: usize,
    /// Workers + queue cap: more pending jobs than this are never accepted.
    capacity: usize,
    /// A moving average of one job's time, in nanoseconds.
    job_nanos: AtomicU64,
    nice: i32,
    params: HashParams,
    ceiling: Ceiling,
    queue_timeout: Duration,
    current: Option<Pepper>,
    previous: Vec<Pepper>,
}

impl Config {
    /// How long a job with `ahead` jobs pending before it waits for a thread.
    fn wait_behind(&self, ahead: usize) -> Duration {
        let rounds = u32::try_from(ahead / self.workers.max(1)).unwrap_or(u32::MAX);
        Duration::from_nanos(self.job_nanos.load(Ordering::Relaxed)).saturating_mul(rounds)
    }

    /// `Err(retry_after)` when a job with `ahead` jobs before it must be
    /// refused: too many jobs, or a wait beyond the queue timeout.
    fn admit(&self, ahead: usize) -> Result<(), Duration> {
        let wait = self.wait_behind(ahead);
        if ahead >= self.capacity || wait > self.queue_timeout {
            return Err(retry_after(wait));
        }
        Ok(())
    }

    /// Folds one finished job's time into the moving average (1/8 weight).
    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let old = self.job_nanos.load(Ordering::Relaxed);
        let new = old - old / 8 + took / 8;
        self.job_nanos.store(new.max(1), Ordering::Relaxed);
    }

    fn pepper(&self, id: &[u8]) -> Option<&Pepper> {
        self.current
            .iter()
            .chain(&self.previous)
            .find(|p| p.id.as_bytes() == id)
    }
}

/// Whole seconds, rounded up, at least one: a `Retry-After`.
fn retry_after(wait: Duration) -> Duration {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

enum Task {
    Hash,
    Verify(String),
}

/// What a worker answers.
enum Reply {
    Hashed(String),
    Verified(Verdict),
}

struct Job {
    task: Task,
    password: SecretString,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Reply, HashError>>,
}

/// The result of verifying a password against a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The password does not match.
    Mismatch,
    /// It matches (in its NFKC form).
    Match,
    /// It matches in the form it was typed, which is not NFKC: the hash was
    /// stored before passwords were normalised. Rehash it.
    MatchUnnormalised,
}

impl Verdict {
    /// Whether the password matched, in either form.
    pub fn is_match(self) -> bool {
        !matches!(self, Self::Mismatch)
    }
}

/// Builds a [`Hasher`].
#[must_use]
pub struct HasherBuilder {
    params: HashParams,
    ceiling: Ceiling,
    workers: usize,
    queue: Option<usize>,
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

    /// The most jobs that may wait for a thread, whatever their estimated
    /// wait. By default the pool measures one hash at start-up and holds
    /// what the workers can finish within the queue timeout, at most
    /// [`MAX_QUEUE`]; jobs are admitted by their estimated wait either way.
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = Some(n);
        self
    }

    /// How much lower the hashing threads' scheduling priority is than the
    /// rest of the process (Linux `nice`, 0–19; default 10, 0 to keep it).
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice.clamp(0, 19);
        self
    }

    /// How long a job may wait before it is refused (default 2 s): jobs whose
    /// estimated wait is longer are refused at once.
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
        let mut config = Config {
            pending: AtomicUsize::new(0),
            workers: self.workers,
            capacity: 0,
            job_nanos: AtomicU64::new(1),
            nice: self.nice,
            params: p,
            ceiling: self.ceiling,
            queue_timeout: self.queue_timeout,
            current: self.current,
            previous: self.previous,
        };
        // The dummy: a random password hashed with the live parameters. Its
        // time is the first estimate of a job's.
        let mut random = [0u8; 24];
        getrandom::fill(&mut random)
            .map_err(|_| ConfigError::new("hash.dummy", "no randomness available"))?;
        let dummy_password = SecretString::from(base64_lite(&random));
        let mut blocks = vec![Block::default(); block_count(config.params.m_kib)];
        let started = Instant::now();
        let dummy = hash_with(&config, &dummy_password, &mut blocks)
            .map_err(|_| ConfigError::new("hash.dummy", "could not create the dummy hash"))?;
        let one_hash = started.elapsed().max(Duration::from_nanos(1));
        drop(blocks);
        config.job_nanos = AtomicU64::new(u64::try_from(one_hash.as_nanos()).unwrap_or(u64::MAX));
        let queue = self.queue.unwrap_or_else(|| {
            let per_worker = self.queue_timeout.as_nanos() / one_hash.as_nanos();
            let fits = per_worker.saturating_mul(self.workers as u128);
            usize::try_from(fits)
                .unwrap_or(MAX_QUEUE)
                .clamp(self.workers, MAX_QUEUE)
        });
        config.capacity = self.workers + queue;
        let config = Arc::new(config);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..self.workers {
            let (config, rx) = (Arc::clone(&config), Arc::clone(&rx));
            std::thread::Builder::new()
                .name(format!("palisade-hash-{i}"))
                .spawn(move || worker(&config, &rx))
                .map_err(|_| ConfigError::new("hash.workers", "could not start a thread"))?;
        }
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
            queue: None,
            queue_timeout: Duration::from_secs(2),
            nice: 10,
            current: None,
            previous: Vec::new(),
        }
    }

    /// Whether a job submitted now would be refused (its estimated wait is
    /// beyond the queue timeout, or the queue is at its cap): a caller can
    /// answer 503 at once, before reading the database or reserving a
    /// lockout slot, so a login flood is shed cheaply. Advisory: a job
    /// submitted anyway may still be refused with [`HashError::Busy`].
    pub fn saturated(&self) -> bool {
        self.config
            .admit(self.config.pending.load(Ordering::Acquire))
            .is_err()
    }

    /// The estimated time until the jobs pending now are done, in whole
    /// seconds and at least one: the `Retry-After` of a refusal.
    pub fn retry_after(&self) -> Duration {
        retry_after(
            self.config
                .wait_behind(self.config.pending.load(Ordering::Acquire)),
        )
    }

    /// Jobs accepted and not finished (queued or running).
    pub fn pending(&self) -> usize {
        self.config.pending.load(Ordering::Acquire)
    }

    /// The most jobs that can be pending at once (workers + queue cap).
    pub fn capacity(&self) -> usize {
        self.config.capacity
    }

    /// The moving average of one job's time on the pool's threads.
    pub fn job_time(&self) -> Duration {
        Duration::from_nanos(self.config.job_nanos.load(Ordering::Relaxed))
    }

    /// The parameters of new hashes.
    pub fn params(&self) -> HashParams {
        self.config.params
    }

    async fn submit(&self, task: Task, password: &SecretString) -> Result<Reply, HashError> {
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(HashError::TooLong);
        }
        // Count the job before it can reach a worker, so the worker's
        // decrement always follows this increment: the count stays exact.
        let ahead = self.config.pending.fetch_add(1, Ordering::AcqRel);
        let undo = || self.config.pending.fetch_sub(1, Ordering::AcqRel);
        if let Err(retry_after) = self.config.admit(ahead) {
            undo();
            return Err(HashError::Busy { retry_after });
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            task,
            password: password.clone(),
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                undo();
                return Err(HashError::Busy {
                    retry_after: retry_after(self.config.wait_behind(ahead)),
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                undo();
                return Err(HashError::Internal);
            }
        }
        rx.await.map_err(|_| HashError::Internal)?
    }

    /// Hashes a new password (its NFKC form) into a PHC string.
    pub async fn hash(&self, password: &SecretString) -> Result<String, HashError> {
        match self.submit(Task::Hash, password).await? {
            Reply::Hashed(phc) => Ok(phc),
            Reply::Verified(_) => Err(HashError::Internal),
        }
    }

    /// Whether `password` matches the stored `phc` (in constant time), in its
    /// NFKC form or as typed.
    pub async fn verify(&self, password: &SecretString, phc: &str) -> Result<bool, HashError> {
        self.check(password, phc).await.map(Verdict::is_match)
    }

    /// Verifies `password` against the stored `phc` and says in which form
    /// it matched: [`Verdict::MatchUnnormalised`] means rehash (as does
    /// [`Hasher::needs_rehash`]).
    pub async fn check(&self, password: &SecretString, phc: &str) -> Result<Verdict, HashError> {
        if phc.len() > MAX_PHC_LEN {
            return Err(HashError::InvalidHash);
        }
        // Refuse over-ceiling hashes here, before the job is queued.
        check_stored(&self.config, phc)?;
        match self.submit(Task::Verify(phc.to_owned()), password).await? {
            Reply::Verified(verdict) => Ok(verdict),
            Reply::Hashed(_) => Err(HashError::Internal),
        }
    }

    /// Runs a full verification against the dummy hash (always "no"): what
    /// a login does for an account that does not exist. The dummy hash uses
    /// exactly the live parameters and pepper, and a non-NFKC password is
    /// tried in both forms as for a real account, so the work is the same.
    pub async fn verify_dummy(&self, password: &SecretString) -> Result<(), HashError> {
        let dummy = self.dummy.to_string();
        self.check(password, &dummy).await.map(drop)
    }

    /// The dummy hash (a random password hashed with the live parameters at
    /// start-up): to check that it matches the policy.
    pub fn dummy_hash(&self) -> &str {
        &self.dummy
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
    let normalised = SecretString::from(nfkc(password.expose_secret()));
    context(config, params.clone())?
        .hash_password_into_with_memory(
            normalised.expose_secret().as_bytes(),
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

/// The NFKC form of a password.
fn nfkc(password: &str) -> String {
    password.nfkc().collect()
}

/// Verifies the NFKC form of `password`, then, when it is not NFKC, the
/// form as typed (hashes stored before normalisation).
fn verify_with(
    config: &Config,
    password: &SecretString,
    phc: &str,
    blocks: &mut Vec<Block>,
) -> Result<Verdict, HashError> {
    let typed = password.expose_secret();
    let normalised = SecretString::from(nfkc(typed));
    if verify_form(config, normalised.expose_secret(), phc, blocks)? {
        return Ok(Verdict::Match);
    }
    if normalised.expose_secret() != typed && verify_form(config, typed, phc, blocks)? {
        return Ok(Verdict::MatchUnnormalised);
    }
    Ok(Verdict::Mismatch)
}

fn verify_form(
    config: &Config,
    password: &str,
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
        .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
        .map_err(|_| HashError::InvalidHash)?;
    let computed = Output::new(out).map_err(|_| HashError::InvalidHash)?;
    // `Output`'s equality is constant-time.
    Ok(computed == expected)
}

/// Decrements the pending count when a job is done with (whatever happens
/// to it, a panic in argon2 included).
struct Finished<'a>(&'a AtomicUsize);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
        // Counted as finished whatever happens below (a panic included), and
        // before its answer is sent, so a caller that has its answer never
        // sees its own job pending. The submitter counted it before sending,
        // so this decrement never comes first.
        let done = Finished(&config.pending);
        if job.reply.is_closed() {
            continue;
        }
        let waited = job.enqueued.elapsed();
        if waited > config.queue_timeout {
            let wait = config.wait_behind(config.pending.load(Ordering::Acquire));
            drop(done);
            let _ = job.reply.send(Err(HashError::Busy {
                retry_after: retry_after(wait),
            }));
            continue;
        }
        let started = Instant::now();
        let result = match &job.task {
            Task::Hash => hash_with(config, &job.password, &mut blocks).map(Reply::Hashed),
            Task::Verify(phc) => {
                verify_with(config, &job.password, phc, &mut blocks).map(Reply::Verified)
            }
        };
        config.record(started.elapsed());
        drop(done);
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
