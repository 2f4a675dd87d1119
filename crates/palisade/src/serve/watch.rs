//! The watchdog: one thread per server that looks at every open connection a
//! few times a second (a quarter of the shortest timeout, between 5 ms and
//! 1 s) and tells the ones that overstay a phase to close.
//!
//! Connections record what they do in atomics and nothing else (see
//! [`super::conn`]): no clock read, and no timer in the runtime (a timer
//! makes every park of the runtime look at the clock and the timer wheel).
//! The watchdog notes *when* it first sees a phase begin.
//! A deadline is therefore met within two ticks: a connection is closed no
//! sooner than its timeout after the phase began, and at most two ticks
//! later. The first request head is timed from the accept exactly.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::conn::{Command, Tracker};

/// The timeouts the watchdog enforces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) head: Duration,
    pub(super) idle: Duration,
    pub(super) write: Duration,
    pub(super) drain: Duration,
    /// How long a connection asked to close gracefully may take to do so.
    pub(super) grace: Duration,
    /// How often the watchdog looks.
    pub(super) tick: Duration,
}

impl Limits {
    pub(super) fn new(
        head: Duration,
        idle: Duration,
        write: Duration,
        drain: Duration,
        grace: Duration,
    ) -> Self {
        let shortest = head.min(idle).min(write).min(grace);
        Self {
            head,
            idle,
            write,
            drain,
            grace,
            tick: (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
        }
    }
}

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// A request head did not arrive within the header read timeout.
    HeadTimeout,
    /// A response made no write progress within the write progress timeout.
    WriteStalled,
    /// Nothing in flight for the idle timeout (a graceful close).
    Idle,
    /// Draining, nothing in flight (a graceful close).
    Drained,
    /// A graceful close took longer than its grace.
    CloseTimeout,
    /// The drain deadline passed.
    DrainDeadline,
}

/// What the watchdog tells a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Shut down gracefully; cut after the grace.
    Close(Reason),
    /// Close now.
    Cut(Reason),
}

/// One connection as the watchdog sees it: its tracker, and when the
/// watchdog first saw each phase begin.
pub(super) struct Watch {
    tracker: Arc<Tracker>,
    peer: SocketAddr,
    accepted: Instant,
    /// `Tracker::requests` when last looked at.
    requests: u64,
    head_at: Option<Instant>,
    idle_at: Option<Instant>,
    /// The output progress count seen stalled, and since when.
    stall: Option<(u64, Instant)>,
    close_at: Option<Instant>,
    drain_at: Option<Instant>,
    /// A cut was ordered: nothing more to decide.
    cut: bool,
}

impl Watch {
    pub(super) fn new(tracker: Arc<Tracker>, peer: SocketAddr, accepted: Instant) -> Self {
        Self {
            tracker,
            peer,
            accepted,
            requests: 0,
            head_at: None,
            idle_at: None,
            stall: None,
            close_at: None,
            drain_at: None,
            cut: false,
        }
    }

    /// What to tell the connection at `now`, if anything.
    pub(super) fn check(
        &mut self,
        now: Instant,
        limits: &Limits,
        draining: bool,
    ) -> Option<Action> {
        let tracker = &*self.tracker;
        if self.cut || tracker.upgraded.load(Ordering::Acquire) {
            return None;
        }
        let overdue =
            |since: Instant, timeout: Duration| now.saturating_duration_since(since) >= timeout;

        // Output: a blocked write, or a frame hyper has not taken.
        if tracker.write_blocked.load(Ordering::Acquire)
            || tracker.bodies_waiting.load(Ordering::Acquire) > 0
        {
            let progress = tracker.progress.load(Ordering::Acquire);
            match self.stall {
                Some((seen, since)) if seen == progress => {
                    if overdue(since, limits.write) {
                        return Some(self.cut(Reason::WriteStalled));
                    }
                }
                _ => self.stall = Some((progress, now)),
            }
        } else {
            self.stall = None;
        }

        // Requests: a head being awaited, or idle.
        let requests = tracker.requests.load(Ordering::Acquire);
        if requests != self.requests {
            self.requests = requests;
            self.head_at = None;
            self.idle_at = None;
        }
        let idle = tracker.in_flight.load(Ordering::Acquire) == 0;
        if !idle {
            self.head_at = None;
            self.idle_at = None;
        } else if requests == 0 || tracker.head_begun.load(Ordering::Acquire) {
            let first = if requests == 0 { self.accepted } else { now };
            if overdue(*self.head_at.get_or_insert(first), limits.head) {
                return Some(self.cut(Reason::HeadTimeout));
            }
        } else if overdue(*self.idle_at.get_or_insert(now), limits.idle) && self.close_at.is_none()
        {
            self.close_at = Some(now);
            return Some(Action::Close(Reason::Idle));
        }

        if draining {
            if overdue(*self.drain_at.get_or_insert(now), limits.drain) {
                return Some(self.cut(Reason::DrainDeadline));
            }
            if idle && self.close_at.is_none() {
                self.close_at = Some(now);
                return Some(Action::Close(Reason::Drained));
            }
        }
        if self.close_at.is_some_and(|at| overdue(at, limits.grace)) {
            return Some(self.cut(Reason::CloseTimeout));
        }
        None
    }

    fn cut(&mut self, reason: Reason) -> Action {
        self.cut = true;
        Action::Cut(reason)
    }

    /// Logs `action` and tells the connection.
    fn act(tracker: &Tracker, peer: SocketAddr, action: Action) {
        match action {
            Action::Cut(Reason::HeadTimeout) => {
                tracing::info!(
                    peer = %peer,
                    "connection closed: request head not received within the header read timeout"
                );
            }
            Action::Cut(Reason::WriteStalled) => {
                tracing::info!(
                    peer = %peer,
                    "connection cut: response made no write progress within the write progress timeout"
                );
            }
            Action::Close(Reason::Idle) => {
                tracing::debug!(peer = %peer, "closing an idle connection");
            }
            Action::Close(_) => {
                tracing::debug!(peer = %peer, "draining: closing a connection with nothing in flight");
            }
            Action::Cut(_) => {
                tracing::debug!(peer = %peer, "connection cut: it did not close in time");
            }
        }
        tracker.command(match action {
            Action::Close(_) => Command::Close,
            Action::Cut(_) => Command::Cut,
        });
    }
}

/// The open connections.
#[derive(Default)]
pub(super) struct Registry {
    connections: Mutex<HashMap<u64, Watch>>,
    /// The last connection left.
    emptied: Notify,
    /// The watchdog thread, to wake when it should look now.
    watchdog: OnceLock<Thread>,
    draining: AtomicBool,
    /// The server is done with the registry: the watchdog ends once the
    /// last connection has.
    finished: AtomicBool,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Watch>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn insert(&self, id: u64, watch: Watch) {
        self.lock().insert(id, watch);
    }

    fn remove(&self, id: u64) {
        let empty = {
            let mut connections = self.lock();
            connections.remove(&id);
            connections.is_empty()
        };
        if empty {
            self.emptied.notify_waiters();
        }
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Every connection finishes what is in flight and closes; the watchdog
    /// cuts what is idle after its grace and everything at the drain deadline.
    pub(super) fn drain(&self) {
        if !self.draining.swap(true, Ordering::AcqRel) {
            for watch in self.lock().values() {
                watch.tracker.command(Command::Close);
            }
            self.look_now();
        }
    }

    fn look_now(&self) {
        if let Some(thread) = self.watchdog.get() {
            thread.unpark();
        }
    }

    /// Every connection closes now.
    pub(super) fn cut(&self) {
        for watch in self.lock().values_mut() {
            watch.cut = true;
            watch.tracker.command(Command::Cut);
        }
    }

    /// The server is done: drain, and let the watchdog end with the last
    /// connection.
    pub(super) fn finish(&self) {
        self.drain();
        self.finished.store(true, Ordering::Release);
        self.look_now();
    }

    pub(super) async fn wait_empty(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            emptied.as_mut().enable();
            if self.len() == 0 {
                return;
            }
            emptied.await;
        }
    }

    /// Looks at every connection once; false when the watchdog may end.
    pub(super) fn look_at_all(&self, now: Instant, limits: &Limits) -> bool {
        let draining = self.draining.load(Ordering::Acquire);
        // Decide under the lock, log and act after it: accepting and closing
        // connections never wait for a log line.
        let mut actions = Vec::new();
        let more = {
            let mut connections = self.lock();
            for watch in connections.values_mut() {
                if let Some(action) = watch.check(now, limits, draining) {
                    actions.push((Arc::clone(&watch.tracker), watch.peer, action));
                }
            }
            !(connections.is_empty() && self.finished.load(Ordering::Acquire))
        };
        for (tracker, peer, action) in actions {
            Watch::act(&tracker, peer, action);
        }
        more
    }
}

/// Starts the watchdog thread of one server. It ends once the server is
/// done with the registry and the last connection has ended (or nothing but
/// the watchdog holds the registry any more).
pub(super) fn start(registry: &Arc<Registry>, limits: Limits) -> io::Result<()> {
    let watched = Arc::clone(registry);
    let handle = std::thread::Builder::new()
        .name("palisade-watchdog".to_owned())
        .spawn(move || {
            loop {
                std::thread::park_timeout(limits.tick);
                let more = watched.look_at_all(Instant::now(), &limits);
                if !more || Arc::strong_count(&watched) == 1 {
                    return;
                }
            }
        })?;
    // Set once, right after the spawn: a drain before this only waits a tick.
    let _ = registry.watchdog.set(handle.thread().clone());
    Ok(())
}

/// A connection's place in the [`Registry`], left when its task ends.
pub(super) struct Registered {
    pub(super) registry: Arc<Registry>,
    pub(super) id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}
